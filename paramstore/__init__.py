"""Parameter store: a key-value store chosen by URL scheme, holding each run's record and checkpoints.

memory:// (in-process), file:///abs/dir or file://rel/dir (a local directory), redis(s):// and
dynamodb://TABLE?region=R; a backend module is imported only when its scheme is opened. keys.py names a
run's keys, manifest.py types its manifest, run.py reads and writes its record, checkpoint.py its weight slices.
"""
from __future__ import annotations

from types import MappingProxyType

from broker.schemes import STORE_PASSWORD_FILE_ENV, Backend, SchemeErrors, load_backend, redact_url, with_password
from paramstore.base import Store
from paramstore.checkpoint import Checkpoints
from paramstore.errors import (
    CheckpointError,
    CorruptValue,
    InvalidKey,
    MissingExtra,
    MissingKey,
    StoreError,
    StoreUnavailable,
    UnknownScheme,
)

# scheme -> (module, class, pip extra or None); imported only when used
BACKENDS = MappingProxyType({
    "memory": Backend("paramstore.memory", "MemoryStore", None),
    "file": Backend("paramstore.file", "FileStore", None),
    "redis": Backend("paramstore.redis", "RedisStore", "redis"),
    "rediss": Backend("paramstore.redis", "RedisStore", "redis"),
    "dynamodb": Backend("paramstore.dynamodb", "DynamoStore", "aws"),
})

# pip extra -> the top-level driver packages it installs
EXTRA_PACKAGES = MappingProxyType({"redis": ("redis",), "aws": ("boto3", "botocore")})


_ERRORS = SchemeErrors(
    unknown=lambda url: UnknownScheme(url, BACKENDS),
    not_included=lambda scheme: StoreError(f"the {scheme}:// store is not part of this version of cuttlefish"),
    missing_extra=MissingExtra,
)


def open_store(url: str) -> Store:
    """Open the store backend that `url`'s scheme names (every call gives a new, independent instance)."""
    if not isinstance(url, str):
        raise TypeError(f"a store URL is a str, not {type(url).__name__}")
    url = with_password(url, STORE_PASSWORD_FILE_ENV)
    return load_backend(url, BACKENDS, EXTRA_PACKAGES, _ERRORS)(url)


__all__ = [
    "BACKENDS", "CheckpointError", "Checkpoints", "CorruptValue", "EXTRA_PACKAGES", "InvalidKey",
    "MissingExtra", "MissingKey", "Store", "StoreError", "StoreUnavailable", "UnknownScheme",
    "open_store", "redact_url",
]
