"""In-process store: a dict behind a lock, shared by the neuron threads of an embedded run."""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from paramstore.base import Store


class MemoryStore(Store):
    """A private in-memory store; every instance is independent (open_store("memory://") twice gives two)."""

    def __init__(self, url: str = "memory://") -> None:
        super().__init__(url)
        self._lock = threading.Lock()
        self._data: dict[str, tuple[bytes, float | None]] = {}  # key -> (value, monotonic deadline)

    def _live(self, key: str, now: float) -> bytes | None:
        # Called under the lock, so dropping an expired entry cannot race with a fresh put.
        entry = self._data.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= now:
            del self._data[key]
            return None
        return value

    def get(self, key: str) -> bytes | None:
        """The bytes stored at `key`, or None if it is missing or expired."""
        self.check_key(key)
        with self._lock:
            self._require_open()
            return self._live(key, time.monotonic())

    def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` at `key`, expiring after `ttl` seconds when given."""
        self.check_key(key)
        value, ttl = self.check_value(value), self.check_ttl(ttl)
        with self._lock:
            self._require_open()
            self._data[key] = (value, None if ttl is None else time.monotonic() + ttl)

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is fine."""
        self.check_key(key)
        with self._lock:
            self._require_open()
            self._data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        """Sorted live keys starting with `prefix`."""
        self.check_prefix(prefix)
        with self._lock:
            self._require_open()
            now = time.monotonic()
            return sorted(k for k in list(self._data) if k.startswith(prefix) and self._live(k, now) is not None)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store every item at once: other threads see all of them or none."""
        checked = {self.check_key(k): self.check_value(v) for k, v in items.items()}
        with self._lock:
            self._require_open()
            self._data.update((k, (v, None)) for k, v in checked.items())

    def put_many_if(self, items: Mapping[str, bytes], expect: Mapping[str, bytes | None]) -> bool:
        """Store `items` if every key of `expect` holds its value (None: absent), under the lock."""
        checked, wanted = self.check_guarded(items, expect)
        with self._lock:
            self._require_open()
            now = time.monotonic()
            if any(self._live(k, now) != v for k, v in wanted.items()):
                return False
            self._data.update((k, (v, None)) for k, v in checked.items())
            return True

    def close(self) -> None:
        """Drop the data; the store is unusable afterwards."""
        with self._lock:
            self._closed = True
            self._data.clear()
