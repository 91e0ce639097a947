"""Directory-backed store: one file per key, written durably and atomically (temp file, fsync, rename).

Key "a/b" lives in the file DIR/a/b@ (the "@" cannot occur in keys), so that "a" and "a/b" can both
exist: the array layout keeps meta at KEY and chunks at KEY/c0, KEY/c1, ...  Each file starts with a
16-byte header holding the expiry time, so a TTL and its value are replaced in one atomic rename.
"""
from __future__ import annotations

import fcntl
import os
import struct
import tempfile
import time
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from paramstore.base import Store
from paramstore.errors import CorruptValue, InvalidKey, StoreError, StoreUnavailable

SUFFIX = "@"
_HEADER = struct.Struct("<4sB3xd")  # magic, format version, padding, expiry in Unix seconds (0: never)
_MAGIC = b"CFKV"
_VERSION = 1
_PUT_ATTEMPTS = 5
LOCK_FILE = ".lock"  # no key file: those end with SUFFIX


def _path_of_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise StoreError(f"FileStore needs a file:// URL, not {url!r}")
    # file://runs/store is the relative directory runs/store, file:///srv/store the absolute /srv/store.
    path = unquote(parts.netloc + parts.path)
    if not path:
        raise StoreError(f"the file store URL {url!r} names no directory")
    return path


class FileStore(Store):
    """A store in a local directory, safe for threads and processes sharing it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        path = _path_of_url(url)
        try:
            os.makedirs(path, exist_ok=True)
            self.root = os.path.realpath(path)
        except OSError as exc:
            raise StoreUnavailable(url, "cannot create the store directory") from exc

    def _path(self, key: str) -> str:
        self.check_key(key)
        self._require_open()
        path = os.path.join(self.root, *key.split("/")) + SUFFIX
        # Key rules forbid "..", but a symlink inside the directory could still lead out of it.
        if os.path.commonpath([self.root, os.path.realpath(path)]) != self.root:
            raise InvalidKey(f"key {key!r} resolves outside the store directory")
        return path

    def get(self, key: str) -> bytes | None:
        """The bytes stored at `key`, or None if it is missing or expired."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(self.url, f"cannot read {key!r}") from exc
        if self._expired(key, data[:_HEADER.size]):
            return None
        return data[_HEADER.size:]

    def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` at `key` durably, expiring after `ttl` seconds when given."""
        path = self._path(key)
        value, ttl = self.check_value(value), self.check_ttl(ttl)
        # Wall-clock time, not monotonic: other processes (and later runs) read the expiry too.
        expiry = 0.0 if ttl is None else time.time() + ttl
        self._write(key, path, _HEADER.pack(_MAGIC, _VERSION, expiry) + value)

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is fine."""
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreUnavailable(self.url, f"cannot delete {key!r}") from exc
        # Best effort: drop directories left empty; stops at the first one that is not (or is gone).
        parent = os.path.dirname(path)
        while parent != self.root:
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)

    def keys(self, prefix: str) -> list[str]:
        """Sorted live keys starting with `prefix`; temp files and foreign files are skipped."""
        self.check_prefix(prefix)
        self._require_open()
        # Walk only the deepest directory the prefix pins down.
        base = prefix.rpartition("/")[0]
        top = os.path.join(self.root, *base.split("/")) if base else self.root
        found = []
        try:
            for dirpath, _dirs, files in os.walk(top):
                rel = os.path.relpath(dirpath, self.root)
                for name in files:
                    if not name.endswith(SUFFIX) or name.count(SUFFIX) != 1:
                        continue
                    parts = [] if rel == "." else rel.split(os.sep)
                    key = "/".join([*parts, name[:-len(SUFFIX)]])
                    if key.startswith(prefix) and self._live(key):
                        found.append(key)
        except OSError as exc:
            raise StoreUnavailable(self.url, f"cannot list keys under {prefix!r}") from exc
        return sorted(found)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store every item without TTL, each key atomically, in order (not all-or-nothing)."""
        checked = [(self._path(k), k, self.check_value(v)) for k, v in items.items()]
        header = _HEADER.pack(_MAGIC, _VERSION, 0.0)
        for path, key, value in checked:
            self._write(key, path, header + value)

    def put_many_if(self, items: Mapping[str, bytes], expect: Mapping[str, bytes | None]) -> bool:
        """Store `items` if every key of `expect` holds its value (None: absent), under the directory's lock.

        Every process sharing the directory takes the same lock file, so check and writes are one step.
        """
        checked, wanted = self.check_guarded(items, expect)
        self._require_open()
        try:
            lock = os.open(os.path.join(self.root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(self.url, "cannot open the store's lock file") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if any(self.get(k) != v for k, v in wanted.items()):
                return False
            self.put_many(checked)
            return True
        finally:
            os.close(lock)  # closing releases the lock

    def close(self) -> None:
        """Mark the store closed; it holds no open files between calls."""
        self._closed = True

    # -- helpers ------------------------------------------------------------------------------------

    def _expired(self, key: str, header: bytes) -> bool:
        if len(header) < _HEADER.size:
            raise CorruptValue(f"the file of {key!r} is truncated")
        magic, version, expiry = _HEADER.unpack(header)
        if magic != _MAGIC or version != _VERSION:
            raise CorruptValue(f"the file of {key!r} has no store header")
        return expiry != 0.0 and expiry <= time.time()

    def _live(self, key: str) -> bool:
        # Lists exactly what get() can read: stray names and symlinks leading out are skipped,
        # a corrupt file is listed (reading it reports the corruption).
        try:
            with open(self._path(key), "rb") as f:
                return not self._expired(key, f.read(_HEADER.size))
        except (InvalidKey, FileNotFoundError):
            return False  # FileNotFoundError: deleted while listing
        except CorruptValue:
            return True

    def _write(self, key: str, path: str, data: bytes) -> None:
        parent = os.path.dirname(path)
        try:
            for attempt in range(_PUT_ATTEMPTS):
                try:
                    _makedirs_durably(parent)
                    # The "@...tmp" name is never a key file, so keys() and readers ignore it.
                    fd, tmp = tempfile.mkstemp(dir=parent, prefix=os.path.basename(path), suffix=".tmp")
                    break
                except FileNotFoundError:
                    # A concurrent delete() removed a freshly made (empty) directory: make it again.
                    if attempt == _PUT_ATTEMPTS - 1:
                        raise
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            _fsync_dir(parent)
        except OSError as exc:
            raise StoreUnavailable(self.url, f"cannot write {key!r}") from exc


def _makedirs_durably(path: str) -> None:
    # Like os.makedirs, but a new directory's entry is fsynced too, else a crash could lose the whole subtree.
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass  # made by a concurrent writer
        _fsync_dir(os.path.dirname(directory))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # the original error matters more than a leftover temp file


def _fsync_dir(path: str) -> None:
    # Makes the rename itself durable; directories cannot be opened for fsync on Windows.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
