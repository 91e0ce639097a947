"""`memory://`: an in-process broker for the embedded mode; one instance is shared by all threads of a run."""
from __future__ import annotations

import collections
import queue as _queue
import threading
import time

from broker.base import Broker, Delivery
from broker.errors import BrokerClosed, QueueNotDeclared

# a dead-letter queue nobody reads must not grow without bound: past this the oldest letters go
DEAD_LETTER_LIMIT = 1000


class MemoryBroker(Broker):
    """Thread-safe in-process queues; a message lives in exactly one queue at a time.

    A waiting reader leaves a doorbell on each queue it waits for; a publish rings the bells of its queue,
    so one thread can wait on several queues at once (get_any) without polling.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._queues: dict[str, collections.deque] = {}
        self._dead_letter: dict[str, str] = {}
        self._bells: dict[str, list[_queue.SimpleQueue]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _queue(self, name: str) -> collections.deque:
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
                self._queues.setdefault(name, collections.deque())
            if dead_letter:
                self._dead_letter[queue] = dead_letter

    def _put(self, queue: str, delivery: Delivery, limit: int | None = None) -> None:
        with self._lock:
            q = self._queue(queue)
            q.append(delivery)
            while limit is not None and len(q) > limit:
                q.popleft()
            for bell in self._bells.get(queue, ()):
                bell.put(None)

    def publish(self, queue: str, body: bytes) -> None:
        """Append `body` to `queue`."""
        self._put(queue, Delivery(queue, bytes(body)))

    def get(self, queue: str, timeout: float | None = None) -> Delivery | None:
        """Take the next message of `queue`, waiting up to `timeout` seconds."""
        return self.get_any((queue,), timeout)

    def get_any(self, queues, timeout: float | None = None) -> Delivery | None:
        """Take the next message of any of `queues` (the first non-empty in their order)."""
        queues = tuple(queues)
        deadline = None if timeout is None else time.monotonic() + timeout
        bell = None
        try:
            while True:
                with self._lock:
                    for name in queues:
                        q = self._queue(name)
                        if q:
                            return q.popleft()
                    if bell is None:
                        bell = _queue.SimpleQueue()
                        for name in queues:
                            self._bells.setdefault(name, []).append(bell)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                try:
                    bell.get(timeout=left)
                except _queue.Empty:
                    pass
        finally:
            if bell is not None:
                with self._lock:
                    for name in queues:
                        self._bells[name].remove(bell)

    def ack(self, delivery: Delivery) -> None:
        """Nothing to confirm in memory: a taken message is already gone."""

    def reject(self, delivery: Delivery, reason: str) -> None:
        """Move `delivery` to its queue's dead-letter queue with `reason`."""
        target = self._dead_letter.get(delivery.queue)
        if target is not None:
            self._put(target, Delivery(target, delivery.body, reason=reason,
                                       headers={"x-first-death-queue": delivery.queue}), DEAD_LETTER_LIMIT)

    def depth(self, queue: str) -> int:
        """Number of waiting messages."""
        with self._lock:
            return len(self._queue(queue))

    def purge(self, queue: str) -> int:
        """Drop every waiting message."""
        with self._lock:
            q = self._queue(queue)
            count = len(q)
            q.clear()
            return count

    def delete(self, queue: str) -> None:
        """Forget `queue`."""
        with self._lock:
            self._queues.pop(queue, None)
            self._dead_letter.pop(queue, None)

    def close(self) -> None:
        """Mark closed; later calls raise BrokerClosed, and waiting readers wake to see it."""
        with self._lock:
            self._closed = True
            for bells in self._bells.values():
                for bell in bells:
                    bell.put(None)
