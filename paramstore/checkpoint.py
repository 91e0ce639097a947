"""Checkpoint layout of one training run on any Store: per-neuron row slices, committed through the manifest.

A version exists for readers only once commit() lists it in the manifest, so a half-written checkpoint
(a neuron died mid-write) is never read. The keys are listed in paramstore/keys.py.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from paramstore.base import ARRAY_DTYPES, DEFAULT_CHUNK_BYTES, Store
from paramstore.errors import CheckpointError, CorruptValue, MissingKey
from paramstore.keys import MAX_VERSION, check_int, check_name
from paramstore.manifest import CheckpointEntry, Manifest
from paramstore.run import RunRecord


class Checkpoints:
    """Write, commit, read and prune the checkpoints of one training run."""

    def __init__(self, store: Store, run_id: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES, lease=None) -> None:
        self.store = store
        self.record = RunRecord(store, run_id, lease)
        self.keys = self.record.keys
        self.run_id = run_id
        self.chunk_bytes = chunk_bytes

    # -- writing ----------------------------------------------------------------------------------

    def write_slice(self, version: int, layer: int, start: int, stop: int,
                    arrays: Mapping[str, np.ndarray]) -> None:
        """Store rows [start, stop) of `layer` for `version`: each array has stop - start rows."""
        start, stop = check_int(start, "start"), check_int(stop, "stop")
        if start >= stop:
            raise CheckpointError(f"empty row range [{start}, {stop})")
        key = self.keys.slice(version, layer, start, stop)
        if not arrays:
            raise CheckpointError(f"no arrays for slice {key}")
        checked = {}
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.ndim not in (1, 2) or arr.shape[0] != stop - start:
                raise CheckpointError(f"array {name!r} of shape {arr.shape} is not {stop - start} rows")
            if arr.dtype.newbyteorder("<").str not in ARRAY_DTYPES:
                raise CheckpointError(f"array {name!r} has unsupported dtype {arr.dtype}")
            checked[check_name(name, "array name")] = arr
        for name, arr in checked.items():
            self.store.put_array(f"{key}/{name}", arr, chunk_bytes=self.chunk_bytes)
        # The record goes last: commit() takes its presence as proof that every array is complete.
        self.store.put_json(key, {"rows": [start, stop], "arrays": {
            name: {"dtype": arr.dtype.newbyteorder("<").str, "shape": list(arr.shape)}
            for name, arr in checked.items()}})

    def commit(self, version: int, splits: Mapping[int, Sequence[tuple[int, int]]],
               info: Mapping | None = None) -> Manifest:
        """Record `version` as written with these row splits per layer and make it the latest; returns the manifest."""
        version = check_int(version, "version", MAX_VERSION)
        if not splits:
            raise CheckpointError(f"checkpoint {version} names no layers")
        info = dict(info or {})
        layers, arrays, missing = {}, {}, []
        for layer, ranges in splits.items():
            layer = check_int(layer, "layer")
            ranges = _tiling(layer, ranges)
            layers[str(layer)] = [list(r) for r in ranges]
            records = {}
            for a, b in ranges:
                record = self.store.get_json(self.keys.slice(version, layer, a, b))
                if record is None:
                    missing.append(f"L{layer}/{a}-{b}")
                else:
                    records[(a, b)] = record
            if records:
                arrays[str(layer)] = _layer_arrays(version, layer, records)
        if missing:
            self.record.current()  # a store that lost the run's data explains the missing slices: RunDataLost
            shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
            raise CheckpointError(f"checkpoint {version} lacks {len(missing)} slice(s): {shown}")
        with self.record.lock:
            raw, manifest = self.record.current()  # never recreated: a vanished manifest is RunDataLost
            # A version below the latest is a rollback: the driver resumed from an older checkpoint.
            entries = {**manifest.checkpoints, version: CheckpointEntry(layers, arrays, info)}
            manifest = dataclasses.replace(manifest, checkpoints=entries, latest=version,
                                           state={**manifest.state, **info})
            # the manifest and the latest pointer switch together, after every slice was written
            self.record.write(manifest, raw, switch=True)
            return manifest

    def update_manifest(self, **fields: object) -> Manifest:
        """Merge top-level `fields` (e.g. status, generation) into the manifest; returns it."""
        return self.record.update(**fields)

    def prune(self, keep: int = 2) -> int:
        """Delete committed versions older than the newest `keep` (never the latest); returns keys deleted."""
        keep = check_int(keep, "keep")
        with self.record.lock:
            if self.manifest() is None:
                return 0
            raw, manifest = self.record.current()
            versions = sorted(manifest.checkpoints, reverse=True)
            retained = set(versions[:keep])
            if manifest.latest is not None:
                retained.add(manifest.latest)
            doomed = [v for v in versions if v not in retained]
            if not doomed:
                return 0
            kept = {v: e for v, e in manifest.checkpoints.items() if v not in doomed}
            # Manifest first: no reader is ever pointed at a version whose keys are going away.
            self.record.write(dataclasses.replace(manifest, checkpoints=kept), raw)
        deleted = 0
        for v in doomed:
            for key in self.store.keys(self.keys.version(v)):
                self.store.delete(key)
                deleted += 1
        return deleted

    # -- reading ----------------------------------------------------------------------------------

    def manifest(self) -> Manifest | None:
        """The run's manifest, or None before the first commit or update."""
        return self.record.manifest()

    def latest(self) -> int | None:
        """The latest committed version, or None."""
        return self.record.latest()

    def read_rows(self, version: int, layer: int, start: int, stop: int,
                  names: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows [start, stop) of each named array of `layer` at committed `version`, across any stored split."""
        if isinstance(names, str) or not names:
            raise CheckpointError(f"names must be a non-empty sequence of array names, not {names!r}")
        ranges, stored = self._ranges(version, layer)
        rows = ranges[-1][1]
        start, stop = check_int(start, "start"), check_int(stop, "stop")
        if not start < stop <= rows:
            raise CheckpointError(f"rows [{start}, {stop}) are not inside the {rows} rows of layer {layer}")
        out = {}
        for name in names:
            check_name(name, "array name")
            if stored is not None and name not in stored:
                raise CheckpointError(f"checkpoint {version} layer {layer} has no array {name!r} "
                                      f"(it has {sorted(stored)})")
            pieces = []
            for a, b in ranges:
                if b <= start or a >= stop:
                    continue
                key = f"{self.keys.slice(version, layer, a, b)}/{name}"
                try:
                    pieces.append(self._read_piece(key, max(a, start) - a, min(b, stop) - a, b - a))
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

    def _read_piece(self, key: str, start: int, stop: int, rows: int) -> np.ndarray:
        """Rows [start, stop) of the `rows`-row slice array at `key`: the whole array, or just those rows."""
        if (start, stop) != (0, rows):
            return self.store.get_rows(key, start, stop)
        whole = self.store.get_array(key)
        if whole is None:
            raise MissingKey(f"no array at {key!r}")
        if whole.shape[0] != rows:
            raise CorruptValue(f"the array at {key!r} has {whole.shape[0]} rows, its slice {rows}")
        return whole

    def _ranges(self, version: int, layer: int) -> tuple[list[tuple[int, int]], dict | None]:
        """(row splits, {name: spec} or None if unrecorded) of `layer` at committed `version`."""
        version = check_int(version, "version", MAX_VERSION)
        layer = check_int(layer, "layer")
        manifest = self.manifest()
        entry = None if manifest is None else manifest.checkpoints.get(version)
        if entry is None:
            raise CheckpointError(f"checkpoint {version} of run {self.run_id!r} is not committed")
        if not entry.layers.get(str(layer)):
            raise CheckpointError(f"checkpoint {version} has no layer {layer}")
        stored = entry.arrays.get(str(layer))
        return _tiling(layer, entry.layers[str(layer)]), stored


def _tiling(layer: int, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """`ranges` sorted, CheckpointError unless they tile [0, n) without gaps or overlaps."""
    if isinstance(ranges, (str, bytes)) or not ranges:
        raise CheckpointError(f"layer {layer} has no row ranges")
    parsed = []
    for r in ranges:
        if isinstance(r, (str, bytes)) or not isinstance(r, Sequence) or len(r) != 2:
            raise CheckpointError(f"a row range of layer {layer} is not a (start, stop) pair: {r!r}")
        parsed.append((check_int(r[0], "row start"), check_int(r[1], "row stop")))
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
        if (not isinstance(record, dict) or not isinstance(arrays, dict) or record.get("rows") != [a, b]
                or not all(isinstance(s, dict) and isinstance(s.get("shape"), list) for s in arrays.values())):
            raise CheckpointError(f"slice record L{layer}/{a}-{b} of checkpoint {version} is malformed")
        specs = {n: (s.get("dtype"), tuple(s["shape"][1:])) for n, s in arrays.items()}
        if summary is not None and specs != summary:
            raise CheckpointError(f"slices of layer {layer} in checkpoint {version} hold different arrays")
        summary = specs
        rows = b
    return {n: {"dtype": d, "shape": [rows, *tail]} for n, (d, tail) in (summary or {}).items()}
