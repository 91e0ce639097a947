"""The key-value interface every store backend implements, plus the JSON and chunked-array layers built on it."""
from __future__ import annotations

import json
import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from broker.schemes import redact_url
from paramstore.errors import CorruptValue, InvalidKey, MissingKey, StoreError

MAX_KEY_LENGTH = 512
# Filesystems cap a name at 255 bytes; the file backend adds a suffix and temp-file decorations.
MAX_COMPONENT_LENGTH = 200
DEFAULT_CHUNK_BYTES = 256 * 1024
GUARDED_BYTES = 256 * 1024  # values written by put_many_if: manifests, leases, keys
# Little-endian dtype strings accepted by put_array; uint8 has no byte order, hence "|u1".
ARRAY_DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "|u1"})

_KEY_CHARS = re.compile(r"[A-Za-z0-9._:/=-]*")
_PUT_BATCH_BYTES = 4 * 1024 * 1024  # bounds the extra memory of one put_many while writing chunks


def _bad_components(parts: list[str]) -> bool:
    # "", "." and ".." components would let two keys name one file in the file backend (a//b, a/./b, a/../b).
    return any(p in ("", ".", "..") for p in parts)


class Store(ABC):
    """A thread-safe byte key-value store; subclasses implement get/put/delete/keys/put_many/close."""

    url: str

    def __init__(self, url: str) -> None:
        # Backends call this first; they then only implement the six abstract methods below.
        self.url = url
        self._closed = False

    # -- primitives -----------------------------------------------------------------------------

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The bytes stored at `key`, or None if it is missing or expired."""

    @abstractmethod
    def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` at `key`; with `ttl` (seconds) the key reads as missing once that time has passed."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is fine."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Sorted live keys starting with `prefix` ("" lists everything)."""

    @abstractmethod
    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store every item without TTL, atomically where the backend can (else each key atomically, in order)."""

    @abstractmethod
    def put_many_if(self, items: Mapping[str, bytes], expect: Mapping[str, bytes | None]) -> bool:
        """Atomically: if each key of `expect` holds its value (None: is absent), store `items`; False if not.

        The one compare-and-set primitive: a run's manifest, lease and key are written only through it.
        Values in `expect` and `items` are small (under 256 KB); `items` get no TTL.
        """

    @abstractmethod
    def close(self) -> None:
        """Release resources; the store is unusable afterwards."""

    def get_many(self, keys) -> list[bytes | None]:
        """The values of `keys`, in order (backends with a multi-get override this)."""
        return [self.get(k) for k in keys]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"

    # -- argument checks shared by every backend ------------------------------------------------

    @staticmethod
    def check_key(key: object) -> str:
        """`key` if it is a valid key, else InvalidKey."""
        if not isinstance(key, str) or not key:
            raise InvalidKey(f"a key must be a non-empty str, not {key!r}")
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidKey(f"key longer than {MAX_KEY_LENGTH} characters: {key[:40]!r}...")
        if not _KEY_CHARS.fullmatch(key):
            raise InvalidKey(f"key {key!r} has characters outside [A-Za-z0-9._:/=-]")
        parts = key.split("/")
        if key.startswith("/") or _bad_components(parts):
            raise InvalidKey(f"key {key!r} has a leading '/' or an empty, '.' or '..' component")
        if max(map(len, parts)) > MAX_COMPONENT_LENGTH:
            raise InvalidKey(f"key {key[:40]!r}... has a '/'-separated part longer than {MAX_COMPONENT_LENGTH}")
        return key

    @staticmethod
    def check_prefix(prefix: object) -> str:
        """`prefix` if it can start a valid key ("" included), else InvalidKey."""
        if not isinstance(prefix, str):
            raise InvalidKey(f"a key prefix must be a str, not {prefix!r}")
        if len(prefix) > MAX_KEY_LENGTH or not _KEY_CHARS.fullmatch(prefix):
            raise InvalidKey(f"prefix {prefix[:40]!r} cannot start any valid key")
        # The last component may be partial ("a/." prefixes "a/.x"), the others must be whole.
        if prefix.startswith("/") or _bad_components(prefix.split("/")[:-1]):
            raise InvalidKey(f"prefix {prefix!r} cannot start any valid key")
        return prefix

    @staticmethod
    def check_value(value: object) -> bytes:
        """`value` as bytes if it is bytes-like, else TypeError."""
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"store values are bytes, not {type(value).__name__}")

    @staticmethod
    def check_ttl(ttl: object) -> float | None:
        """`ttl` as float seconds (or None), else ValueError."""
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
            raise ValueError(f"ttl must be a positive finite number of seconds, not {ttl!r}")
        return float(ttl)

    def check_guarded(self, items: Mapping[str, bytes], expect: Mapping[str, bytes | None]) -> tuple[dict, dict]:
        """(items, expect) of a put_many_if with keys and values checked, else InvalidKey or TypeError."""
        checked = {self.check_key(k): self.check_value(v) for k, v in items.items()}
        wanted = {self.check_key(k): None if v is None else self.check_value(v) for k, v in expect.items()}
        if any(len(v) > GUARDED_BYTES for v in (*checked.values(), *filter(None, wanted.values()))):
            raise ValueError(f"a guarded value is at most {GUARDED_BYTES} bytes")
        return checked, wanted

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    # -- JSON -------------------------------------------------------------------------------------

    def put_json(self, key: str, obj: object) -> None:
        """Store `obj` as compact UTF-8 JSON (NaN and infinity refused with ValueError)."""
        self.put(key, dumps_json(obj))

    def get_json(self, key: str) -> object | None:
        """The JSON value at `key`, None if missing, CorruptValue if it is not valid JSON."""
        data = self.get(key)
        if data is None:
            return None
        return loads_json(key, data)

    # -- arrays -----------------------------------------------------------------------------------

    def put_array(self, key: str, arr: np.ndarray, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        """Store a finite 1-D/2-D numeric array as JSON meta at `key` plus raw little-endian row chunks."""
        self.check_key(key)
        arr = np.asarray(arr)
        dtype = arr.dtype.newbyteorder("<")
        if dtype.str not in ARRAY_DTYPES:
            raise TypeError(f"put_array stores float32/float64/int32/int64/uint8, not {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise ValueError(f"put_array stores 1-D or 2-D arrays, not shape {arr.shape}")
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be a positive int, not {chunk_bytes!r}")
        if dtype.kind == "f" and not np.isfinite(arr).all():
            raise CorruptValue(f"refusing to store non-finite values at {key!r}")
        arr = np.ascontiguousarray(arr, dtype=dtype)
        rows = arr.shape[0]
        row_bytes = arr[:1].nbytes if rows else 0
        step = max(1, chunk_bytes // row_bytes) if row_bytes else max(1, rows)
        chunks = [[a, min(a + step, rows)] for a in range(0, rows, step)]
        old = self._old_chunk_count(key)
        batch: dict[str, bytes] = {}
        size = 0
        for i, (a, b) in enumerate(chunks):
            batch[f"{key}/c{i}"] = arr[a:b].tobytes()
            size += (b - a) * row_bytes
            if size >= _PUT_BATCH_BYTES:
                self.put_many(batch)
                batch, size = {}, 0
        if batch:
            self.put_many(batch)
        # Meta last: a reader that sees it finds every chunk it names.
        self.put_json(key, {"dtype": dtype.str, "shape": list(arr.shape), "chunks": chunks})
        for i in range(len(chunks), old):
            self.delete(f"{key}/c{i}")

    def get_array(self, key: str) -> np.ndarray | None:
        """The array stored by put_array at `key`, or None if it is missing."""
        meta = self.get_json(key)
        if meta is None:
            return None
        dtype, shape, chunks = _parse_meta(key, meta)
        return self._read(key, dtype, shape, chunks, 0, shape[0])

    def get_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the array at `key` (elements for 1-D), reading only the chunks they overlap."""
        meta = self.get_json(key)
        if meta is None:
            raise MissingKey(f"no array at {key!r}")
        dtype, shape, chunks = _parse_meta(key, meta)
        start, stop = operator.index(start), operator.index(stop)
        if not 0 <= start <= stop <= shape[0]:
            raise IndexError(f"rows [{start}, {stop}) outside the {shape[0]} rows of {key!r}")
        return self._read(key, dtype, shape, chunks, start, stop)

    def _old_chunk_count(self, key: str) -> int:
        # Overwriting with fewer chunks must not leave the old tail behind; unreadable old meta is just replaced.
        try:
            meta = self.get_json(key)
            return len(_parse_meta(key, meta)[2]) if meta is not None else 0
        except CorruptValue:
            return 0

    def _read(self, key: str, dtype: np.dtype, shape: tuple[int, ...], chunks: list[tuple[int, int]],
              start: int, stop: int) -> np.ndarray:
        tail = shape[1:]
        row_bytes = dtype.itemsize * math.prod(tail)
        out = np.empty((stop - start, *tail), dtype=dtype.newbyteorder("="))
        wanted = [(i, a, b) for i, (a, b) in enumerate(chunks) if a < stop and b > start]
        values = self.get_many([f"{key}/c{i}" for i, _, _ in wanted])
        for (i, a, b), data in zip(wanted, values):
            if data is None:
                raise CorruptValue(f"chunk {i} of {key!r} is missing")
            if len(data) != (b - a) * row_bytes:
                raise CorruptValue(f"chunk {i} of {key!r} has {len(data)} bytes, meta says {(b - a) * row_bytes}")
            part = np.frombuffer(data, dtype=dtype).reshape((b - a, *tail))
            lo, hi = max(a, start), min(b, stop)
            out[lo - start:hi - start] = part[lo - a:hi - a]
        if dtype.kind == "f" and not np.isfinite(out).all():
            raise CorruptValue(f"non-finite values in rows [{start}, {stop}) of {key!r}")
        return out


def dumps_json(obj: object) -> bytes:
    """`obj` as the compact, sorted UTF-8 JSON that put_json stores (NaN and infinity refused)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_numpy_scalar).encode("utf-8")


def _numpy_scalar(obj: object) -> object:
    # Metrics handed to commit(info=...) are often numpy scalars, which json cannot encode itself.
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def loads_json(key: str, data: bytes) -> object:
    """The strict JSON value of `data` read at `key` (NaN, infinity and bad UTF-8 are CorruptValue)."""
    def refuse(name: str) -> float:
        raise CorruptValue(f"{name} in the JSON at {key!r}")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptValue(f"the value at {key!r} is not valid JSON") from exc


def _parse_meta(key: str, meta: object) -> tuple[np.dtype, tuple[int, ...], list[tuple[int, int]]]:
    """(dtype, shape, chunks) of array meta, CorruptValue unless chunks tile the rows exactly."""
    if not isinstance(meta, dict) or meta.get("dtype") not in ARRAY_DTYPES:
        raise CorruptValue(f"no array meta at {key!r}")
    shape, chunks = meta.get("shape"), meta.get("chunks")
    if (not isinstance(shape, list) or len(shape) not in (1, 2)
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise CorruptValue(f"bad shape {shape!r} in the array meta at {key!r}")
    if not isinstance(chunks, list):
        raise CorruptValue(f"bad chunk list in the array meta at {key!r}")
    parsed, edge = [], 0
    for c in chunks:
        if not (isinstance(c, list) and len(c) == 2 and all(type(n) is int for n in c) and c[0] == edge < c[1]):
            raise CorruptValue(f"chunks of the array meta at {key!r} do not tile its rows")
        parsed.append((c[0], c[1]))
        edge = c[1]
    if edge != shape[0]:
        raise CorruptValue(f"chunks of the array meta at {key!r} cover {edge} of {shape[0]} rows")
    return np.dtype(meta["dtype"]), tuple(shape), parsed
