"""The record of one run in a Store: every key of a run, its manifest as a typed value, heartbeats, scale requests.

Keys, for run R (versions zero-padded so that they sort):
  cuttlefish/R/manifest                                   the manifest (JSON): see Manifest
  cuttlefish/R/latest                                     the latest committed version (decimal text)
  cuttlefish/R/key                                        the run's message key (32 random bytes)
  cuttlefish/R/lease                                      the driver's lease and fencing token (JSON), see lease.py
  cuttlefish/R/hb/{actor}                                 an actor's heartbeat (JSON, with a TTL)
  cuttlefish/R/scale-request                              a pending request to re-split a layer (JSON)
  cuttlefish/R/ckpt/{version:010d}/L{layer}/{a}-{b}       a checkpoint slice record (JSON), see checkpoint.py
  cuttlefish/R/ckpt/{version:010d}/L{layer}/{a}-{b}/{name}   one array of it (put_array meta, chunks under it)

Only the driver writes the manifest, and only as a compare-and-set (Store.put_many_if) against the bytes
it read, plus its lease (paramstore/lease.py) when it holds one: a superseded driver cannot write, and a
manifest that vanished (the store lost the run's data) is never recreated. create() makes it once.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.schemes import redact_url
from paramstore.base import Store, dumps_json, loads_json
from paramstore.errors import CheckpointError, CorruptValue, InvalidKey, RunDataLost, StoreError

ROOT = "cuttlefish/"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_VERSION = 10**10 - 1  # what fits the 10-digit key field
MESSAGE_KEY_BYTES = 32


def check_name(name: object, what: str) -> str:
    """`name` if it is 1-64 of A-Z a-z 0-9 _ . - (and not '.' or '..'), else InvalidKey."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidKey(f"{what} must match [A-Za-z0-9_.-]{{1,64}}, not {name!r}")
    return name


def check_int(value: object, what: str, limit: int | None = None) -> int:
    """`value` as an int if it is a non-negative integer (at most `limit`), else CheckpointError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise CheckpointError(f"{what} must be a non-negative int, not {value!r}")
    if limit is not None and value > limit:
        raise CheckpointError(f"{what} {value} exceeds {limit}")
    return int(value)


@dataclass(frozen=True)
class RunKeys:
    """Every store key of run `run_id`."""

    run_id: str

    def __post_init__(self) -> None:
        check_name(self.run_id, "run id")

    @property
    def prefix(self) -> str:
        """Prefix of every key of the run (ends with '/')."""
        return f"{ROOT}{self.run_id}/"

    @property
    def manifest(self) -> str:
        """Key of the run's manifest."""
        return f"{self.prefix}manifest"

    @property
    def latest(self) -> str:
        """Key of the latest committed version, switched together with the manifest."""
        return f"{self.prefix}latest"

    @property
    def lease(self) -> str:
        """Key of the run's driver lease (see lease.py)."""
        return f"{self.prefix}lease"

    @property
    def message_key(self) -> str:
        """Key of the run's message key: only the run's own processes read it (never the broker)."""
        return f"{self.prefix}key"

    @property
    def heartbeats(self) -> str:
        """Prefix of the actors' heartbeat keys."""
        return f"{self.prefix}hb/"

    def heartbeat(self, actor: str) -> str:
        """Key of `actor`'s heartbeat."""
        return f"{self.heartbeats}{check_name(actor, 'actor name')}"

    @property
    def scale_request(self) -> str:
        """Key of the run's pending scale request."""
        return f"{self.prefix}scale-request"

    def version(self, version: int) -> str:
        """Prefix of every key of checkpoint `version` (ends with '/')."""
        return f"{self.prefix}ckpt/{check_int(version, 'version', MAX_VERSION):010d}/"

    def slice(self, version: int, layer: int, start: int, stop: int) -> str:
        """Key of one slice's record; its arrays live under this key + '/' + name."""
        return f"{self.version(version)}L{check_int(layer, 'layer')}/{start}-{stop}"


def run_ids(store: Store) -> list[str]:
    """The ids of every run with a manifest in `store`, sorted."""
    return sorted(k[len(ROOT):].split("/")[0] for k in store.keys(ROOT) if k.endswith("/manifest"))


@dataclass(frozen=True)
class CheckpointEntry:
    """One committed checkpoint as the manifest lists it: row splits and array specs per layer, the driver's info."""

    layers: Mapping[str, list]  # layer -> [[start, stop], ...]
    arrays: Mapping[str, dict]  # layer -> {name: {"dtype", "shape"}}
    info: Mapping[str, Any]

    def to_json(self) -> dict:
        """The JSON object stored in the manifest."""
        return {"layers": dict(self.layers), "arrays": dict(self.arrays), "info": dict(self.info)}

    @classmethod
    def from_json(cls, raw: object) -> CheckpointEntry:
        """Parse a stored entry; a malformed part reads as empty, which readers report as a missing layer."""
        raw = raw if isinstance(raw, dict) else {}
        layers, arrays, info = raw.get("layers"), raw.get("arrays"), raw.get("info")
        return cls(layers if isinstance(layers, dict) else {}, arrays if isinstance(arrays, dict) else {},
                   info if isinstance(info, dict) else {})


_OPTIONAL = ("generation", "status", "topology", "schedule", "test_accuracy")
RESERVED = frozenset({"run", "latest", "checkpoints"})  # fields only commit() and prune() change


@dataclass(frozen=True)
class Manifest(Mapping):
    """What the store knows of a run: its checkpoints, where it stands, its network and its history.

    Code reads the attributes; the mapping interface is a read-only view of the stored JSON document.
    """

    run: str
    latest: int | None = None
    checkpoints: Mapping[int, CheckpointEntry] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)  # the info of the commits, merged
    generation: int | None = None  # the highest generation any driver started
    status: str | None = None  # "running" or "done"
    topology: Mapping[str, Any] | None = None  # Topology.to_dict() of the current split
    schedule: Mapping[str, Any] | None = None  # the sample schedule a resume must match
    test_accuracy: float | None = None
    rescales: tuple[Rescale, ...] = ()  # every rescale, carried out or refused
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields this version does not know, kept as they are

    def to_json(self) -> dict:
        """The stored JSON document (fields never set are left out)."""
        doc: dict[str, Any] = {"run": self.run, "latest": self.latest,
                               "checkpoints": {str(v): e.to_json() for v, e in self.checkpoints.items()},
                               "state": dict(self.state)}
        for name in _OPTIONAL:
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        if self.rescales:
            doc["rescales"] = [r.to_json() for r in self.rescales]
        doc.update(self.extra)
        return doc

    @classmethod
    def from_json(cls, raw: object, key: str) -> Manifest:
        """Parse the document stored at `key`; CorruptValue if it is not a manifest."""
        if (not isinstance(raw, dict) or not isinstance(raw.get("checkpoints"), dict)
                or not (raw.get("latest") is None or type(raw.get("latest")) is int)
                or not all(isinstance(v, str) and v.isdigit() for v in raw["checkpoints"])):
            raise CorruptValue(f"malformed manifest at {key!r}")
        known = {"run", "latest", "checkpoints", "state", "rescales", *_OPTIONAL}
        rescales, state = raw.get("rescales") or [], raw.get("state")
        return cls(
            run=str(raw.get("run")), latest=raw["latest"],
            checkpoints={int(v): CheckpointEntry.from_json(e) for v, e in raw["checkpoints"].items()},
            state=state if isinstance(state, dict) else {},
            **{name: raw.get(name) for name in _OPTIONAL},
            rescales=tuple(Rescale.from_json(r) for r in rescales if isinstance(r, dict)) if isinstance(rescales, list)
            else (),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def with_fields(self, **fields: Any) -> Manifest:
        """This manifest with top-level `fields` replaced (unknown names go to `extra`)."""
        reserved = RESERVED.intersection(fields)
        if reserved:
            raise CheckpointError(f"manifest fields {sorted(reserved)} are managed by commit() and prune()")
        own = {f.name for f in dataclasses.fields(self)} - {"extra"}
        known = {k: v for k, v in fields.items() if k in own}
        if "rescales" in known:
            known["rescales"] = tuple(known["rescales"] or ())
        extra = {**self.extra, **{k: v for k, v in fields.items() if k not in own}}
        return dataclasses.replace(self, **known, extra=extra)

    def __getitem__(self, name: str) -> Any:
        return self.to_json()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


@dataclass(frozen=True)
class ScaleRequest:
    """A `scale` command's request to split `layer` into `shards` neurons, waiting for the driver."""

    id: str
    layer: int
    shards: int
    asked: float

    def to_json(self) -> dict:
        """The stored JSON object (the manifest's rescale history keeps these fields)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rescale:
    """One entry of the manifest's rescale history: a request carried out, or refused (and why)."""

    request: ScaleRequest
    from_shards: int | None = None  # "from" in the manifest
    to_shards: int | None = None  # "to"
    version: int | None = None  # the checkpoint the new split started from
    generation: int | None = None  # the generation that opened with it
    pause_s: float | None = None  # seconds training paused
    refused: str | None = None  # why the driver did not carry it out

    _JSON = (("from_shards", "from"), ("to_shards", "to"), ("version", "version"), ("generation", "generation"),
             ("pause_s", "pause_s"), ("refused", "refused"))

    def to_json(self) -> dict:
        """The stored JSON object: the request's fields and those of the outcome that are set."""
        doc = self.request.to_json()
        doc.update({key: getattr(self, attr) for attr, key in self._JSON if getattr(self, attr) is not None})
        return doc

    @classmethod
    def from_json(cls, raw: Mapping) -> Rescale:
        """Parse a stored entry (fields of the wrong type read as unset)."""
        def number(key: str) -> Any:
            value = raw.get(key)
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        asked = number("asked")
        request = ScaleRequest(str(raw.get("id")), number("layer"), number("shards"), float(asked or 0.0))
        refused = raw.get("refused")
        return cls(request, number("from"), number("to"), number("version"), number("generation"),
                   number("pause_s"), None if refused is None else str(refused))


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
