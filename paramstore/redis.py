"""`redis://` and `rediss://`: checkpoints in Redis, host, database, password and TLS taken from the URL.

Chunks are read with MGET and written in MULTI/EXEC pipelines; the connection reads the socket in 1 MB
pieces, since redis-py's default 64 KB reads make a 1 MB GET several times slower (bench/bench_services.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

import redis
import redis.exceptions as rex

from broker.schemes import redact_url
from paramstore.base import Store
from paramstore.errors import StoreError, StoreUnavailable

SOCKET_READ_SIZE = 1 << 20
_SCAN_COUNT = 1000


class RedisStore(Store):
    """A store in one Redis database; `?retries=N&timeout=S` tune reconnects and socket timeouts."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        query = dict(parse_qsl(urlsplit(url).query))
        try:
            timeout = float(query.pop("timeout", 30))
            retries = int(query.pop("retries", 3))
        except ValueError as exc:
            raise StoreError(f"bad store URL {redact_url(url)!r}: {exc}") from None
        base = url.split("?", 1)[0]
        try:
            self._client = redis.Redis.from_url(
                base, socket_timeout=timeout, socket_connect_timeout=min(timeout, 10.0),
                socket_read_size=SOCKET_READ_SIZE, health_check_interval=30,
                retry=redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=2.0, base=0.1), retries),
                retry_on_error=[rex.ConnectionError, rex.TimeoutError])
        except (ValueError, TypeError) as exc:
            raise StoreError(f"bad store URL {redact_url(url)!r}: {exc}") from None
        self._call(self._client.ping)

    def _call(self, fn, *args, **kwargs):
        self._require_open()
        try:
            return fn(*args, **kwargs)
        except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
            raise StoreUnavailable(self.url, f"{type(exc).__name__}: {redact_url(str(exc))}") from None
        except rex.ResponseError as exc:
            raise StoreError(f"{redact_url(self.url)} refused the request: {exc}") from None
        except rex.RedisError as exc:
            raise StoreUnavailable(self.url, type(exc).__name__) from None

    def get(self, key: str) -> bytes | None:
        """The bytes stored at `key`, or None if it is missing or expired."""
        return self._call(self._client.get, self.check_key(key))

    def get_many(self, keys) -> list[bytes | None]:
        """The values of `keys` in one MGET round trip."""
        keys = [self.check_key(k) for k in keys]
        return self._call(self._client.mget, keys) if keys else []

    def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` at `key`, expiring after `ttl` seconds (rounded up to milliseconds) when given."""
        key, value, ttl = self.check_key(key), self.check_value(value), self.check_ttl(ttl)
        px = None if ttl is None else max(1, int(ttl * 1000 + 0.999))
        self._call(self._client.set, key, value, px=px)

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is fine."""
        self._call(self._client.delete, self.check_key(key))

    def keys(self, prefix: str) -> list[str]:
        """Sorted live keys starting with `prefix` (SCAN, never KEYS)."""
        # key characters exclude the glob specials * ? [ ] and backslash, so the prefix needs no escaping
        pattern = self.check_prefix(prefix) + "*"
        found = self._call(lambda: list(self._client.scan_iter(match=pattern, count=_SCAN_COUNT)))
        return sorted(k.decode("utf-8") for k in set(found))

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store every item in one MULTI/EXEC transaction: readers see all of them or none."""
        checked = {self.check_key(k): self.check_value(v) for k, v in items.items()}
        if not checked:
            return

        def run() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.mset(checked)
                pipe.execute()
        self._call(run)

    def close(self) -> None:
        """Close the connection pool; the store is unusable afterwards."""
        if not self._closed:
            self._closed = True
            self._client.close()
