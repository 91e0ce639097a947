"""RabbitMQ as a Broker: a per-run direct exchange, durable queues and dead-lettering with reasons.

The connection and its I/O thread live in connection.py; this module holds what is declared and
consumed on it (and restored after a reconnect), and the Broker operations. Deliveries taken before a
reconnect are never acked: RabbitMQ delivers them again.
"""
from __future__ import annotations

import logging
import queue as _queue
import time
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions as pex

from broker.base import Broker, Delivery, dead_letter_body, first_waiting
from broker.errors import BrokerClosed, BrokerError, QueueNotDeclared
from broker.rabbitmq.acks import AckBatch
from broker.rabbitmq.connection import IO_TICK, STOP, ServicedConnection
from broker.rabbitmq.transport import READ_BYTES
from broker.schemes import redact_url

log = logging.getLogger(__name__)

REASON_HEADER = "x-cuttlefish-reason"
FIRST_QUEUE_HEADER = "x-first-death-queue"
DEAD_LETTER_LIMIT = 1000  # as the memory broker: an unread dead-letter queue keeps only its newest letters
DEAD_LETTER_BYTES = 64 << 20  # and at most this many bytes of them
QUEUE_BYTES = 256 << 20  # a neuron's queue holds at most this; the oldest messages are dead-lettered beyond
_TRANSIENT = pika.BasicProperties(delivery_mode=1)


def _exchanges(dead_letter: str) -> tuple[str, str]:
    """The run's exchange and dead-letter exchange, named after its dead-letter queue `<prefix>.<name>`."""
    prefix = dead_letter.rsplit(".", 1)[0]
    return prefix, f"{prefix}.dlx"


class RabbitBroker(ServicedConnection, Broker):
    """A RabbitMQ connection: per-run direct exchange, durable queues, dead-lettering with reasons."""

    def __init__(self, url: str, *, prefetch: int | None = None, heartbeat: int = 30,
                 connect_timeout: float = 30.0, reconnect_timeout: float = 60.0, op_timeout: float = 60.0,
                 read_bytes: int = READ_BYTES) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        try:
            self.prefetch = int(prefetch if prefetch is not None else query.pop("prefetch", 64))
            query.setdefault("heartbeat", str(heartbeat))
            query.setdefault("connection_attempts", "1")
            # a broker under a memory or disk alarm blocks publishers; give up and reconnect instead of hanging
            query.setdefault("blocked_connection_timeout", "300")
            params = pika.URLParameters(urlunsplit(parts._replace(query=urlencode(query))))
        except (ValueError, TypeError) as exc:
            raise BrokerError(f"bad broker URL {redact_url(url)!r}: {exc}") from None
        if self.prefetch < 1:
            raise BrokerError(f"bad broker URL {redact_url(url)!r}: prefetch must be at least 1")
        self._acks = AckBatch(max(1, min(32, self.prefetch // 2)), IO_TICK)
        self._declared: dict[str, str | None] = {}
        self._exchange: dict[str, str] = {}
        self._consuming: set[str] = set()
        super().__init__(url, params, connect_timeout=connect_timeout, reconnect_timeout=reconnect_timeout,
                         op_timeout=op_timeout, read_bytes=read_bytes)

    def _restore(self) -> None:
        """Declare again what this broker declared, consume again what it consumed (after a reconnect)."""
        self._epoch += 1
        self._acks.reset()
        self._channel.basic_qos(prefetch_count=self.prefetch)
        for queue, dead_letter in self._declared.items():
            self._declare_on(queue, dead_letter)
        for queue in self._consuming:
            self._consume_on(queue)


    # -- operations run on the I/O thread -------------------------------------------------------------
    def _declare_on(self, queue: str, dead_letter: str | None) -> None:
        ch = self._channel
        args = {}
        if dead_letter:
            exchange, dlx = _exchanges(dead_letter)
            ch.exchange_declare(exchange, "direct", durable=True)
            ch.exchange_declare(dlx, "direct", durable=True)
            self._declare_queue(dead_letter, {"x-max-length": DEAD_LETTER_LIMIT, "x-max-length-bytes": DEAD_LETTER_BYTES})
            ch.queue_bind(dead_letter, dlx, routing_key=dead_letter)
            args = {"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": dead_letter,
                    "x-max-length-bytes": QUEUE_BYTES}
        self._declare_queue(queue, args)
        if dead_letter:
            ch.queue_bind(queue, exchange, routing_key=queue)
            self._exchange[queue] = exchange

    def _declare_queue(self, queue: str, args: dict) -> None:
        # An existing queue is taken as it is: declaring it with other arguments (say, a dead-letter queue
        # declared plainly by a reader) closes the channel with 406, so declarations use a channel of their
        # own, reopened after such a refusal, and the queue's existence is then checked passively.
        if self._decl_channel is None or not self._decl_channel.is_open:
            self._decl_channel = self._conn.channel()
        try:
            self._decl_channel.queue_declare(queue, durable=True, arguments=args)
        except pex.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            self._decl_channel = self._conn.channel()
            self._decl_channel.queue_declare(queue, passive=True)

    def _consume_on(self, queue: str) -> None:
        epoch, inbox = self._epoch, self._inbox[queue]

        def on_message(_ch, method, props, body) -> None:
            headers = props.headers or {}
            reason = headers.get(REASON_HEADER, b"")
            inbox.put(Delivery(queue, body, tag=(epoch, method.delivery_tag), headers=headers,
                               reason=reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)))

        self._channel.basic_consume(queue, on_message)

    # -- the Broker interface -------------------------------------------------------------------------
    def declare(self, queue: str, *, dead_letter: str | None = None) -> None:
        """Create the durable `queue`, bound to its run's exchange, dead-lettering to `dead_letter`."""
        def op() -> None:
            self._declare_on(queue, dead_letter)
            self._declared.setdefault(queue, dead_letter)
        self._submit(op, wait=True)

    def publish(self, queue: str, body: bytes) -> None:
        """Send `body` to `queue` through its run's exchange; returns before it is on the wire."""
        self.publish_many((queue,), body)

    def publish_many(self, queues, body: bytes) -> None:
        """Send the same `body` to every queue of `queues`."""
        body = bytes(body)
        queues = list(queues)
        for queue in queues:
            if queue not in self._declared:
                raise QueueNotDeclared(queue)

        def op() -> None:  # one hand-off to the I/O thread for the whole fan-out
            for queue in queues:
                self._channel.basic_publish(self._exchange.get(queue, ""), queue, body, _TRANSIENT)
        self._submit(op, wait=False)

    def get(self, queue: str, timeout: float | None = None) -> Delivery | None:
        """Take the next message of `queue` (consuming it from now on), waiting up to `timeout` seconds."""
        return self.get_any((queue,), timeout)

    def get_any(self, queues, timeout: float | None = None) -> Delivery | None:
        """Take the next message of any of `queues` (consuming them from now on), the first non-empty first."""
        inboxes = [self._inbox_of(queue) for queue in queues]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            item = first_waiting(inboxes)
            if item is None:
                item = self._wait_for(inboxes, deadline)
                if item is None:
                    return None
            if item is STOP:
                for inbox in inboxes:
                    inbox.put(STOP)
                raise self._error or BrokerClosed(redact_url(self.url))
            if item.tag[0] == self._epoch:
                self._acks.take(item.tag)
                return item
            # taken before a reconnect: the broker delivers it again on the new connection

    def _inbox_of(self, queue: str) -> _queue.SimpleQueue:
        """The local inbox of `queue`, consuming it first if this broker does not yet."""
        inbox = self._inbox.get(queue)
        if inbox is not None:
            return inbox
        inbox = self._inbox[queue] = _queue.SimpleQueue()

        def op() -> None:
            if self._consuming:
                self._flush_acks()  # deliveries of two queues interleave: acks are sent one by one now
            self._consume_on(queue)
            self._consuming.add(queue)
        try:
            self._submit(op, wait=True)
        except BrokerError:
            self._inbox.pop(queue, None)
            raise
        return inbox

    def _settle(self, delivery: Delivery, fn) -> None:
        epoch, tag = cast("tuple[int, int]", delivery.tag)  # (connection epoch, delivery tag), set on arrival

        def op() -> None:
            # forgotten only when the settlement is sent: until then no multiple ack may cover the tag
            self._acks.forget((epoch, tag))
            if epoch == self._epoch:
                fn(tag)
        self._submit(op, wait=False)

    def _flush_due_acks(self) -> None:
        """Send the acks of a batch that is full or old enough (on the connection's holder)."""
        self._acks.flush_due(self._flush_acks)

    def _flush_acks(self) -> None:
        """Send the acks the batch holds (on the connection's holder)."""
        top, singles = self._acks.due(self._epoch)
        if top is not None:
            self._channel.basic_ack(top, multiple=True)
        for tag in singles:
            self._channel.basic_ack(tag)

    def ack(self, delivery: Delivery) -> None:
        """Confirm `delivery`; it is gone for good (acks of a single consumed queue are sent in batches)."""
        if len(self._consuming) == 1 and self._acks.size > 1:
            if self._acks.settle(cast("tuple[int, int]", delivery.tag)):
                self._submit(self._flush_acks, wait=False)
            return
        self._settle(delivery, lambda tag: self._channel.basic_ack(tag))

    def reject(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter `delivery` with `reason` in a header (or drop it if its queue has none)."""
        dead_letter = self._declared.get(delivery.queue)

        def settle(tag: int) -> None:
            if dead_letter:
                body, cut = dead_letter_body(delivery.body)  # an oversized body is not sent back whole
                headers = {REASON_HEADER: reason[:1000], FIRST_QUEUE_HEADER: delivery.queue, **cut}
                self._channel.basic_publish(_exchanges(dead_letter)[1], dead_letter, body,
                                            pika.BasicProperties(delivery_mode=1, headers=headers))
                self._channel.basic_ack(tag)
            else:
                self._channel.basic_reject(tag, requeue=False)  # the queue's own dead-letter exchange, if any
        self._settle(delivery, settle)

    def depth(self, queue: str) -> int:
        """Messages waiting in `queue` on the broker plus those fetched here and not yet taken."""
        count = self._submit(lambda: self._channel.queue_declare(queue, passive=True).method.message_count, wait=True)
        inbox = self._inbox.get(queue)
        return count + (inbox.qsize() if inbox is not None else 0)

    def purge(self, queue: str) -> int:
        """Drop every waiting message of `queue`, here and on the broker."""
        dropped = 0
        inbox = self._inbox.get(queue)
        while inbox is not None:
            try:
                item = inbox.get_nowait()
            except _queue.Empty:
                break
            if item is STOP:
                inbox.put(STOP)
                break
            self.ack(item)
            dropped += 1
        return dropped + self._submit(lambda: self._channel.queue_purge(queue).method.message_count, wait=True)

    def delete(self, queue: str) -> None:
        """Delete `queue` and its messages (missing is fine)."""
        def op() -> None:
            self._flush_acks()
            self._channel.queue_delete(queue)
            self._declared.pop(queue, None)
            self._exchange.pop(queue, None)
            self._consuming.discard(queue)
        self._submit(op, wait=True)
        self._inbox.pop(queue, None)

    def close(self) -> None:
        """Flush what is queued, close the connection and stop the I/O thread."""
        if self._closed:
            return
        if self._error is None and not self._stopped:
            try:
                self._submit(self._flush_acks, wait=True)  # everything published and acked before close() is sent
            except BrokerError:
                pass
        self._closed = True
        self._tick.set()
        self._thread.join(timeout=10)
