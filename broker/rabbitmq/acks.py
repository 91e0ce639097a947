"""Acks of one consumed queue, sent as one `multiple` ack per batch (broker/rabbitmq/broker.py)."""
from __future__ import annotations

import threading
import time


class AckBatch:
    """Acks of one consumed queue, sent as one `multiple` ack per batch.

    Deliveries of a single consumer arrive and are taken in delivery-tag order, so every tag below the
    oldest taken-but-unsettled one is settled, and one multiple ack covers them all; a settled tag above
    an unsettled one is acked on its own. A crash loses at most a batch of acks: those messages are
    delivered again and dropped as duplicates or stale.
    """

    def __init__(self, size: int, wait: float) -> None:
        self.size, self.wait = size, wait
        self._lock = threading.Lock()
        self._taken: set[tuple[int, int]] = set()
        self._settled: list[tuple[int, int]] = []
        self._since = 0.0

    def reset(self) -> None:
        """A new channel: its tags start again."""
        with self._lock:
            self._taken.clear()
            self._settled.clear()

    def take(self, tag: tuple[int, int]) -> None:
        """`tag` (epoch, delivery tag) was handed to a caller."""
        with self._lock:
            self._taken.add(tag)

    def forget(self, tag: tuple[int, int]) -> None:
        """`tag` is settled outside the batch (rejected, or acked on its own)."""
        with self._lock:
            self._taken.discard(tag)

    def settle(self, tag: tuple[int, int]) -> bool:
        """Mark `tag` acked; True when the batch is full and should be sent."""
        with self._lock:
            self._taken.discard(tag)
            if not self._settled:
                self._since = time.monotonic()
            self._settled.append(tag)
            return len(self._settled) >= self.size

    def flush_due(self, flush) -> None:
        """Call `flush` if acks have waited longer than `wait` seconds."""
        if self._settled and time.monotonic() - self._since > self.wait:
            flush()

    def due(self, epoch: int) -> tuple[int | None, list[int]]:
        """(tag of one multiple ack or None, tags to ack singly) of `epoch`; the batch is emptied."""
        with self._lock:
            settled, self._settled = self._settled, []
            low = min((t for e, t in self._taken if e == epoch), default=None)
        tags = [t for e, t in settled if e == epoch]
        below = [t for t in tags if low is None or t < low]
        return (max(below) if below else None), [t for t in tags if low is not None and t > low]
