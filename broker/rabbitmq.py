"""`amqp://` and `amqps://`: RabbitMQ through pika, the connection serviced by its callers and an I/O thread.

pika's connections are not thread-safe and only answer heartbeats while something calls into them. Whoever
holds the connection lock may use it: a caller publishes, acks and reads deliveries itself, on its own
thread (no hand-off, no thread switch per message), and a background I/O thread services the connection
when no caller does (heartbeats, queued operations) and alone reconnects, with backoff, restoring the
declared queues and consumers; deliveries taken before a reconnect are never acked (RabbitMQ delivers
them again). A caller that finds the connection busy queues its operation for the holder.
"""
from __future__ import annotations

import collections
import logging
import queue as _queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions as pex

from broker.acks import AckBatch
from broker.base import Broker, Delivery, dead_letter_body
from broker.errors import BrokerClosed, BrokerError, BrokerUnavailable, QueueNotDeclared
from broker.schemes import redact_url

log = logging.getLogger(__name__)

REASON_HEADER = "x-cuttlefish-reason"
FIRST_QUEUE_HEADER = "x-first-death-queue"
DEAD_LETTER_LIMIT = 1000  # as the memory broker: an unread dead-letter queue keeps only its newest letters
DEAD_LETTER_BYTES = 64 << 20  # and at most this many bytes of them
QUEUE_BYTES = 256 << 20  # a neuron's queue holds at most this; the oldest messages are dead-lettered beyond
_TRANSIENT = pika.BasicProperties(delivery_mode=1)
# connection-level failures after which the I/O thread reconnects
_CONNECTION_ERRORS = (pex.AMQPConnectionError, pex.ConnectionClosed, pex.StreamLostError, OSError)
_STOP = object()
# pika reads its socket 4 KiB per recv(); a 128 KB body then took ~3x as long to arrive (bench/pingpong.py)
READ_BYTES = 1 << 20
IO_TICK = 0.2  # seconds between the I/O thread's services of a connection no caller is using
PUMP_SLICE = 0.05  # longest a waiting caller keeps the connection before letting others at it


def _exchanges(dead_letter: str) -> tuple[str, str]:
    """The run's exchange and dead-letter exchange, named after its dead-letter queue `<prefix>.<name>`."""
    prefix = dead_letter.rsplit(".", 1)[0]
    return prefix, f"{prefix}.dlx"


class RabbitBroker(Broker):
    """A RabbitMQ connection: per-run direct exchange, durable queues, dead-lettering with reasons."""

    def __init__(self, url: str, *, prefetch: int | None = None, heartbeat: int = 30,
                 connect_timeout: float = 30.0, reconnect_timeout: float = 60.0, op_timeout: float = 60.0,
                 read_bytes: int = READ_BYTES) -> None:
        self.url = url
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        try:
            self.prefetch = int(prefetch if prefetch is not None else query.pop("prefetch", 64))
            query.setdefault("heartbeat", str(heartbeat))
            query.setdefault("connection_attempts", "1")
            # a broker under a memory or disk alarm blocks publishers; give up and reconnect instead of hanging
            query.setdefault("blocked_connection_timeout", "300")
            self._params = pika.URLParameters(urlunsplit(parts._replace(query=urlencode(query))))
        except (ValueError, TypeError) as exc:
            raise BrokerError(f"bad broker URL {redact_url(url)!r}: {exc}") from None
        if self.prefetch < 1:
            raise BrokerError(f"bad broker URL {redact_url(url)!r}: prefetch must be at least 1")
        self._connect_timeout, self._reconnect_timeout, self._op_timeout = connect_timeout, reconnect_timeout, op_timeout
        self._read_bytes = read_bytes
        self._ops: collections.deque = collections.deque()
        self._io = threading.Lock()  # the holder may use the connection: a caller or the I/O thread
        self._tick = threading.Event()  # wakes the I/O thread for queued operations
        self._broken = False  # a caller saw the connection fail; the I/O thread reconnects
        self._stopped = False  # the I/O thread has ended
        self._serviced = 0.0  # when a holder last read the connection
        self._acks = AckBatch(max(1, min(32, self.prefetch // 2)), IO_TICK)
        self._inbox: dict[str, _queue.SimpleQueue] = {}
        self._declared: dict[str, str | None] = {}
        self._exchange: dict[str, str] = {}
        self._consuming: set[str] = set()
        # pika's objects, owned by the I/O thread (pika ships no type hints)
        self._conn: Any = None
        self._channel: Any = None
        self._decl_channel: Any = None
        self._epoch = 0
        self._alarm: str | None = None
        self._error: BrokerError | None = None
        self._closed = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cuttlefish-amqp-io", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    # -- the I/O thread -----------------------------------------------------------------------------
    def _open(self, deadline: float) -> None:
        delay, last = 0.2, None
        while not self._closed:
            try:
                self._conn = pika.BlockingConnection(self._params)
                _read_in_large_chunks(self._conn, self._read_bytes)
                self._conn.add_on_connection_blocked_callback(self._on_blocked)
                self._conn.add_on_connection_unblocked_callback(self._on_unblocked)
                self._channel = self._conn.channel()
                self._restore()
                return
            except _CONNECTION_ERRORS + (pex.AMQPChannelError,) as exc:
                last = exc
                self._drop_connection()
            if time.monotonic() + delay > deadline:
                raise BrokerUnavailable(self.url, f"{type(last).__name__}: {last}" if last else "")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_blocked(self, _conn, frame) -> None:
        reason = getattr(getattr(frame, "method", None), "reason", "") or "a resource alarm"
        self._alarm = f"a resource alarm ({reason}): it blocks publishing until memory or disk is freed"
        log.warning("the broker at %s raised %s", redact_url(self.url), self._alarm)

    def _on_unblocked(self, _conn, _frame) -> None:
        self._alarm = None
        log.warning("the broker at %s unblocked publishing", redact_url(self.url))

    @property
    def reconnects(self) -> int:
        """How often the connection (or its channel) was lost and restored."""
        return max(0, self._epoch - 1)

    @property
    def alarm(self) -> str | None:
        """The broker's memory or disk alarm blocking this connection, or None."""
        return self._alarm

    def _restore(self) -> None:
        """Declare again what this broker declared, consume again what it consumed (after a reconnect)."""
        self._epoch += 1
        self._acks.reset()
        self._channel.basic_qos(prefetch_count=self.prefetch)
        for queue, dead_letter in self._declared.items():
            self._declare_on(queue, dead_letter)
        for queue in self._consuming:
            self._consume_on(queue)

    def _drop_connection(self) -> None:
        conn, self._conn, self._channel, self._decl_channel = self._conn, None, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except _CONNECTION_ERRORS + (pex.AMQPError,):
                pass

    def _loop(self) -> None:
        with self._io:
            try:
                self._open(time.monotonic() + self._connect_timeout)
            except BrokerError as exc:
                self._error = exc
        self._ready.set()
        try:
            while not self._closed and self._error is None:
                self._tick.wait(IO_TICK)
                self._tick.clear()
                if not (self._ops or self._broken) and time.monotonic() - self._serviced < IO_TICK:
                    continue  # callers are reading the connection themselves
                if not self._io.acquire(timeout=IO_TICK):
                    continue  # a caller is servicing the connection
                try:
                    self._service(0)
                finally:
                    self._io.release()
        except Exception as exc:  # noqa: BLE001 - whatever ends this thread must reach the callers
            log.exception("the broker I/O thread failed")
            self._error = BrokerUnavailable(self.url, f"I/O thread failed: {type(exc).__name__}: {exc}")
        finally:
            self._stopped = True
            locked = self._io.acquire(timeout=10)
            try:
                self._drop_connection()
            finally:
                if locked:
                    self._io.release()
            self._fail_pending(self._error or BrokerClosed(redact_url(self.url)))

    def _service(self, time_limit: float) -> None:
        """Run queued operations and dispatch deliveries for up to `time_limit` s; the caller holds the lock."""
        try:
            if self._broken or self._conn is None:
                raise pex.StreamLostError("the connection failed in another thread")
            self._run_ops()
            # after the queued operations (a queued reject's tag must not be covered by a multiple ack
            # first) and inside this handler (a dead channel must reconnect, not escape as a pika error)
            self._acks.flush_due(self._flush_acks)
            self._conn.process_data_events(time_limit=time_limit)
            self._serviced = time.monotonic()
            self._run_ops()
        except _CONNECTION_ERRORS + (pex.ChannelWrongStateError, pex.ChannelClosed) as exc:
            if self._closed:
                return
            if threading.current_thread() is not self._thread:
                self._broken = True  # reconnecting is the I/O thread's job
                self._tick.set()
                return
            log.warning("lost the broker connection to %s (%s: %s); reconnecting",
                        redact_url(self.url), type(exc).__name__, exc)
            self._drop_connection()
            self._broken = False
            try:
                self._open(time.monotonic() + self._reconnect_timeout)
            except BrokerError as err:
                self._error = err

    def _fail_pending(self, error: BrokerError) -> None:
        while self._ops:
            _, future = self._ops.popleft()
            if future is not None and not future.done():
                future.set_exception(error)
        for inbox in list(self._inbox.values()):
            inbox.put(_STOP)

    def _run_ops(self) -> None:
        while self._ops and self._channel is not None:
            if not self._channel.is_open:
                # closed by the broker on its own (say, an unknown delivery tag): a fresh channel, and
                # the consumers again; their unacked deliveries come back
                self._channel = self._conn.channel()
                self._restore()
            fn, future = self._ops[0]
            try:
                result = fn()
            except pex.ChannelClosedByBroker as exc:
                # the broker refused this operation (a missing queue, mismatched arguments); the others go on
                self._ops.popleft()
                if future is not None:
                    future.set_exception(_translate(exc))
                else:
                    log.warning("the broker refused an operation: %s", exc)
                self._channel = self._conn.channel()
                self._restore()
                continue
            except _CONNECTION_ERRORS + (pex.ChannelWrongStateError,):
                raise  # the operation stays queued and runs again after the reconnect
            except Exception as exc:  # noqa: BLE001 - a bad operation must fail alone, not kill the I/O thread
                self._ops.popleft()
                if future is not None:
                    future.set_exception(BrokerError(f"{type(exc).__name__}: {exc}"))
                else:
                    log.error("a broker operation failed: %s: %s", type(exc).__name__, exc)
                continue
            self._ops.popleft()
            if future is not None:
                future.set_result(result)

    def _submit(self, fn, wait: bool):
        if self._closed:
            raise BrokerClosed(redact_url(self.url))
        if self._error is not None:
            raise self._error
        if self._stopped:
            raise BrokerUnavailable(self.url, "the connection's I/O thread has stopped")
        future: Future | None = Future() if wait else None
        self._ops.append((fn, future))
        if self._io.acquire(blocking=False):
            try:  # nobody else is using the connection: run it here, now
                self._service_ops()
            finally:
                self._io.release()
        else:
            self._wake()
        if future is None:
            return None
        try:
            return future.result(timeout=self._op_timeout)
        except FuturesTimeout:
            raise BrokerUnavailable(self.url, f"no answer within {self._op_timeout:.0f} s") from None

    def _service_ops(self) -> None:
        """Run the queued operations on the caller's thread; it holds the lock."""
        if self._broken or self._conn is None:
            self._tick.set()  # reconnecting: the I/O thread runs them afterwards
            return
        try:
            self._run_ops()
        except _CONNECTION_ERRORS + (pex.ChannelWrongStateError, pex.ChannelClosed):
            if not self._closed:
                self._broken = True
                self._tick.set()

    def _wake(self) -> None:
        """Have whoever holds the connection run the queued operations: a waiting caller, or the I/O thread."""
        self._tick.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)  # ends a caller's wait for deliveries at once
            except (pex.AMQPError, RuntimeError, OSError):
                pass  # the I/O thread is reconnecting and will run the operation afterwards

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
            item = _first(inboxes)
            if item is None:
                item = self._wait_for(inboxes, deadline)
                if item is None:
                    return None
            if item is _STOP:
                for inbox in inboxes:
                    inbox.put(_STOP)
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

    def _wait_for(self, inboxes: list, deadline: float | None):
        """The next item of `inboxes`, reading the connection meanwhile when nobody else is; None at `deadline`."""
        while True:
            left = PUMP_SLICE if deadline is None else min(PUMP_SLICE, max(0.0, deadline - time.monotonic()))
            # while the connection is broken the I/O thread needs the lock to reconnect: wait on the inboxes
            if not self._broken and self._io.acquire(blocking=False):
                try:
                    self._service(left)
                finally:
                    self._io.release()
                item = _first(inboxes)
                if item is not None:
                    return item
            else:  # another thread is reading: it puts what comes for these queues into their inboxes
                try:
                    return inboxes[0].get(timeout=min(left, 0.002)) if left > 0 else inboxes[0].get_nowait()
                except _queue.Empty:
                    item = _first(inboxes)
                    if item is not None:
                        return item
            if self._error is not None or self._stopped:
                raise self._error or BrokerClosed(redact_url(self.url))
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _settle(self, delivery: Delivery, fn) -> None:
        epoch, tag = cast("tuple[int, int]", delivery.tag)  # (connection epoch, delivery tag), set on arrival

        def op() -> None:
            # forgotten only when the settlement is sent: until then no multiple ack may cover the tag
            self._acks.forget((epoch, tag))
            if epoch == self._epoch:
                fn(tag)
        self._submit(op, wait=False)

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
            if item is _STOP:
                inbox.put(_STOP)
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


def _translate(exc: pex.ChannelClosedByBroker) -> BrokerError:
    if exc.reply_code == 404:
        return QueueNotDeclared(exc.reply_text)
    return BrokerError(f"the broker refused the operation: {exc.reply_code} {exc.reply_text}")


def _first(inboxes: list):
    """The first item waiting in any of `inboxes`, or None."""
    for inbox in inboxes:
        try:
            return inbox.get_nowait()
        except _queue.Empty:
            pass
    return None


def _read_in_large_chunks(conn: pika.BlockingConnection, size: int) -> None:
    """Have this connection's transport read up to `size` bytes per recv() (pika's default is 4 KiB)."""
    transport = getattr(getattr(conn, "_impl", None), "_transport", None)
    if transport is not None and hasattr(transport, "_MAX_RECV_BYTES"):
        transport._MAX_RECV_BYTES = size  # an instance attribute: pika's class and other connections keep theirs
