"""`memory://`: an in-process broker for the embedded mode; one instance is shared by all threads of a run."""
from __future__ import annotations

import queue as _queue
import threading
import time

from broker.base import Broker, Delivery, HandedDelivery, dead_letter_body, first_waiting
from broker.errors import BrokerClosed, QueueNotDeclared

# a dead-letter queue nobody reads must not grow without bound: past this the oldest letters go
DEAD_LETTER_LIMIT = 1000


class MemoryBroker(Broker):
    """Thread-safe in-process queues; a message lives in exactly one queue at a time.

    A reader of one queue waits on it directly. A reader of several (get_any) leaves a doorbell on each,
    which a publish to that queue rings, so it waits without polling.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._queues: dict[str, _queue.SimpleQueue] = {}
        self._dead_letter: dict[str, str] = {}
        self._bells: dict[str, list[_queue.SimpleQueue]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _queue(self, name: str) -> _queue.SimpleQueue:
        if self._closed:
            raise BrokerClosed(self.url)
        try:
            return self._queues[name]
        except KeyError:
            raise QueueNotDeclared(name) from None

    def declare(self, queue: str, *, dead_letter: str | None = None) -> None:
        """Create `queue` (and `dead_letter`) if missing."""
        with self._lock:
            for name in filter(None, (queue, dead_letter)):
                self._queues.setdefault(name, _queue.SimpleQueue())
            if dead_letter:
                self._dead_letter[queue] = dead_letter

    def _put(self, queue: str, delivery: Delivery) -> None:
        self._queue(queue).put(delivery)
        for bell in self._bells.get(queue, ()):  # after the put: a reader that missed it has its bell here
            bell.put(None)

    def publish(self, queue: str, body: bytes) -> None:
        """Append `body` to `queue`."""
        self._put(queue, Delivery(queue, bytes(body)))

    def publish_object(self, queues, message: object, encode) -> None:
        """Hand `message` itself to every queue of `queues`: its readers are threads of this process."""
        for queue in queues:
            self._put(queue, HandedDelivery(queue, message, encode))

    def get(self, queue: str, timeout: float | None = None) -> Delivery | None:
        """Take the next message of `queue`, waiting up to `timeout` seconds."""
        q = self._queue(queue)
        if timeout == 0:
            return first_waiting((q,))
        try:
            return q.get(timeout=timeout)
        except _queue.Empty:
            return None

    def get_any(self, queues, timeout: float | None = None) -> Delivery | None:
        """Take the next message of any of `queues` (the first non-empty in their order)."""
        found = [self._queue(name) for name in queues]
        if timeout == 0:  # a look, not a wait: no doorbell needed
            return first_waiting(found)
        deadline = None if timeout is None else time.monotonic() + timeout
        bell: _queue.SimpleQueue[None] = _queue.SimpleQueue()
        with self._lock:
            for name in queues:
                self._bells.setdefault(name, []).append(bell)
        try:
            while True:
                item = first_waiting(found)  # after the bell is up: a later put rings it
                if item is not None:
                    return item
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                try:
                    bell.get(timeout=left)
                except _queue.Empty:
                    pass
                if self._closed:
                    raise BrokerClosed(self.url)
        finally:
            with self._lock:
                for name in queues:
                    self._bells[name].remove(bell)

    def ack(self, delivery: Delivery) -> None:
        """Nothing to confirm in memory: a taken message is already gone."""

    def reject(self, delivery: Delivery, reason: str) -> None:
        """Move `delivery` to its queue's dead-letter queue with `reason`."""
        target = self._dead_letter.get(delivery.queue)
        if target is not None:
            body, cut = dead_letter_body(delivery.body)  # an oversized body is not kept whole
            self._put(target, Delivery(target, body, reason=reason,
                                       headers={"x-first-death-queue": delivery.queue, **cut}))
            q = self._queue(target)
            while q.qsize() > DEAD_LETTER_LIMIT:
                try:
                    q.get_nowait()
                except _queue.Empty:
                    break

    def depth(self, queue: str) -> int:
        """Number of waiting messages."""
        return self._queue(queue).qsize()

    def purge(self, queue: str) -> int:
        """Drop every waiting message."""
        q, count = self._queue(queue), 0
        while True:
            try:
                q.get_nowait()
            except _queue.Empty:
                return count
            count += 1

    def delete(self, queue: str) -> None:
        """Forget `queue`."""
        with self._lock:
            self._queues.pop(queue, None)
            self._dead_letter.pop(queue, None)

    def close(self) -> None:
        """Mark closed; later calls raise BrokerClosed, and readers of several queues wake to see it."""
        self._closed = True
        with self._lock:
            for bells in self._bells.values():
                for bell in bells:
                    bell.put(None)
