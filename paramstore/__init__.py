"""Parameter store: checkpoints of neuron weight slices in a key-value store chosen by URL scheme.

memory:// (in-process), file:///abs/dir or file://rel/dir (local directory), and later redis(s)://
and dynamodb://; a backend module is imported only when its scheme is opened.
"""
from __future__ import annotations

import importlib
from types import MappingProxyType
from urllib.parse import urlsplit

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
    redact_url,
)

# scheme -> (module, class, pip extra or None); imported only when used
BACKENDS = MappingProxyType({
    "memory": ("paramstore.memory", "MemoryStore", None),
    "file": ("paramstore.file", "FileStore", None),
    "redis": ("paramstore.redis", "RedisStore", "redis"),
    "rediss": ("paramstore.redis", "RedisStore", "redis"),
    "dynamodb": ("paramstore.dynamodb", "DynamoStore", "aws"),
})

# pip extra -> the top-level driver packages it installs
EXTRA_PACKAGES = MappingProxyType({"redis": ("redis",), "aws": ("boto3", "botocore")})


def open_store(url: str) -> Store:
    """Open the store backend that `url`'s scheme names (every call gives a new, independent instance)."""
    if not isinstance(url, str):
        raise TypeError(f"a store URL is a str, not {type(url).__name__}")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise UnknownScheme(url, BACKENDS) from exc
    if scheme not in BACKENDS:
        raise UnknownScheme(url, BACKENDS)
    module, cls, extra = BACKENDS[scheme]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise StoreError(f"the {scheme}:// store is not part of this version of cuttlefish") from exc
        top = (exc.name or "").partition(".")[0]
        if extra is None or top not in EXTRA_PACKAGES[extra]:
            raise
        raise MissingExtra(scheme, top, extra) from exc
    return getattr(mod, cls)(url)


__all__ = [
    "BACKENDS", "CheckpointError", "Checkpoints", "CorruptValue", "EXTRA_PACKAGES", "InvalidKey",
    "MissingExtra", "MissingKey", "Store", "StoreError", "StoreUnavailable", "UnknownScheme",
    "open_store", "redact_url",
]
