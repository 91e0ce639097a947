"""Checkpoint layout of one training run on any Store: per-neuron row slices, committed through one manifest key.

Keys, for run R (versions zero-padded so that they sort):
  cuttlefish/R/manifest                                   the manifest (JSON), replaced in one put by commit
  cuttlefish/R/ckpt/{version:010d}/L{layer}/{a}-{b}       slice record (JSON), written after the slice's arrays
  cuttlefish/R/ckpt/{version:010d}/L{layer}/{a}-{b}/{name}   one array (put_array meta, chunks under it)

A version exists for readers only once commit() lists it in the manifest, so a half-written checkpoint
(a neuron died mid-write) is never read. Only the driver writes the manifest; the lock here serialises
the read-modify-write of threads sharing this object, not of several processes.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from paramstore.base import ARRAY_DTYPES, DEFAULT_CHUNK_BYTES, Store, dumps_json
from paramstore.errors import CheckpointError, CorruptValue, InvalidKey, MissingKey

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_VERSION = 10**10 - 1  # what fits the 10-digit key field
_RESERVED = frozenset({"run", "latest", "checkpoints"})  # manifest fields owned by commit() and prune()


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidKey(f"{what} must match [A-Za-z0-9_.-]{{1,64}}, not {name!r}")
    return name


def _check_int(value: object, what: str, limit: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise CheckpointError(f"{what} must be a non-negative int, not {value!r}")
    if limit is not None and value > limit:
        raise CheckpointError(f"{what} {value} exceeds {limit}")
    return int(value)


class Checkpoints:
    """Write, commit, read and prune the checkpoints of one training run."""

    def __init__(self, store: Store, run_id: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.store = store
        self.run_id = _check_name(run_id, "run id")
        self.chunk_bytes = chunk_bytes
        self._lock = threading.Lock()

    # -- keys ---------------------------------------------------------------------------------------

    @property
    def manifest_key(self) -> str:
        """Key of this run's manifest."""
        return f"cuttlefish/{self.run_id}/manifest"

    @property
    def latest_key(self) -> str:
        """Key of the latest committed version (decimal text), switched together with the manifest."""
        return f"cuttlefish/{self.run_id}/latest"

    def heartbeat_key(self, actor: str) -> str:
        """Key of `actor`'s heartbeat (a JSON status that expires when the actor stops beating)."""
        return f"cuttlefish/{self.run_id}/hb/{_check_name(actor, 'actor name')}"

    def beat(self, actor: str, status: Mapping, ttl: float) -> None:
        """Record that `actor` is alive with `status`, for `ttl` seconds."""
        self.store.put(self.heartbeat_key(actor), dumps_json(dict(status)), ttl=ttl)

    def heartbeats(self) -> dict[str, dict]:
        """Live heartbeats by actor name (expired and unreadable ones left out)."""
        prefix = f"cuttlefish/{self.run_id}/hb/"
        found = {}
        for key in self.store.keys(prefix):
            try:
                status = self.store.get_json(key)
            except CorruptValue:
                continue
            if isinstance(status, dict):
                found[key[len(prefix):]] = status
        return found

    def version_prefix(self, version: int) -> str:
        """Prefix of every key of checkpoint `version` (ends with '/')."""
        return f"cuttlefish/{self.run_id}/ckpt/{_check_int(version, 'version', _MAX_VERSION):010d}/"

    def slice_key(self, version: int, layer: int, start: int, stop: int) -> str:
        """Key of one slice's record; its arrays live under this key + '/' + name."""
        return f"{self.version_prefix(version)}L{_check_int(layer, 'layer')}/{start}-{stop}"

    # -- writing ----------------------------------------------------------------------------------

    def write_slice(self, version: int, layer: int, start: int, stop: int,
                    arrays: Mapping[str, np.ndarray]) -> None:
        """Store rows [start, stop) of `layer` for `version`: each array has stop - start rows."""
        start, stop = _check_int(start, "start"), _check_int(stop, "stop")
        if start >= stop:
            raise CheckpointError(f"empty row range [{start}, {stop})")
        key = self.slice_key(version, layer, start, stop)
        if not arrays:
            raise CheckpointError(f"no arrays for slice {key}")
        checked = {}
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.ndim not in (1, 2) or arr.shape[0] != stop - start:
                raise CheckpointError(f"array {name!r} of shape {arr.shape} is not {stop - start} rows")
            if arr.dtype.newbyteorder("<").str not in ARRAY_DTYPES:
                raise CheckpointError(f"array {name!r} has unsupported dtype {arr.dtype}")
            checked[_check_name(name, "array name")] = arr
        for name, arr in checked.items():
            self.store.put_array(f"{key}/{name}", arr, chunk_bytes=self.chunk_bytes)
        # The record goes last: commit() takes its presence as proof that every array is complete.
        self.store.put_json(key, {"rows": [start, stop], "arrays": {
            name: {"dtype": arr.dtype.newbyteorder("<").str, "shape": list(arr.shape)}
            for name, arr in checked.items()}})

    def commit(self, version: int, splits: Mapping[int, Sequence[tuple[int, int]]],
               info: Mapping | None = None) -> dict:
        """Record `version` as written with these row splits per layer and make it the latest; returns the manifest."""
        version = _check_int(version, "version", _MAX_VERSION)
        if not splits:
            raise CheckpointError(f"checkpoint {version} names no layers")
        info = dict(info or {})
        layers, arrays, missing = {}, {}, []
        for layer, ranges in splits.items():
            layer = _check_int(layer, "layer")
            ranges = _tiling(layer, ranges)
            layers[str(layer)] = [list(r) for r in ranges]
            records = {}
            for a, b in ranges:
                record = self.store.get_json(self.slice_key(version, layer, a, b))
                if record is None:
                    missing.append(f"L{layer}/{a}-{b}")
                else:
                    records[(a, b)] = record
            if records:
                arrays[str(layer)] = _layer_arrays(version, layer, records)
        if missing:
            shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
            raise CheckpointError(f"checkpoint {version} lacks {len(missing)} slice(s): {shown}")
        with self._lock:
            manifest = self.manifest() or self._empty_manifest()
            # A version below the latest is a rollback: the driver resumed from an older checkpoint.
            manifest["checkpoints"][str(version)] = {"layers": layers, "arrays": arrays, "info": info}
            manifest["latest"] = version
            manifest.setdefault("state", {}).update(info)
            # the manifest and the latest pointer switch together, after every slice was written
            self.store.put_many({self.manifest_key: dumps_json(manifest), self.latest_key: str(version).encode()})
            return manifest

    def update_manifest(self, **fields: object) -> dict:
        """Merge top-level `fields` (e.g. status, generation, history) into the manifest; returns it."""
        reserved = _RESERVED.intersection(fields)
        if reserved:
            raise CheckpointError(f"manifest fields {sorted(reserved)} are managed by commit() and prune()")
        with self._lock:
            manifest = self.manifest() or self._empty_manifest()
            manifest.update(fields)
            self.store.put_json(self.manifest_key, manifest)
            return manifest

    def prune(self, keep: int = 2) -> int:
        """Delete committed versions older than the newest `keep` (never the latest); returns keys deleted."""
        keep = _check_int(keep, "keep")
        with self._lock:
            manifest = self.manifest()
            if manifest is None:
                return 0
            versions = sorted((int(v) for v in manifest["checkpoints"]), reverse=True)
            retained = set(versions[:keep])
            if manifest["latest"] is not None:
                retained.add(manifest["latest"])
            doomed = [v for v in versions if v not in retained]
            if not doomed:
                return 0
            for v in doomed:
                del manifest["checkpoints"][str(v)]
            # Manifest first: no reader is ever pointed at a version whose keys are going away.
            self.store.put_json(self.manifest_key, manifest)
        deleted = 0
        for v in doomed:
            for key in self.store.keys(self.version_prefix(v)):
                self.store.delete(key)
                deleted += 1
        return deleted

    # -- reading ----------------------------------------------------------------------------------

    def manifest(self) -> dict | None:
        """The run's manifest, or None before the first commit or update."""
        manifest = self.store.get_json(self.manifest_key)
        if manifest is None:
            return None
        if (not isinstance(manifest, dict) or not isinstance(manifest.get("checkpoints"), dict)
                or not (manifest.get("latest") is None or type(manifest.get("latest")) is int)):
            raise CorruptValue(f"malformed manifest at {self.manifest_key!r}")
        return manifest

    def latest(self) -> int | None:
        """The latest committed version, or None: one small read of the pointer commit() switches."""
        pointer = self.store.get(self.latest_key)
        if pointer is not None and pointer.isdigit():
            return int(pointer)
        manifest = self.manifest()  # a run committed before the pointer existed
        return None if manifest is None else manifest["latest"]

    def read_rows(self, version: int, layer: int, start: int, stop: int,
                  names: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows [start, stop) of each named array of `layer` at committed `version`, across any stored split."""
        if isinstance(names, str) or not names:
            raise CheckpointError(f"names must be a non-empty sequence of array names, not {names!r}")
        ranges, stored = self._ranges(version, layer)
        rows = ranges[-1][1]
        start, stop = _check_int(start, "start"), _check_int(stop, "stop")
        if not start < stop <= rows:
            raise CheckpointError(f"rows [{start}, {stop}) are not inside the {rows} rows of layer {layer}")
        out = {}
        for name in names:
            _check_name(name, "array name")
            if stored is not None and name not in stored:
                raise CheckpointError(f"checkpoint {version} layer {layer} has no array {name!r} "
                                      f"(it has {sorted(stored)})")
            pieces = []
            for a, b in ranges:
                if b <= start or a >= stop:
                    continue
                key = f"{self.slice_key(version, layer, a, b)}/{name}"
                try:
                    pieces.append(self.store.get_rows(key, max(a, start) - a, min(b, stop) - a))
                except (MissingKey, IndexError, CorruptValue) as exc:
                    # To a caller a damaged slice is as unloadable as a missing one.
                    raise CheckpointError(f"checkpoint {version} layer {layer} has no usable {name!r} "
                                          f"in slice {a}-{b}: {exc}") from exc
            out[name] = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return out

    def read_model(self, version: int, depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) of layers 1..depth at committed `version`: the whole model, assembled from its slices."""
        layers = [self.read_layer(version, layer, ("W", "b")) for layer in range(1, depth + 1)]
        return [(arrays["W"], arrays["b"]) for arrays in layers]

    def read_layer(self, version: int, layer: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Every row of each named array of `layer` at committed `version`."""
        return self.read_rows(version, layer, 0, self._ranges(version, layer)[0][-1][1], names)

    # -- helpers ----------------------------------------------------------------------------------

    def _empty_manifest(self) -> dict:
        return {"run": self.run_id, "latest": None, "checkpoints": {}, "state": {}}

    def _ranges(self, version: int, layer: int) -> tuple[list[tuple[int, int]], dict | None]:
        """(row splits, {name: spec} or None if unrecorded) of `layer` at committed `version`."""
        version = _check_int(version, "version", _MAX_VERSION)
        layer = _check_int(layer, "layer")
        manifest = self.manifest()
        entry = None if manifest is None else manifest["checkpoints"].get(str(version))
        if entry is None:
            raise CheckpointError(f"checkpoint {version} of run {self.run_id!r} is not committed")
        layers = entry.get("layers") if isinstance(entry, dict) else None
        if not isinstance(layers, dict) or not layers.get(str(layer)):
            raise CheckpointError(f"checkpoint {version} has no layer {layer}")
        stored = entry.get("arrays", {}).get(str(layer)) if isinstance(entry.get("arrays"), dict) else None
        return _tiling(layer, layers[str(layer)]), stored


def _tiling(layer: int, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """`ranges` sorted, CheckpointError unless they tile [0, n) without gaps or overlaps."""
    if isinstance(ranges, (str, bytes)) or not ranges:
        raise CheckpointError(f"layer {layer} has no row ranges")
    parsed = []
    for r in ranges:
        if isinstance(r, (str, bytes)) or not isinstance(r, Sequence) or len(r) != 2:
            raise CheckpointError(f"a row range of layer {layer} is not a (start, stop) pair: {r!r}")
        parsed.append((_check_int(r[0], "row start"), _check_int(r[1], "row stop")))
    parsed.sort()
    edge = 0
    for a, b in parsed:
        if a != edge or b <= a:
            raise CheckpointError(f"row ranges of layer {layer} do not tile [0, n): {parsed}")
        edge = b
    return parsed


def _layer_arrays(version: int, layer: int, records: Mapping[tuple[int, int], object]) -> dict:
    """{name: {"dtype", "shape"}} of a layer, CheckpointError if its slices disagree on names, dtypes or widths."""
    summary: dict | None = None
    rows = 0
    for (a, b), record in sorted(records.items()):
        arrays = record.get("arrays") if isinstance(record, dict) else None
        if (not isinstance(arrays, dict) or record.get("rows") != [a, b]
                or not all(isinstance(s, dict) and isinstance(s.get("shape"), list) for s in arrays.values())):
            raise CheckpointError(f"slice record L{layer}/{a}-{b} of checkpoint {version} is malformed")
        specs = {n: (s.get("dtype"), tuple(s["shape"][1:])) for n, s in arrays.items()}
        if summary is not None and specs != summary:
            raise CheckpointError(f"slices of layer {layer} in checkpoint {version} hold different arrays")
        summary = specs
        rows = b
    return {n: {"dtype": d, "shape": [rows, *tail]} for n, (d, tail) in (summary or {}).items()}
