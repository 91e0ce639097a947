"""Every store key of a run, in one place; names and numbers checked before they become keys.

Keys, for run R (versions zero-padded so that they sort):
  cuttlefish/R/manifest                                   the manifest (JSON): see manifest.py
  cuttlefish/R/latest                                     the latest committed version (decimal text)
  cuttlefish/R/key                                        the run's message key (32 random bytes)
  cuttlefish/R/lease                                      the driver's lease and fencing token (JSON), see lease.py
  cuttlefish/R/hb/{actor}                                 an actor's heartbeat (JSON, with a TTL)
  cuttlefish/R/scale-request                              a pending request to re-split a layer (JSON)
  cuttlefish/R/ckpt/{version:010d}/L{layer}/{a}-{b}       a checkpoint slice record (JSON), see checkpoint.py
  cuttlefish/R/ckpt/{version:010d}/L{layer}/{a}-{b}/{name}   one array of it (put_array meta, chunks under it)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from paramstore.base import Store
from paramstore.errors import CheckpointError, InvalidKey

ROOT = "cuttlefish/"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_VERSION = 10**10 - 1  # what fits the 10-digit key field


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
