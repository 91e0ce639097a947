"""A run's manifest as typed values: the manifest itself, its checkpoint entries, scale requests and rescales."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from paramstore.errors import CheckpointError, CorruptValue


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


_OPTIONAL = ("generation", "status", "topology", "schedule", "test_accuracy", "max_neurons")
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
    max_neurons: int | None = None  # the config's limit on the run's neurons, which rescales keep to
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
