"""The record of one run in a Store: its manifest, latest pointer, message key, heartbeats and scale requests.

The keys are listed in paramstore/keys.py, the manifest's fields in paramstore/manifest.py.

Only the driver writes the manifest, and only as a compare-and-set (Store.put_many_if) against the bytes
it read, plus its lease (paramstore/lease.py) when it holds one: a superseded driver cannot write, and a
manifest that vanished (the store lost the run's data) is never recreated. create() makes it once.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from broker.schemes import redact_url
from paramstore.base import Store, dumps_json, loads_json
from paramstore.errors import CheckpointError, CorruptValue, RunDataLost, StoreError
from paramstore.keys import RunKeys
from paramstore.manifest import Manifest, Rescale, ScaleRequest

MESSAGE_KEY_BYTES = 32


class RunRecord:
    """Read and write the record of one run: manifest, latest pointer, heartbeats, scale requests."""

    def __init__(self, store: Store, run_id: str, lease=None) -> None:
        self.store = store
        self.keys = RunKeys(run_id)
        self.run_id = run_id
        self.lock = threading.RLock()  # held by read-modify-writes of the manifest (here and in Checkpoints)
        # a paramstore.lease.Lease: when set, every manifest write also requires that it is still held
        self.lease = lease

    # -- the manifest -------------------------------------------------------------------------------

    def manifest(self) -> Manifest | None:
        """The run's manifest, or None before the run is created."""
        raw = self.store.get(self.keys.manifest)
        return None if raw is None else self._parse(raw)

    def _parse(self, raw: bytes) -> Manifest:
        return Manifest.from_json(loads_json(self.keys.manifest, raw), self.keys.manifest)

    def current(self) -> tuple[bytes, Manifest]:
        """(stored bytes, manifest) of the run, for a write(); RunDataLost if the manifest is gone."""
        raw = self.store.get(self.keys.manifest)
        if raw is None:
            raise self._lost()
        return raw, self._parse(raw)

    def _lost(self) -> RunDataLost:
        return RunDataLost(f"the store at {redact_url(self.store.url)} no longer has the manifest of run "
                           f"{self.run_id} (was it restarted without persistence?); the run stops instead of "
                           "recreating it")

    def create(self, **fields: Any) -> Manifest:
        """Create the run: its manifest (with `fields`) and its message key, at once; CheckpointError if it exists."""
        manifest = self.empty().with_fields(**fields)
        items = {self.keys.manifest: dumps_json(manifest.to_json()),
                 self.keys.message_key: secrets.token_bytes(MESSAGE_KEY_BYTES)}
        with self.lock:
            if not self._put_if(items, {self.keys.manifest: None, self.keys.message_key: None}):
                if self.lease is not None and not self.lease.held():
                    raise self.lease.why_lost()
                raise CheckpointError(f"run {self.run_id!r} already exists in the store")
        return manifest

    def _put_if(self, items: dict[str, bytes], expect: dict[str, bytes | None]) -> bool:
        if self.lease is not None:
            return self.lease.put_guarded(items, expect)
        return self.store.put_many_if(items, expect)

    def empty(self) -> Manifest:
        """The manifest of a run with nothing in the store yet."""
        return Manifest(run=self.run_id)

    def update(self, **fields: Any) -> Manifest:
        """Merge top-level `fields` (e.g. status, generation, topology) into the manifest; returns it."""
        with self.lock:
            raw, manifest = self.current()
            manifest = manifest.with_fields(**fields)
            self.write(manifest, raw)
            return manifest

    def write(self, manifest: Manifest, expect: bytes, *, switch: bool = False) -> None:
        """Replace the manifest read as `expect` (with `switch`, the latest pointer too), in one compare-and-set.

        RunDataLost if the manifest is gone, LeaseLost if another driver took the run over, CheckpointError
        if someone else changed it meanwhile.
        """
        items = {self.keys.manifest: dumps_json(manifest.to_json())}
        if switch:
            items[self.keys.latest] = str(manifest.latest).encode()
        if self._put_if(items, {self.keys.manifest: expect}):
            return
        if self.lease is not None and not self.lease.held():
            raise self.lease.why_lost()
        if self.store.get(self.keys.manifest) is None:
            raise self._lost()
        raise CheckpointError(f"the manifest of run {self.run_id} was changed by another writer meanwhile")

    def latest(self) -> int | None:
        """The latest committed version, or None: one small read of the pointer switch() writes."""
        pointer = self.store.get(self.keys.latest)
        if pointer is not None and pointer.isdigit():
            return int(pointer)
        manifest = self.manifest()  # a run committed before the pointer existed
        return None if manifest is None else manifest.latest

    def add_rescale(self, entry: Rescale) -> Manifest:
        """Append `entry` to the manifest's rescale history."""
        with self.lock:
            manifest = self.manifest() or self.empty()
            return self.update(rescales=(*manifest.rescales, entry))

    # -- the message key ----------------------------------------------------------------------------

    def message_key(self) -> bytes | None:
        """The key that signs the run's messages, or None if the run has none yet."""
        return self.store.get(self.keys.message_key)

    def create_message_key(self) -> bytes:
        """The run's message key: a new random one unless the run already has one (a run made before keys)."""
        key = secrets.token_bytes(MESSAGE_KEY_BYTES)
        if self.store.put_many_if({self.keys.message_key: key}, {self.keys.message_key: None}):
            return key
        existing = self.message_key()
        if existing is None:  # there a moment ago: the store is losing the run's data
            raise StoreError(f"the message key of run {self.run_id} vanished from the store")
        return existing

    # -- heartbeats ---------------------------------------------------------------------------------

    def beat(self, actor: str, status: Mapping, ttl: float) -> None:
        """Record that `actor` is alive with `status`, for `ttl` seconds."""
        self.store.put(self.keys.heartbeat(actor), dumps_json(dict(status)), ttl=ttl)

    def heartbeats(self) -> dict[str, dict]:
        """Live heartbeats by actor name (expired and unreadable ones left out)."""
        prefix = self.keys.heartbeats
        found = {}
        for key in self.store.keys(prefix):
            try:
                status = self.store.get_json(key)
            except CorruptValue:
                continue
            if isinstance(status, dict):
                found[key[len(prefix):]] = status
        return found

    # -- scale requests -----------------------------------------------------------------------------

    def request_scale(self, layer: int, shards: int) -> str:
        """Leave a request for the run's driver to split `layer` into `shards` neurons; returns its id."""
        request = ScaleRequest(secrets.token_hex(4), layer, shards, time.time())
        self.store.put_json(self.keys.scale_request, request.to_json())
        return request.id

    def scale_request(self) -> ScaleRequest | None:
        """The waiting request, if any and well-formed."""
        raw = self.store.get_json(self.keys.scale_request)
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), int) for k in ("layer", "shards")):
            return None
        asked = raw.get("asked")
        return ScaleRequest(str(raw.get("id")), raw["layer"], raw["shards"],
                            float(asked) if isinstance(asked, (int, float)) else 0.0)

    def clear_scale_request(self) -> None:
        """Remove the run's request (it has been carried out or refused)."""
        self.store.delete(self.keys.scale_request)
