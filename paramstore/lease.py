"""One driver per run: a lease in the store with a fencing token, taken atomically and renewed.

The lease key holds {"token", "owner", "host", "pid", "expires"} (JSON). A driver takes it with a
compare-and-set: from absent, or from an expired lease, or from one whose holder is provably dead (a
process of this host that no longer exists). Each take raises the token by one, so a later driver always
holds a larger token than any before it. Every write to the run's manifest is guarded by the lease's exact
bytes (put_many_if), so a driver whose lease was taken over cannot commit anything, and a store that lost
the run's data (no lease, no manifest) is noticed at the next write or renewal.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time

from broker.schemes import redact_url
from paramstore.base import Store, dumps_json
from paramstore.errors import LeaseHeld, LeaseLost, RunDataLost, StoreError
from paramstore.keys import RunKeys

log = logging.getLogger(__name__)

LEASE_TTL = 15.0  # seconds a lease lasts without renewal
MAX_TOKEN = (1 << 53) - 1  # JSON-safe


def lease_key(run_id: str) -> str:
    """Store key of the run's lease."""
    return RunKeys(run_id).lease


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _holder_alive(pid: object, started: object) -> bool:
    """Whether process `pid` of this host is the one that took the lease (a reused pid is not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process
    now = _process_start(pid)
    return now is None or started is None or now == started


class Lease:
    """This process's claim on driving run `run_id`; `token` is its fencing token once acquired."""

    def __init__(self, store: Store, run_id: str, *, ttl: float = LEASE_TTL) -> None:
        self.store, self.run_id, self.ttl = store, run_id, ttl
        self.key = lease_key(run_id)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.token = 0
        self._raw: bytes | None = None  # the lease's bytes as this process last wrote them
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: StoreError | None = None  # why the lease is gone, once it is

    # -- taking and giving back ---------------------------------------------------------------------
    def _value(self, token: int, expires: float) -> bytes:
        return dumps_json({"token": token, "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": _process_start(os.getpid()), "expires": round(expires, 3)})

    @staticmethod
    def _parse(raw: bytes | None) -> dict:
        try:
            held = json.loads(raw) if raw is not None else {}
        except ValueError:
            held = {}
        return held if isinstance(held, dict) else {}

    @staticmethod
    def _dead_holder(held: dict) -> bool:
        """Whether the holder was a process of this host that is gone (a restarted container's pid 1 included)."""
        return held.get("host") == socket.gethostname() and not _holder_alive(held.get("pid"), held.get("started"))

    def acquire(self, wait: float = 0.0) -> int:
        """Take the lease and return the new token; LeaseHeld at once if a live driver holds it.

        With `wait` (a resuming driver), a lease whose holder is silent is waited for up to `wait`
        seconds: if its holder renews it in that time it is alive and this driver is refused.
        """
        deadline = time.monotonic() + wait
        first = None
        while True:
            raw = self.store.get(self.key)
            held = self._parse(raw)
            stored_token, stored_expiry = held.get("token"), held.get("expires")
            token = stored_token if isinstance(stored_token, int) else 0
            expires = stored_expiry if isinstance(stored_expiry, (int, float)) else 0.0
            live = raw is not None and expires > time.time() and not self._dead_holder(held)
            if live:
                if first is None:
                    first = raw
                if raw != first or time.monotonic() >= deadline:
                    raise LeaseHeld(
                        f"run {self.run_id} is driven by another driver ({held.get('owner', '?')}, token {token}, "
                        f"lease valid {max(0.0, expires - time.time()):.0f} s more): a second driver is refused; "
                        f"stop that one, or --resume after it is gone")
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            if token >= MAX_TOKEN:
                raise StoreError(f"the lease token of run {self.run_id} is exhausted")
            value = self._value(token + 1, time.time() + self.ttl)
            if self.store.put_many_if({self.key: value}, {self.key: raw}):
                with self._lock:
                    self.token, self._raw, self.lost = token + 1, value, None
                log.info("driving run %s with fencing token %d", self.run_id, self.token)
                return self.token
            # someone changed it between our read and write: look again (a live winner is refused above)

    def release(self) -> None:
        """Give the lease back (expired at once, token kept) if this process still holds it."""
        self.stop_renewing()
        with self._lock:
            if self._raw is None or self.lost is not None:
                return
            try:
                self.store.put_many_if({self.key: self._value(self.token, 0.0)}, {self.key: self._raw})
            except StoreError as exc:
                log.warning("could not release the lease of run %s: %s", self.run_id, exc)
            self._raw = None

    # -- holding --------------------------------------------------------------------------------------
    def guard(self) -> dict[str, bytes | None]:
        """The put_many_if expectation that this process still holds the lease (no lease: none)."""
        return {} if self._raw is None else {self.key: self._raw}

    def put_guarded(self, items: dict[str, bytes], expect: dict[str, bytes | None]) -> bool:
        """store.put_many_if(items, expect), also expecting this process still holds the lease."""
        with self._lock:
            self.check()
            return self.store.put_many_if(items, {**expect, **self.guard()})

    def held(self) -> bool:
        """Whether the store still holds exactly the lease this process last wrote."""
        return self._raw is not None and self.store.get(self.key) == self._raw

    def renew(self) -> None:
        """Extend the lease by its TTL; records (and raises) LeaseLost or RunDataLost if it is gone."""
        with self._lock:
            if self._raw is None:
                return
            self.check()
            value = self._value(self.token, time.time() + self.ttl)
            if self.store.put_many_if({self.key: value}, {self.key: self._raw}):
                self._raw = value
                return
            self.lost = self.why_lost()
            raise self.lost

    def why_lost(self) -> StoreError:
        """The error that explains why a guarded write failed: lease taken over, or the run's data gone."""
        raw = self.store.get(self.key)
        if raw is None:
            return RunDataLost(f"the store at {redact_url(self.store.url)} lost run {self.run_id}'s data: its lease "
                               "is gone (was the store restarted without persistence?); the run stops")
        held = self._parse(raw)
        return LeaseLost(f"this driver (token {self.token}) lost run {self.run_id} to another driver "
                         f"({held.get('owner', '?')}, token {held.get('token', '?')}); it stops without committing")

    def check(self) -> None:
        """Raise the reason the lease was lost, if it was."""
        if self.lost is not None:
            raise self.lost

    def start_renewing(self, interval: float | None = None) -> None:
        """Renew the lease from a background thread every `interval` (default a third of the TTL) seconds."""
        interval = self.ttl / 3 if interval is None else interval

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except (LeaseLost, RunDataLost) as exc:
                    log.error("%s", exc)
                    return
                except StoreError as exc:  # an outage: the next renewal (or guarded write) tells
                    log.warning("could not renew the lease of run %s: %s", self.run_id, exc)

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="cuttlefish-lease", daemon=True)
        self._thread.start()

    def stop_renewing(self) -> None:
        """Stop the renewal thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
