"""The transport interface every broker backend implements: declare, publish, get, ack/reject, close."""
from __future__ import annotations

import queue as _queue
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

# a rejected body larger than this is dead-lettered as its first DEAD_LETTER_HEAD bytes only
DEAD_LETTER_BODY_BYTES = 64 * 1024
DEAD_LETTER_HEAD = 1024
TRUNCATED_HEADER = "x-cuttlefish-truncated"  # the original length of a body dead-lettered cut
_T = TypeVar("_T")


def dead_letter_body(body: bytes) -> tuple[bytes, dict]:
    """What a dead-letter queue keeps of a rejected `body`, and the headers saying it was cut."""
    if len(body) <= DEAD_LETTER_BODY_BYTES:
        return body, {}
    return bytes(body[:DEAD_LETTER_HEAD]), {TRUNCATED_HEADER: len(body)}


def first_waiting(queues: Iterable[_queue.SimpleQueue[_T]]) -> _T | None:
    """The first item waiting in any of the SimpleQueues `queues`, or None; a look, never a wait."""
    for q in queues:
        if q.empty():  # cheaper than a get_nowait() that raises, on the embedded driver's every look
            continue
        try:
            return q.get_nowait()
        except _queue.Empty:  # another reader took it first
            pass
    return None


@dataclass
class Delivery:
    """One message taken from a queue, to be acked or rejected exactly once."""

    queue: str
    body: bytes
    tag: object = None
    reason: str = ""  # why it was dead-lettered, when read from a dead-letter queue
    headers: dict = field(default_factory=dict)
    # a message handed over inside one process as the object it is, never one that came over a wire
    message: object = None


class HandedDelivery(Delivery):
    """A delivery handed over inside one process: the message object itself, its bytes made only if read."""

    def __init__(self, queue: str, message: object, encode: Callable[[], bytes], tag: object = None) -> None:
        self._encode: Callable[[], bytes] | None = encode
        super().__init__(queue, b"", tag, message=message)

    @property
    def body(self) -> bytes:
        """The message's signed bytes, as a reader over a wire would get them (encoded on first use)."""
        if self._encode is not None:
            self._body, self._encode = self._encode(), None
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value


class Broker(ABC):
    """A message transport: named queues, at-least-once delivery, dead-lettering of rejected messages."""

    url: str

    @abstractmethod
    def declare(self, queue: str, *, dead_letter: str | None = None) -> None:
        """Create `queue` if missing; rejected messages go to `dead_letter` (itself declared) when given."""

    @abstractmethod
    def publish(self, queue: str, body: bytes) -> None:
        """Append `body` to `queue`."""

    @abstractmethod
    def get(self, queue: str, timeout: float | None = None) -> Delivery | None:
        """Take the next message of `queue`, waiting up to `timeout` seconds (None: forever); None if none came."""

    @abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """Confirm that `delivery` was handled: it is gone for good."""

    @abstractmethod
    def reject(self, delivery: Delivery, reason: str) -> None:
        """Refuse `delivery`: it moves to its queue's dead-letter queue (or is dropped if it has none)."""

    @abstractmethod
    def depth(self, queue: str) -> int:
        """Number of messages waiting in `queue`."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Drop every waiting message of `queue`; returns how many."""

    @abstractmethod
    def delete(self, queue: str) -> None:
        """Remove `queue` and its messages (missing is fine)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the broker is unusable afterwards."""

    def get_any(self, queues, timeout: float | None = None) -> Delivery | None:
        """Take the next message of any of `queues` (backends may wait on all at once); None if none came."""
        queues = list(queues)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for queue in queues:
                delivery = self.get(queue, timeout=0)
                if delivery is not None:
                    return delivery
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.001)

    def publish_object(self, queues, message: object, encode: Callable[[], bytes]) -> None:
        """Publish `message` to every queue of `queues`: as the bytes `encode()` makes, or, to a reader in
        this process, as the object itself (no copy, no signature to make and check: nothing crossed a wire)."""
        self.publish_many(queues, encode())

    @property
    def reconnects(self) -> int:
        """How often the connection was lost and restored: messages in flight then may be gone."""
        return 0

    @property
    def alarm(self) -> str | None:
        """Why the broker blocks publishers (a memory or disk alarm), or None."""
        return None

    def publish_many(self, queues, body: bytes) -> None:
        """Publish the same `body` to every queue of `queues` (backends may batch)."""
        for queue in queues:
            self.publish(queue, body)

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
