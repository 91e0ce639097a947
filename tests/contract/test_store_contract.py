"""One behavioural contract for every paramstore backend, plus the checkpoint layout on top of each.

Redis runs against CUTTLEFISH_TEST_REDIS_URL or a container, DynamoDB against CUTTLEFISH_TEST_DYNAMODB_URL
or a moto server (tests/services.py). Every test works
inside its own key namespace (`ns`), so shared services need no flushing between tests.
"""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paramstore import (
    CheckpointError,
    Checkpoints,
    CorruptValue,
    InvalidKey,
    open_store,
)
from paramstore.errors import LeaseHeld, LeaseLost, RunDataLost
from paramstore.lease import Lease

# backend name -> env var holding the URL of a service to test against
SERVICE_URL_ENV = {
    "redis": "CUTTLEFISH_TEST_REDIS_URL",
    "dynamodb": "CUTTLEFISH_TEST_DYNAMODB_URL",
}
# redis runs in a container and dynamodb in a moto server unless their URLs are given
BACKENDS = ["memory", "file", "redis", "dynamodb"]

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.uint8]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    """A fresh store of each backend."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "file":
        url = f"file://{tmp_path / 'store'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    with open_store(url) as s:
        yield s


@pytest.fixture
def ns(store):
    """A key prefix private to this test; its keys are removed afterwards."""
    prefix = f"t-{uuid.uuid4().hex[:12]}/"
    yield prefix
    for key in store.keys(prefix):
        store.delete(key)


@pytest.fixture
def ckpt(store, ns):
    """Checkpoints of a run whose id is unique to this test, with small chunks so slices span several."""
    checkpoints = Checkpoints(store, ns.rstrip("/"), chunk_bytes=64)
    checkpoints.record.create()
    yield checkpoints
    for key in store.keys(f"cuttlefish/{checkpoints.run_id}/"):
        store.delete(key)


# -- bytes --------------------------------------------------------------------------------------


def test_put_get_overwrite_delete(store, ns):
    assert store.get(ns + "a") is None
    store.put(ns + "a", b"one")
    assert store.get(ns + "a") == b"one"
    store.put(ns + "a", b"two")
    assert store.get(ns + "a") == b"two"
    store.delete(ns + "a")
    assert store.get(ns + "a") is None
    store.delete(ns + "a")  # missing is fine


def test_values_round_trip_exactly(store, ns):
    values = [b"", b"\x00", bytes(range(256)) * 3, b"CFKV\x01\x00\x00\x00" + b"\xff" * 20]
    for i, value in enumerate(values):
        store.put(f"{ns}v{i}", value)
    assert [store.get(f"{ns}v{i}") for i in range(len(values))] == values
    store.put(ns + "ba", bytearray(b"xy"))
    assert store.get(ns + "ba") == b"xy"
    with pytest.raises(TypeError):
        store.put(ns + "s", "not bytes")


def test_key_may_also_be_a_prefix_of_others(store, ns):
    store.put(ns + "a", b"1")
    store.put(ns + "a/b", b"2")
    store.put(ns + "a/b/c", b"3")
    assert (store.get(ns + "a"), store.get(ns + "a/b"), store.get(ns + "a/b/c")) == (b"1", b"2", b"3")
    store.delete(ns + "a/b")
    assert store.get(ns + "a") == b"1" and store.get(ns + "a/b/c") == b"3"


def test_keys_by_prefix_sorted(store, ns):
    for key in ["b", "a/2", "a/1", "a/10", "ab", "a.x", "c:d=e-f_g"]:
        store.put(ns + key, b"x")
    assert store.keys(ns) == [ns + k for k in sorted(["b", "a/2", "a/1", "a/10", "ab", "a.x", "c:d=e-f_g"])]
    assert store.keys(ns + "a/") == [ns + "a/1", ns + "a/10", ns + "a/2"]
    assert store.keys(ns + "a") == [ns + k for k in ["a.x", "a/1", "a/10", "a/2", "ab"]]
    assert store.keys(ns + "a/1") == [ns + "a/1", ns + "a/10"]
    assert store.keys(ns + "zzz") == []
    store.delete(ns + "a/1")
    assert store.keys(ns + "a/") == [ns + "a/10", ns + "a/2"]


@pytest.mark.parametrize("key", [
    "", "/abs", "a/../b", "..", "a/..", "a//b", "a/./b", "trailing/", "sp ace", "star*", "back\\slash",
    "new\nline", "ümlaut", "x" * 513, None, 7, b"bytes",
])
def test_invalid_keys_rejected(store, key):
    for op in (store.get, store.delete, lambda k: store.put(k, b"x"), lambda k: store.put_many({k: b"x"})):
        with pytest.raises(InvalidKey):
            op(key)


def test_longest_valid_key(store, ns):
    key = ns + "/".join(["k" * 200, "m" * 200, "n" * (512 - len(ns) - 402)])
    assert len(key) == 512
    store.put(key, b"x")
    assert store.get(key) == b"x" and store.keys(ns) == [key]
    with pytest.raises(InvalidKey):
        store.put(ns + "k" * 201, b"x")


@pytest.mark.parametrize("prefix", ["/x", "a//", "../", 3])
def test_invalid_prefixes_rejected(store, prefix):
    with pytest.raises(InvalidKey):
        store.keys(prefix)


def test_ttl_expiry(store, ns):
    store.put(ns + "hb", b"alive", ttl=0.2)
    store.put(ns + "plain", b"p")
    assert store.get(ns + "hb") == b"alive"
    assert store.keys(ns) == [ns + "hb", ns + "plain"]
    time.sleep(0.35)
    assert store.get(ns + "hb") is None
    assert store.keys(ns) == [ns + "plain"]
    store.put(ns + "hb", b"again", ttl=0.2)  # a heartbeat refreshes after expiry
    assert store.get(ns + "hb") == b"again"


def test_put_without_ttl_clears_it(store, ns):
    store.put(ns + "k", b"1", ttl=0.2)
    store.put(ns + "k", b"2")
    time.sleep(0.35)
    assert store.get(ns + "k") == b"2"


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "1", True])
def test_bad_ttl_rejected(store, ns, ttl):
    with pytest.raises(ValueError):
        store.put(ns + "k", b"x", ttl=ttl)
    assert store.get(ns + "k") is None


def test_put_many(store, ns):
    items = {f"{ns}m/{i}": bytes([i]) * i for i in range(20)}
    store.put_many(items)
    assert {k: store.get(k) for k in items} == items
    with pytest.raises(InvalidKey):  # checked before anything is written
        store.put_many({ns + "ok": b"1", ns + "../bad": b"2"})
    assert store.get(ns + "ok") is None


def test_put_many_if_is_a_compare_and_set(store, ns):
    a, b = ns + "guard", ns + "other"
    assert store.put_many_if({a: b"1", b: b"x"}, {a: None})  # create
    assert not store.put_many_if({a: b"2"}, {a: None})  # exists already
    assert not store.put_many_if({a: b"2", b: b"y"}, {a: b"0"})  # wrong value: nothing written
    assert (store.get(a), store.get(b)) == (b"1", b"x")
    assert store.put_many_if({a: b"2", b: b"y"}, {a: b"1"})
    assert (store.get(a), store.get(b)) == (b"2", b"y")
    assert store.put_many_if({b: b"z"}, {a: b"2", ns + "absent": None})  # a guard that is not written
    assert not store.put_many_if({b: b"w"}, {a: b"2", ns + "absent-too": b"?"})
    assert store.get(b) == b"z"
    store.delete(a)
    assert not store.put_many_if({b: b"v"}, {a: b"2"})  # a vanished guard is no match
    with pytest.raises(InvalidKey):
        store.put_many_if({ns + "../bad": b"1"}, {a: None})


def test_put_many_if_has_one_winner_among_threads(store, ns):
    key, wins = ns + "lease", []

    def contender(t):
        if store.put_many_if({key: str(t).encode()}, {key: None}):
            wins.append(t)

    threads = [threading.Thread(target=contender, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.get(key) == str(wins[0]).encode()


def test_json_round_trip(store, ns):
    obj = {"a": [1, 2.5, None, True], "b": {"c": "ü"}, "n": -0.0}
    store.put_json(ns + "j", obj)
    assert store.get_json(ns + "j") == obj
    assert store.get_json(ns + "missing") is None
    store.put(ns + "bad", b"{not json")
    with pytest.raises(CorruptValue):
        store.get_json(ns + "bad")
    store.put(ns + "nan", b"[NaN]")
    with pytest.raises(CorruptValue):
        store.get_json(ns + "nan")
    with pytest.raises(ValueError):
        store.put_json(ns + "x", {"v": float("nan")})
    store.put_json(ns + "np", {"loss": np.float32(0.5), "step": np.int64(3)})
    assert store.get_json(ns + "np") == {"loss": 0.5, "step": 3}
    with pytest.raises(TypeError):
        store.put_json(ns + "x", {"v": object()})


def test_concurrent_puts_from_threads(store, ns):
    errors = []

    def neuron(t):
        try:
            for i in range(25):
                store.put(f"{ns}n{t}/{i}", f"{t}:{i}".encode())
                store.put(ns + "shared", f"{t}:{i}".encode() * 100)
                store.put_array(f"{ns}arr{t}", np.full((10, 5), t + i, dtype=np.float32), chunk_bytes=40)
                assert store.get_array(f"{ns}arr{t}")[0, 0] == t + i
        except Exception as exc:  # noqa: BLE001 - reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=neuron, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(store.get(f"{ns}n{t}/{i}") == f"{t}:{i}".encode() for t in range(8) for i in range(25))
    shared = store.get(ns + "shared")
    assert shared in {f"{t}:{i}".encode() * 100 for t in range(8) for i in range(25)}


# -- arrays -------------------------------------------------------------------------------------


def _specials(dtype):
    if np.issubdtype(dtype, np.floating):
        info = np.finfo(dtype)
        return np.array([0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal, info.tiny,
                         info.max, info.min, info.eps, 1 / 3, -2.5], dtype=dtype)
    info = np.iinfo(dtype)
    return np.array([0, 1, info.min, info.max, info.max - 1, info.min + 1, 7, 42, 100, 3], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip_bit_exactly(store, ns, dtype):
    vec = _specials(dtype)
    mat = np.stack([vec, vec[::-1], np.roll(vec, 3)])
    for key, arr in [("vec", vec), ("mat", mat), ("col", mat.T), ("empty", vec[:0])]:
        store.put_array(ns + key, arr)
        back = store.get_array(ns + key)
        assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
        assert back.tobytes() == np.ascontiguousarray(arr).tobytes()
    assert np.signbit(store.get_array(ns + "vec")[:2]).tolist() == ([False, True] if vec.dtype.kind == "f"
                                                                     else [False, False])


def test_big_endian_input_is_stored_little_endian(store, ns):
    arr = np.arange(12, dtype=">f8").reshape(3, 4)
    store.put_array(ns + "be", arr)
    assert store.get_json(ns + "be")["dtype"] == "<f8"
    np.testing.assert_array_equal(store.get_array(ns + "be"), arr)


@pytest.mark.parametrize("arr", [np.zeros((2, 2, 2)), np.float64(1.0), np.zeros(3, dtype=np.float16),
                                 np.zeros(3, dtype=complex), np.array(["a"])])
def test_unsupported_arrays_rejected(store, ns, arr):
    with pytest.raises((TypeError, ValueError)):
        store.put_array(ns + "x", arr)
    assert store.keys(ns) == []


def test_non_finite_arrays_rejected(store, ns):
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(CorruptValue):
            store.put_array(ns + "x", np.array([1.0, bad]))
    assert store.keys(ns) == []


def test_chunking_and_row_reads(store, ns):
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((1000, 300))
    store.put_array(ns + "W", arr, chunk_bytes=64 * 1024)
    meta = store.get_json(ns + "W")
    rows_per_chunk = 64 * 1024 // (300 * 8)
    assert meta["dtype"] == "<f8" and meta["shape"] == [1000, 300]
    assert len(meta["chunks"]) == -(-1000 // rows_per_chunk) > 1
    assert meta["chunks"][0] == [0, rows_per_chunk] and meta["chunks"][-1][1] == 1000
    assert all(len(store.get(f"{ns}W/c{i}")) <= 64 * 1024 for i in range(len(meta["chunks"])))
    assert store.keys(ns + "W/") == sorted(f"{ns}W/c{i}" for i in range(len(meta["chunks"])))
    np.testing.assert_array_equal(store.get_array(ns + "W"), arr)

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.integers(0, 1000), st.integers(0, 1000))
    def rows_equal_slicing(a, b):
        start, stop = min(a, b), max(a, b)
        got = store.get_rows(ns + "W", start, stop)
        assert got.shape == (stop - start, 300)
        assert got.tobytes() == arr[start:stop].tobytes()

    rows_equal_slicing()
    for start, stop in [(-1, 3), (5, 4), (0, 1001)]:
        with pytest.raises(IndexError):
            store.get_rows(ns + "W", start, stop)


def test_row_wider_than_chunk_gets_own_chunk(store, ns):
    arr = np.arange(30, dtype=np.int64).reshape(3, 10)
    store.put_array(ns + "w", arr, chunk_bytes=8)
    assert store.get_json(ns + "w")["chunks"] == [[0, 1], [1, 2], [2, 3]]
    np.testing.assert_array_equal(store.get_rows(ns + "w", 1, 3), arr[1:])


def test_vector_rows_are_elements(store, ns):
    vec = np.arange(100, dtype=np.int32)
    store.put_array(ns + "v", vec, chunk_bytes=40)
    assert len(store.get_json(ns + "v")["chunks"]) == 10
    np.testing.assert_array_equal(store.get_rows(ns + "v", 7, 33), vec[7:33])


def test_overwrite_with_fewer_chunks_drops_old_tail(store, ns):
    store.put_array(ns + "a", np.zeros((10, 4)), chunk_bytes=32)
    store.put_array(ns + "a", np.ones((3, 4)), chunk_bytes=32)
    assert store.keys(ns + "a/") == [ns + "a/c0", ns + "a/c1", ns + "a/c2"]
    np.testing.assert_array_equal(store.get_array(ns + "a"), np.ones((3, 4)))


def test_get_rows_reads_only_overlapping_chunks(store, ns):
    arr = np.arange(40, dtype=np.float32).reshape(10, 4)
    store.put_array(ns + "a", arr, chunk_bytes=32)  # two rows per chunk
    store.delete(ns + "a/c0")
    np.testing.assert_array_equal(store.get_rows(ns + "a", 2, 7), arr[2:7])
    with pytest.raises(CorruptValue):
        store.get_rows(ns + "a", 1, 3)


def test_corrupt_chunk_length_detected(store, ns):
    arr = np.arange(40, dtype=np.float64).reshape(10, 4)
    store.put_array(ns + "a", arr, chunk_bytes=64)
    store.put(ns + "a/c1", store.get(ns + "a/c1")[:-1])
    with pytest.raises(CorruptValue):
        store.get_array(ns + "a")
    with pytest.raises(CorruptValue):
        store.get_rows(ns + "a", 3, 4)
    np.testing.assert_array_equal(store.get_rows(ns + "a", 0, 2), arr[:2])


def test_corrupt_chunk_values_detected(store, ns):
    store.put_array(ns + "a", np.zeros(4))
    store.put(ns + "a/c0", np.array([0.0, np.nan, 0.0, 0.0]).tobytes())
    with pytest.raises(CorruptValue):
        store.get_array(ns + "a")


@pytest.mark.parametrize("meta", [
    b"not json", b"[]", b'{"dtype": "<f2", "shape": [1], "chunks": [[0, 1]]}',
    b'{"dtype": "<f8", "shape": [4], "chunks": [[0, 2]]}',
    b'{"dtype": "<f8", "shape": [4], "chunks": [[0, 2], [3, 4]]}',
    b'{"dtype": "<f8", "shape": [2, 2, 2], "chunks": []}',
    b'{"dtype": "<f8", "shape": [-1], "chunks": []}',
])
def test_corrupt_meta_detected(store, ns, meta):
    store.put(ns + "a", meta)
    with pytest.raises(CorruptValue):
        store.get_array(ns + "a")


def test_missing_array(store, ns):
    assert store.get_array(ns + "nope") is None
    with pytest.raises(LookupError):
        store.get_rows(ns + "nope", 0, 1)


# -- checkpoints --------------------------------------------------------------------------------

SPLITS = [(0, 3), (3, 5), (5, 7)]


def _layer(seed, rows=7, fan_in=4):
    rng = np.random.default_rng(seed)
    return {"W": rng.standard_normal((rows, fan_in)), "b": rng.standard_normal(rows),
            "mW": rng.standard_normal((rows, fan_in)), "vW": rng.random((rows, fan_in)).astype(np.float32)}


def _write(ckpt, version, full, layer=1, splits=SPLITS):
    for a, b in splits:
        ckpt.write_slice(version, layer, a, b, {k: v[a:b] for k, v in full.items()})


def test_checkpoint_layout_and_reads(ckpt, store):
    full = _layer(1)
    _write(ckpt, 3, full)
    assert ckpt.manifest().checkpoints == {} and ckpt.latest() is None
    manifest = ckpt.commit(3, {1: SPLITS}, info={"step": 3, "loss": 0.5})
    assert manifest == ckpt.manifest()
    assert manifest["run"] == ckpt.run_id and manifest["latest"] == 3 == ckpt.latest()
    assert manifest["checkpoints"]["3"]["layers"] == {"1": [[0, 3], [3, 5], [5, 7]]}
    assert manifest["checkpoints"]["3"]["info"] == {"step": 3, "loss": 0.5}
    assert manifest["state"] == {"step": 3, "loss": 0.5}
    assert store.get_array(f"cuttlefish/{ckpt.run_id}/ckpt/0000000003/L1/3-5/W").shape == (2, 4)
    names = ["W", "b", "mW", "vW"]
    for start in range(7):
        for stop in range(start + 1, 8):
            got = ckpt.read_rows(3, 1, start, stop, names)
            for name in names:
                assert got[name].dtype == full[name].dtype
                assert got[name].tobytes() == full[name][start:stop].tobytes()
    layer = ckpt.read_layer(3, 1, ("W", "b"))
    assert set(layer) == {"W", "b"}
    np.testing.assert_array_equal(layer["W"], full["W"])


def test_resplit_reads(ckpt):
    full = _layer(2)
    _write(ckpt, 1, full)
    ckpt.commit(1, {1: SPLITS})
    new_split = [(0, 2), (2, 6), (6, 7)]
    parts = [ckpt.read_rows(1, 1, a, b, ["W", "b"]) for a, b in new_split]
    np.testing.assert_array_equal(parts[1]["W"], full["W"][2:6])
    np.testing.assert_array_equal(parts[1]["b"], full["b"][2:6])
    # The re-split neurons write the next version in their own split, and it reads back whole.
    _write(ckpt, 2, {k: np.concatenate([p[k] for p in parts]) for k in ("W", "b")}, splits=new_split)
    ckpt.commit(2, {1: new_split})
    np.testing.assert_array_equal(ckpt.read_layer(2, 1, ["W"])["W"], full["W"])
    np.testing.assert_array_equal(ckpt.read_rows(2, 1, 1, 7, ["b"])["b"], full["b"][1:])


def test_several_layers(ckpt):
    l1, l2 = _layer(3), _layer(4, rows=5, fan_in=7)
    _write(ckpt, 10, l1, layer=1)
    _write(ckpt, 10, l2, layer=2, splits=[(0, 5)])
    ckpt.commit(10, {1: SPLITS, 2: [(0, 5)]})
    np.testing.assert_array_equal(ckpt.read_rows(10, 2, 1, 4, ["W"])["W"], l2["W"][1:4])
    with pytest.raises(CheckpointError):
        ckpt.read_rows(10, 3, 0, 1, ["W"])


def test_uncommitted_version_is_unreadable(ckpt):
    _write(ckpt, 5, _layer(5))
    with pytest.raises(CheckpointError):
        ckpt.read_rows(5, 1, 0, 3, ["W"])
    ckpt.commit(5, {1: SPLITS})
    _write(ckpt, 6, _layer(6))
    with pytest.raises(CheckpointError):
        ckpt.read_layer(6, 1, ["W"])
    assert ckpt.latest() == 5


def test_commit_with_missing_slice_fails(ckpt):
    full = _layer(7)
    _write(ckpt, 1, full)
    ckpt.commit(1, {1: SPLITS})
    _write(ckpt, 2, full, splits=SPLITS[:2])
    with pytest.raises(CheckpointError, match="5-7"):
        ckpt.commit(2, {1: SPLITS})
    assert ckpt.latest() == 1 and "2" not in ckpt.manifest()["checkpoints"]
    with pytest.raises(CheckpointError):
        ckpt.commit(2, {1: [(0, 3), (3, 5)], 2: [(0, 4)]})


@pytest.mark.parametrize("splits", [
    {1: [(0, 3), (4, 7)]}, {1: [(0, 3), (2, 7)]}, {1: [(1, 3)]}, {1: [(0, 3), (3, 3)]}, {1: []}, {},
    {1: [(0, 3, 5)]}, {-1: [(0, 3)]},
])
def test_commit_rejects_splits_that_do_not_tile(ckpt, splits):
    _write(ckpt, 1, _layer(8))
    with pytest.raises(CheckpointError):
        ckpt.commit(1, splits)
    assert ckpt.manifest().latest is None


def test_commit_rejects_disagreeing_slices(ckpt):
    full = _layer(9)
    ckpt.write_slice(1, 1, 0, 3, {"W": full["W"][:3], "b": full["b"][:3]})
    ckpt.write_slice(1, 1, 3, 7, {"W": full["W"][3:]})
    with pytest.raises(CheckpointError):
        ckpt.commit(1, {1: [(0, 3), (3, 7)]})


def test_read_errors(ckpt):
    _write(ckpt, 1, _layer(10))
    ckpt.commit(1, {1: SPLITS})
    for start, stop in [(0, 8), (3, 3), (4, 2)]:
        with pytest.raises(CheckpointError):
            ckpt.read_rows(1, 1, start, stop, ["W"])
    with pytest.raises(CheckpointError, match="nope"):
        ckpt.read_rows(1, 1, 0, 2, ["W", "nope"])
    with pytest.raises(CheckpointError):
        ckpt.read_rows(1, 1, 0, 2, "W")


def test_damaged_slice_reads_as_checkpoint_error(ckpt, store):
    _write(ckpt, 1, _layer(11))
    ckpt.commit(1, {1: SPLITS})
    store.delete(f"cuttlefish/{ckpt.run_id}/ckpt/0000000001/L1/3-5/W")
    np.testing.assert_array_equal(ckpt.read_rows(1, 1, 0, 3, ["W"])["W"], _layer(11)["W"][:3])
    with pytest.raises(CheckpointError):
        ckpt.read_rows(1, 1, 2, 4, ["W"])


def test_write_slice_validation(ckpt, store):
    good = np.zeros((3, 2))
    for args in [(1, 1, 3, 3, {"W": good}), (1, 1, 0, 3, {"W": np.zeros((2, 2))}), (1, 1, 0, 3, {}),
                 (1, 1, 0, 3, {"W": good, "h": np.zeros(3, dtype=np.float16)}),
                 (-1, 1, 0, 3, {"W": good}), (1, -1, 0, 3, {"W": good}), (10**10, 1, 0, 3, {"W": good})]:
        with pytest.raises(CheckpointError):
            ckpt.write_slice(*args)
    for name in ["", "a/b", "..", "x" * 65, "sp ace"]:
        with pytest.raises(InvalidKey):
            ckpt.write_slice(1, 1, 0, 3, {name: good})
    assert store.keys(f"cuttlefish/{ckpt.run_id}/ckpt/") == []


def test_update_manifest(ckpt):
    manifest = ckpt.update_manifest(status="running", generation=1)
    assert manifest["status"] == "running" and manifest["latest"] is None
    _write(ckpt, 1, _layer(12))
    ckpt.commit(1, {1: SPLITS}, info={"step": 1})
    manifest = ckpt.update_manifest(history=[{"gen": 1}], status="done")
    assert manifest == ckpt.manifest()
    assert (manifest["status"], manifest["generation"], manifest["history"], manifest["latest"]) == (
        "done", 1, [{"gen": 1}], 1)
    for field in ("latest", "checkpoints", "run"):
        with pytest.raises(CheckpointError):
            ckpt.update_manifest(**{field: None})


def test_prune_keeps_newest_and_latest(ckpt, store):
    for version in (1, 2, 3, 4):
        _write(ckpt, version, _layer(version))
        ckpt.commit(version, {1: SPLITS})
    before = len(store.keys(f"cuttlefish/{ckpt.run_id}/ckpt/"))
    deleted = ckpt.prune(keep=2)
    assert deleted == before - len(store.keys(f"cuttlefish/{ckpt.run_id}/ckpt/")) > 0
    assert sorted(ckpt.manifest()["checkpoints"]) == ["3", "4"] and ckpt.latest() == 4
    assert store.keys(f"cuttlefish/{ckpt.run_id}/ckpt/0000000001/") == []
    assert store.keys(f"cuttlefish/{ckpt.run_id}/ckpt/0000000002/") == []
    with pytest.raises(CheckpointError):
        ckpt.read_rows(2, 1, 0, 1, ["W"])
    np.testing.assert_array_equal(ckpt.read_layer(4, 1, ["W"])["W"], _layer(4)["W"])
    np.testing.assert_array_equal(ckpt.read_layer(3, 1, ["W"])["W"], _layer(3)["W"])
    assert ckpt.prune(keep=0) > 0
    assert list(ckpt.manifest()["checkpoints"]) == ["4"] and ckpt.prune(keep=0) == 0
    np.testing.assert_array_equal(ckpt.read_layer(4, 1, ["b"])["b"], _layer(4)["b"])


def test_prune_keeps_latest_after_rollback(ckpt):
    for version in (10, 20, 30):
        _write(ckpt, version, _layer(version))
        ckpt.commit(version, {1: SPLITS})
    _write(ckpt, 15, _layer(15))  # the driver resumed from 10 and checkpointed again
    ckpt.commit(15, {1: SPLITS})
    assert ckpt.latest() == 15
    ckpt.prune(keep=1)
    assert sorted(ckpt.manifest()["checkpoints"], key=int) == ["15", "30"]
    np.testing.assert_array_equal(ckpt.read_layer(15, 1, ["W"])["W"], _layer(15)["W"])


def test_runs_are_isolated(store, ns):
    a, b = Checkpoints(store, ns.rstrip("/") + "a"), Checkpoints(store, ns.rstrip("/") + "a.b")
    a.record.create()
    _write(a, 1, _layer(13))
    a.commit(1, {1: SPLITS})
    assert b.manifest() is None
    with pytest.raises(CheckpointError):
        b.read_rows(1, 1, 0, 1, ["W"])
    for key in store.keys(f"cuttlefish/{a.run_id}/"):
        store.delete(key)


def test_one_driver_holds_a_run_and_a_superseded_one_cannot_write(store, ns):
    run, guarded = ns.rstrip("/") + "lease", ns + "manifest"
    first = Lease(store, run, ttl=30)
    assert first.acquire() == 1
    assert first.put_guarded({guarded: b"1"}, {guarded: None})
    with pytest.raises(LeaseHeld, match="second driver is refused"):
        Lease(store, run, ttl=30).acquire()
    t0 = time.monotonic()
    with pytest.raises(LeaseHeld):  # a resuming driver watching a lease that its live holder renews
        waiter = Lease(store, run, ttl=30)
        threading.Timer(0.3, first.renew).start()
        waiter.acquire(wait=5)
    assert time.monotonic() - t0 < 3
    first.renew()
    # the holder stops renewing (paused, partitioned): once the lease has expired another driver takes it
    store.put(first.key, store.get(first.key).replace(b'"expires":', b'"expires":1,"was":'))
    second = Lease(store, run, ttl=30)
    assert second.acquire() == 2
    assert not first.put_guarded({guarded: b"stale"}, {guarded: b"1"})
    assert not first.held() and isinstance(first.why_lost(), LeaseLost)
    assert "token 1" in str(first.why_lost()) and "token 2" in str(first.why_lost())
    with pytest.raises(LeaseLost):
        first.renew()
    assert second.put_guarded({guarded: b"2"}, {guarded: b"1"}) and store.get(guarded) == b"2"
    second.release()
    assert Lease(store, run, ttl=30).acquire() == 3  # released: taken at once, the token still grows
    store.delete(first.key)  # the store lost the run's data
    assert isinstance(second.why_lost(), RunDataLost)


def test_a_run_is_created_once_and_never_recreated(ckpt, store):
    with pytest.raises(CheckpointError, match="already exists"):
        ckpt.record.create()
    key = ckpt.record.message_key()
    assert len(key) == 32 and ckpt.record.create_message_key() == key
    _write(ckpt, 1, _layer(14))
    ckpt.commit(1, {1: SPLITS})
    for k in store.keys(f"cuttlefish/{ckpt.run_id}/"):  # the store lost everything (restarted empty)
        store.delete(k)
    _write(ckpt, 2, _layer(14))
    with pytest.raises(RunDataLost, match="no longer has the manifest"):
        ckpt.commit(2, {1: SPLITS})
    with pytest.raises(RunDataLost):
        ckpt.update_manifest(generation=3)
    assert ckpt.manifest() is None and ckpt.latest() is None


def test_a_superseded_driver_cannot_commit(store, ns):
    run = ns.rstrip("/") + "fenced"
    first = Lease(store, run, ttl=30)
    first.acquire()
    old = Checkpoints(store, run, lease=first)
    old.record.create(status="running")
    _write(old, 1, _layer(15))
    store.put(first.key, store.get(first.key).replace(b'"expires":', b'"expires":1,"was":'))  # it went silent
    second = Lease(store, run, ttl=30)
    second.acquire()
    with pytest.raises(LeaseLost, match="stops without committing"):
        old.commit(1, {1: SPLITS})
    with pytest.raises(LeaseLost):
        old.update_manifest(status="stale")
    assert Checkpoints(store, run).manifest().latest is None
    Checkpoints(store, run, lease=second).commit(1, {1: SPLITS})
    assert Checkpoints(store, run).latest() == 1
    for k in store.keys(f"cuttlefish/{run}/"):
        store.delete(k)
