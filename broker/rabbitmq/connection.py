"""A pika connection serviced by its callers and a background I/O thread, which alone reconnects.

pika's connections are not thread-safe and only answer heartbeats while something calls into them. Whoever
holds the connection lock may use it: a caller publishes, acks and reads deliveries itself, on its own
thread (no hand-off, no thread switch per message), and the I/O thread services the connection when no
caller does (heartbeats, queued operations) and alone reconnects, with backoff, then has the broker restore
its queues and consumers (`_restore`). A caller that finds the connection busy queues its operation for
the holder.
"""
from __future__ import annotations

import abc
import collections
import logging
import queue as _queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

import pika
import pika.exceptions as pex

from broker.base import first_waiting
from broker.errors import BrokerClosed, BrokerError, BrokerUnavailable, QueueNotDeclared
from broker.rabbitmq import transport
from broker.schemes import redact_url

log = logging.getLogger(__name__)

# connection-level failures after which the I/O thread reconnects
CONNECTION_ERRORS = (pex.AMQPConnectionError, pex.ConnectionClosed, pex.StreamLostError, OSError)
STOP = object()  # put into every inbox when the connection is gone for good
IO_TICK = 0.2  # seconds between the I/O thread's services of a connection no caller is using
PUMP_SLICE = 0.05  # longest a waiting caller keeps the connection before letting others at it


class ServicedConnection(abc.ABC):
    """One pika connection and its I/O thread; the subclass declares what to restore after a reconnect."""

    def __init__(self, url: str, params: pika.URLParameters, *, connect_timeout: float,
                 reconnect_timeout: float, op_timeout: float, read_bytes: int) -> None:
        self.url = url
        self._params = params
        self._connect_timeout, self._reconnect_timeout, self._op_timeout = connect_timeout, reconnect_timeout, op_timeout
        self._read_bytes = read_bytes
        self._ops: collections.deque = collections.deque()
        self._io = threading.Lock()  # the holder may use the connection: a caller or the I/O thread
        self._tick = threading.Event()  # wakes the I/O thread for queued operations
        self._broken = False  # a caller saw the connection fail; the I/O thread reconnects
        self._stopped = False  # the I/O thread has ended
        self._serviced = 0.0  # when a holder last read the connection
        self._inbox: dict[str, _queue.SimpleQueue] = {}
        # pika's objects, owned by the connection's holder (pika ships no type hints)
        self._conn: Any = None
        self._channel: Any = None
        self._decl_channel: Any = None
        self._epoch = 0
        self.transport_tweaks: dict[str, bool] = {}  # which of transport.py's tweaks the connection took
        self._alarm: str | None = None
        self._error: BrokerError | None = None
        self._closed = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cuttlefish-amqp-io", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    @abc.abstractmethod
    def _restore(self) -> None:
        """Declare and consume again on a fresh channel (after a reconnect); bumps `_epoch`."""

    @abc.abstractmethod
    def _flush_due_acks(self) -> None:
        """Send the acks whose batch is due (on the connection's holder)."""

    # -- the I/O thread -----------------------------------------------------------------------------
    def _open(self, deadline: float) -> None:
        delay, last = 0.2, None
        while not self._closed:
            try:
                self._conn = pika.BlockingConnection(self._params)
                self.transport_tweaks = transport.tune(self._conn, self._read_bytes)
                self._conn.add_on_connection_blocked_callback(self._on_blocked)
                self._conn.add_on_connection_unblocked_callback(self._on_unblocked)
                self._channel = self._conn.channel()
                self._restore()
                return
            except CONNECTION_ERRORS + (pex.AMQPChannelError,) as exc:
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

    def _drop_connection(self) -> None:
        conn, self._conn, self._channel, self._decl_channel = self._conn, None, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except CONNECTION_ERRORS + (pex.AMQPError,):
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
            self._flush_due_acks()
            self._conn.process_data_events(time_limit=time_limit)
            self._serviced = time.monotonic()
            self._run_ops()
        except CONNECTION_ERRORS + (pex.ChannelWrongStateError, pex.ChannelClosed) as exc:
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
            inbox.put(STOP)

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
                    future.set_exception(translate(exc))
                else:
                    log.warning("the broker refused an operation: %s", exc)
                self._channel = self._conn.channel()
                self._restore()
                continue
            except CONNECTION_ERRORS + (pex.ChannelWrongStateError,):
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
        except CONNECTION_ERRORS + (pex.ChannelWrongStateError, pex.ChannelClosed):
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


    # -- callers ------------------------------------------------------------------------------------
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
                item = first_waiting(inboxes)
                if item is not None:
                    return item
            else:  # another thread is reading: it puts what comes for these queues into their inboxes
                try:
                    return inboxes[0].get(timeout=min(left, 0.002)) if left > 0 else inboxes[0].get_nowait()
                except _queue.Empty:
                    item = first_waiting(inboxes)
                    if item is not None:
                        return item
            if self._error is not None or self._stopped:
                raise self._error or BrokerClosed(redact_url(self.url))
            if deadline is not None and time.monotonic() >= deadline:
                return None


def translate(exc: pex.ChannelClosedByBroker) -> BrokerError:
    """The broker's refusal of one operation as this package's error."""
    if exc.reply_code == 404:
        return QueueNotDeclared(exc.reply_text)
    return BrokerError(f"the broker refused the operation: {exc.reply_code} {exc.reply_text}")

