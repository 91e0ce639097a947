"""Fast unit tests of paramstore: URL redaction, the scheme table, file-store containment, write ordering."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import paramstore
from paramstore import (
    Checkpoints,
    InvalidKey,
    MissingExtra,
    StoreError,
    StoreUnavailable,
    UnknownScheme,
    open_store,
    redact_url,
)
from paramstore.file import FileStore
from paramstore.memory import MemoryStore


@pytest.mark.parametrize("url, expected", [
    ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
    ("rediss://:s3cret@host", "rediss://:***@host"),
    ("redis://us:er:s3c@ret@host/1", "redis://us:***@host/1"),
    ("dynamodb://t?region=eu-west-1&aws_secret_access_key=s3cret",
     "dynamodb://t?region=eu-west-1&aws_secret_access_key=***"),
    ("redis://host/0?password=s3cret&db=2", "redis://host/0?password=***&db=2"),
    ("redis://user@host", "redis://user@host"),
    ("memory://", "memory://"),
    ("file:///srv/store", "file:///srv/store"),
    ("file://runs/store", "file://runs/store"),
    ("not a url", "not a url"),
    ("redis://[::1", "<unparseable url>"),
    ("redis://:ab/cd@redis:6379/0", "redis://:***@redis:6379/0"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_store_unavailable_never_shows_the_password():
    try:
        try:
            raise ConnectionError("refused")
        except ConnectionError as exc:
            raise StoreUnavailable("redis://admin:hunter2@db:6379/0", "connect failed") from exc
    except StoreUnavailable as err:
        assert "hunter2" not in str(err) and "hunter2" not in err.url and "db:6379" in str(err)


def test_unknown_scheme_lists_known_ones_and_hides_password():
    with pytest.raises(UnknownScheme) as info:
        open_store("mongodb://root:hunter2@db/x")
    message = str(info.value)
    assert "hunter2" not in message
    for scheme in ("memory://", "file://", "redis://", "rediss://", "dynamodb://"):
        assert scheme in message
    with pytest.raises(UnknownScheme):
        open_store("no-scheme-at-all")


def test_open_store_memory_instances_are_independent():
    a, b = open_store("memory://"), open_store("memory://")
    assert isinstance(a, MemoryStore) and a.url == "memory://"
    a.put("k", b"1")
    assert b.get("k") is None


def test_open_store_file_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = open_store("file://runs/store")
    assert isinstance(rel, FileStore) and (tmp_path / "runs" / "store").is_dir()
    rel.put("a/b", b"x")
    absolute = open_store(f"file://{tmp_path}/runs/store")
    assert absolute.get("a/b") == b"x"  # a second instance, or process, sees durable writes
    with pytest.raises(StoreError):
        FileStore("file://")


def test_file_store_unusable_directory(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(StoreUnavailable):
        FileStore(f"file://{tmp_path}/plain/sub")


def _fake_backend(tmp_path, monkeypatch, module: str, body: str) -> None:
    """Make paramstore.<module> importable from tmp_path with `body` (the real one, once it exists, wins)."""
    (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.setattr(paramstore, "__path__", [*paramstore.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"paramstore.{module}", raising=False)


@pytest.mark.parametrize("url, module, driver, extra", [
    ("redis://localhost:6379/0", "redis", "redis", "redis"),
    ("rediss://:pw@localhost:6380/0", "redis", "redis", "redis"),
    ("dynamodb://cuttlefish?region=eu-west-1", "dynamodb", "boto3", "aws"),
])
def test_missing_driver_gives_pip_hint(tmp_path, monkeypatch, url, module, driver, extra):
    _fake_backend(tmp_path, monkeypatch, module, f"import {driver}\n")
    monkeypatch.setitem(sys.modules, driver, None)  # makes `import driver` fail as if not installed
    with pytest.raises(MissingExtra) as info:
        open_store(url)
    scheme = url.partition(":")[0]
    assert str(info.value) == (
        f"the {scheme}:// store needs the {driver} package: pip install {driver} "
        f"(or, in the Cuttlefish checkout, pip install -e '.[{extra}]')")
    assert f"paramstore.{module}" not in sys.modules


def test_other_import_errors_are_not_disguised(tmp_path, monkeypatch):
    # a backend of the redis extra whose own code imports something missing that is not its driver
    _fake_backend(tmp_path, monkeypatch, "cf_fake", "import cuttlefish_no_such_helper\n")
    monkeypatch.setattr(paramstore, "BACKENDS", {**paramstore.BACKENDS, "fake": ("paramstore.cf_fake", "X", "redis")})
    with pytest.raises(ModuleNotFoundError):
        open_store("fake://localhost")


# -- file store containment ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "a/../../b", "a/./b", "a//b"])
def test_file_store_rejects_escaping_keys(tmp_path, key):
    store = FileStore(f"file://{tmp_path}/store")
    with pytest.raises(InvalidKey):
        store.put(key, b"x")
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_file_store_refuses_symlinks_leading_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store = FileStore(f"file://{tmp_path}/store")
    os.symlink(outside, tmp_path / "store" / "link")
    (outside / "secret@").write_bytes(b"CFKV\x01\x00\x00\x00" + bytes(8) + b"secret")
    with pytest.raises(InvalidKey):
        store.put("link/x", b"x")
    with pytest.raises(InvalidKey):
        store.get("link/secret")
    assert os.listdir(outside) == ["secret@"]
    assert store.keys("") == [] and store.keys("link/") == []


def test_file_store_lists_only_its_own_files(tmp_path):
    store = FileStore(f"file://{tmp_path}")
    store.put("a/b", b"1")
    (tmp_path / "a" / "b@1234.tmp").write_bytes(b"half-written")  # a crashed writer's temp file
    (tmp_path / "a" / "notes.txt").write_bytes(b"")
    (tmp_path / "a" / "bad name@").write_bytes(b"")
    assert store.keys("") == ["a/b"]
    assert store.get("a/b") == b"1"


def test_file_store_removes_emptied_directories(tmp_path):
    store = FileStore(f"file://{tmp_path}")
    store.put("x/y/z", b"1")
    store.put("x/w", b"2")
    store.delete("x/y/z")
    assert sorted(os.listdir(tmp_path / "x")) == ["w@"]
    store.put("x/y/z", b"3")
    assert store.get("x/y/z") == b"3"


def test_file_store_ttl_seen_by_other_instances(tmp_path):
    FileStore(f"file://{tmp_path}").put("hb/n1", b"alive", ttl=60)
    assert FileStore(f"file://{tmp_path}").get("hb/n1") == b"alive"


# -- ordering and lifecycle ---------------------------------------------------------------------


class RecordingStore(MemoryStore):
    """A MemoryStore that logs the order in which keys are written."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def put(self, key, value, ttl=None):
        self.log.append(key)
        super().put(key, value, ttl)

    def put_many(self, items):
        self.log.extend(items)
        super().put_many(items)


def test_array_meta_is_written_last():
    store = RecordingStore()
    store.put_array("W", np.zeros((100, 10)), chunk_bytes=800)
    assert store.log[-1] == "W" and store.log[:-1] == [f"W/c{i}" for i in range(10)]


def test_slice_record_is_written_after_its_arrays():
    store = RecordingStore()
    Checkpoints(store, "run").write_slice(7, 1, 0, 2, {"W": np.zeros((2, 3)), "b": np.zeros(2)})
    record = "cuttlefish/run/ckpt/0000000007/L1/0-2"
    assert store.log[-1] == record
    assert {"W", "b"} == {k.rpartition("/")[2] for k in store.log[:-1] if not k.rpartition("/")[2].startswith("c")}


@pytest.mark.parametrize("run_id", ["", "a/b", "x" * 65, "sp ace", "..", None])
def test_run_id_validated(run_id):
    with pytest.raises(InvalidKey):
        Checkpoints(MemoryStore(), run_id)


def test_closed_store_refuses_use(tmp_path):
    for store in (MemoryStore(), FileStore(f"file://{tmp_path}")):
        with store:
            store.put("k", b"v")
        with pytest.raises(StoreError):
            store.get("k")


def test_a_redis_refusal_names_the_store_and_shows_no_bytes():
    import redis.exceptions as rex

    from paramstore.errors import StoreRefused
    from paramstore.redis import _refusal

    exc = rex.ResponseError("Command # 1 (MSET cuttlefish/r/ckpt/0000000001/L1/0-3/W/c0 b'\\x00\\x01\\xfe\\xff' "
                            "k2 b'\\x07') of pipeline caused error: OOM command not allowed when used memory > "
                            "'maxmemory'.")
    err = _refusal("redis://:secret@db:6379/0", exc)
    assert isinstance(err, StoreRefused)
    assert str(err) == ("the parameter store at redis://:***@db:6379/0 refused a write: "
                        "it is out of memory (maxmemory) (OOM)")
    other = _refusal("redis://db:6379/0", rex.ResponseError("Command # 2 (SET k b'\\x00') of pipeline caused error: "
                                                            "WRONGTYPE Operation against a key"))
    assert "\\x00" not in str(other) and "WRONGTYPE" in str(other)
    # redis-py strips the code word into the class; a refusal inside a script names the script
    scripted = _refusal("redis://db:6379/0", rex.OutOfMemoryError(
        "command not allowed when used memory > 'maxmemory'. script: 9646e8ef, on @user_script:12."))
    assert isinstance(scripted, StoreRefused) and "script" not in str(scripted)
    assert isinstance(_refusal("redis://db/0", rex.ReadOnlyError("You can't write against a read only replica.")),
                      StoreRefused)
