"""`redis://` and `rediss://`: checkpoints in Redis, host, database, password and TLS taken from the URL.

Chunks are read with MGET and written in MULTI/EXEC pipelines; the connection reads the socket in 1 MB
pieces, since redis-py's default 64 KB reads make a 1 MB GET several times slower (bench/bench_services.py).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

import redis
import redis.exceptions as rex

from broker.schemes import redact_url
from paramstore.base import Store
from paramstore.errors import StoreError, StoreRefused, StoreUnavailable

log = logging.getLogger(__name__)

SOCKET_READ_SIZE = 1 << 20
_SCAN_COUNT = 1000
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
OUTAGE_SECONDS = 60.0  # how long a lost connection is retried before the store counts as gone
# KEYS: the n guarded keys, then the keys to write; ARGV: n, a presence flag and value per guarded key,
# then the values to write
_PUT_MANY_IF = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if ARGV[2 * i] == '0' then
    if v then return 0 end
  elseif v ~= ARGV[2 * i + 1] then
    return 0
  end
end
for j = n + 1, #KEYS do
  redis.call('SET', KEYS[j], ARGV[2 * n + 1 + j - n])
end
return 1
"""
# refusals that retrying cannot cure: redis-py's class (it strips the code word), the code word, the reason
# shown; a class older redis-py releases lack (OutOfMemoryError is newer than Debian bookworm's 4.3) is None
_REFUSALS = (
    (getattr(rex, "OutOfMemoryError", None), "OOM", "it is out of memory (maxmemory)"),
    (getattr(rex, "ReadOnlyError", None), "READONLY", "it is a read-only replica"),
    (getattr(rex, "NoPermissionError", None), "NOPERM", "the user lacks the permission"),
    (None, "MISCONF", "it cannot save to its disk"),
)


class RedisStore(Store):
    """A store in one Redis database; `?retries=N&timeout=S&outage=S` tune reconnects and socket timeouts.

    rediss:// verifies the server's certificate: `?ssl_ca_certs=FILE` names the CA (say, of a self-signed
    certificate), `ssl_certfile`/`ssl_keyfile` a client certificate, `ssl_check_hostname=0` skips the name check.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        query = dict(parse_qsl(urlsplit(url).query))
        try:
            timeout = float(query.pop("timeout", 30))
            retries = int(query.pop("retries", 3))
            self.outage = float(query.pop("outage", OUTAGE_SECONDS))
        except ValueError as exc:
            raise StoreError(f"bad store URL {redact_url(url)!r}: {exc}") from None
        base = url.split("?", 1)[0]
        tls: dict[str, str | bool] = {k: query.pop(k) for k in _TLS_FILES if k in query}
        if "ssl_check_hostname" in query:
            tls["ssl_check_hostname"] = query.pop("ssl_check_hostname").lower() not in ("0", "false", "no")
        if tls and not base.startswith("rediss://"):
            raise StoreError(f"bad store URL {redact_url(url)!r}: TLS options need rediss://")
        try:
            self._client = redis.Redis.from_url(
                base, **tls, socket_timeout=timeout, socket_connect_timeout=min(timeout, 10.0),
                socket_read_size=SOCKET_READ_SIZE, health_check_interval=30,
                retry=redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=2.0, base=0.1), retries),
                retry_on_error=[rex.ConnectionError, rex.TimeoutError])
        except (ValueError, TypeError) as exc:
            raise StoreError(f"bad store URL {redact_url(url)!r}: {exc}") from None
        self._put_many_if = self._client.register_script(_PUT_MANY_IF)
        self._call(self._client.ping, retry=False)

    def _call(self, fn, *args, retry: bool = True, **kwargs):
        """fn(*args, **kwargs), a lost connection retried for `outage` seconds; errors become StoreErrors."""
        self._require_open()
        deadline, delay = time.monotonic() + self.outage, 0.2
        while True:
            try:
                return fn(*args, **kwargs)
            except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
                if isinstance(exc, rex.AuthenticationError):  # retrying a wrong password cannot help
                    raise StoreError(f"{redact_url(self.url)} refused the password") from None
                if not retry or time.monotonic() + delay > deadline:
                    raise StoreUnavailable(self.url, f"{type(exc).__name__}: {redact_url(str(exc))}") from None
                log.warning("store %s unreachable (%s); retrying", redact_url(self.url), type(exc).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except rex.ResponseError as exc:
                raise _refusal(self.url, exc) from None
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

    def put_many_if(self, items: Mapping[str, bytes], expect: Mapping[str, bytes | None]) -> bool:
        """Store `items` if every key of `expect` holds its value (None: absent): one Lua script, atomic."""
        checked, wanted = self.check_guarded(items, expect)
        keys = [*wanted, *checked]
        args: list = [len(wanted)]
        for value in wanted.values():
            args += ["0", ""] if value is None else ["1", value]
        args += list(checked.values())
        attempts = []

        def run() -> bool:
            attempts.append(1)
            if self._put_many_if(keys=keys, args=args):
                return True
            # the reply of an earlier attempt may have been lost after the script ran: then the items are there
            return len(attempts) > 1 and bool(checked) and self._client.mget(list(checked)) == list(checked.values())
        return self._call(run)

    def close(self) -> None:
        """Close the connection pool; the store is unusable afterwards."""
        if not self._closed:
            self._closed = True
            self._client.close()


def _refusal(url: str, exc: rex.ResponseError) -> StoreError:
    """A readable StoreError for a refusal: the server's reason only, never the command's arguments (bytes)."""
    text = str(exc)
    # a refused pipeline names its command with every argument: weights, in a checkpoint write
    text = text.rsplit("caused error: ", 1)[-1].splitlines()[0] if text else type(exc).__name__
    text = text.split(" script: ", 1)[0]  # a refusal inside a Lua script names the script and its line
    text = text.encode("ascii", "replace").decode()[:200]
    for cls, word, reason in _REFUSALS:
        if (cls is not None and isinstance(exc, cls)) or text.startswith(word):
            return StoreRefused(url, f"{reason} ({word})")
    return StoreError(f"{redact_url(url)} refused the request: {text}")
