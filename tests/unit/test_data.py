"""Unit tests for orchestrator.data: IDX parsing, MNIST loading, folder resolution, batching, image decoding."""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import shutil
import struct
import zlib

import numpy as np
import pytest

from orchestrator.data import mnist as data
from orchestrator.errors import DataError

MNIST_DIR = pathlib.Path("/work/shared/datasets/mnist")
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(arr: np.ndarray, type_byte: int = 0x08) -> bytes:
    """Encode a uint8 array as IDX."""
    header = b"\x00\x00" + bytes([type_byte, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def make_mnist_dir(folder: pathlib.Path, n_train: int = 12, n_test: int = 7, gz: bool = True) -> None:
    """Write a tiny but well-formed MNIST folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for (img, lab), n in ((data.SPLITS["train"], n_train), (data.SPLITS["test"], n_test)):
        for name, arr in ((img, rng.integers(0, 256, (n, 28, 28))), (lab, np.arange(n) % 10)):
            payload = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """Isolate from the user's environment: empty cache under tmp, no CUTTLEFISH_DATA, unreachable mirrors."""
    monkeypatch.delenv("CUTTLEFISH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "MIRRORS", ("http://127.0.0.1:9/",))
    return tmp_path


# --- IDX -------------------------------------------------------------------------------------------

def test_parse_idx_good():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = data.parse_idx(idx_bytes(arr))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 7  # the result must own writable memory


def test_parse_idx_1d():
    out = data.parse_idx(idx_bytes(np.array([3, 1, 4], dtype=np.uint8)))
    np.testing.assert_array_equal(out, [3, 1, 4])


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", b"PK\x03\x04"])
def test_parse_idx_bad_magic(raw):
    with pytest.raises(DataError, match="myfile.*not an IDX"):
        data.parse_idx(raw, "myfile")


def test_parse_idx_truncated_data():
    raw = idx_bytes(np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="truncated"):
        data.parse_idx(raw[:-1])


def test_parse_idx_trailing_bytes():
    raw = idx_bytes(np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="trailing"):
        data.parse_idx(raw + b"\x00")


def test_parse_idx_truncated_header():
    with pytest.raises(DataError, match="truncated IDX header"):
        data.parse_idx(b"\x00\x00\x08\x03\x00\x00\x00\x02")


@pytest.mark.parametrize("type_byte", [0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x42])
def test_parse_idx_wrong_type(type_byte):
    raw = idx_bytes(np.zeros((2,), np.uint8), type_byte)
    with pytest.raises(DataError, match=f"0x{type_byte:02X}.*not supported"):
        data.parse_idx(raw, "x.idx")


def test_read_idx_file_gzip_detected_by_content(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(arr))  # misleading name, raw content
    (tmp_path / "packed.bin").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(data.read_idx_file(tmp_path / "plain.gz"), arr)
    np.testing.assert_array_equal(data.read_idx_file(str(tmp_path / "packed.bin")), arr)


def test_read_idx_file_errors(tmp_path):
    with pytest.raises(DataError, match="missing.idx"):
        data.read_idx_file(tmp_path / "missing.idx")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"hello")[:-6])
    with pytest.raises(DataError, match="bad.gz.*gzip"):
        data.read_idx_file(bad)


# --- real MNIST ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_mnist():
    if not MNIST_DIR.is_dir():
        pytest.skip(f"{MNIST_DIR} not present")
    return MNIST_DIR


def test_load_real_mnist_gzip(real_mnist):
    train = data.load_mnist("train", real_mnist, verify=True)
    test = data.load_mnist("test", str(real_mnist), verify=True)
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 784) and train.images.dtype == np.uint8
    assert train.labels.shape == (60000,) and train.labels.dtype == np.uint8
    assert np.bincount(train.labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(test.labels, minlength=10).tolist() == TEST_COUNTS


def test_load_real_mnist_raw(real_mnist, tmp_path):
    for name in data.SPLITS["test"]:
        (tmp_path / name).write_bytes(gzip.decompress((real_mnist / f"{name}.gz").read_bytes()))
    test = data.load_mnist("test", tmp_path, verify=True)
    assert np.bincount(test.labels, minlength=10).tolist() == TEST_COUNTS
    gz = data.load_mnist("test", real_mnist)
    np.testing.assert_array_equal(test.images, gz.images)
    # row-major flattening as stored: row 0 of image 0 is its first 28 bytes
    raw = (tmp_path / data.SPLITS["test"][0]).read_bytes()
    np.testing.assert_array_equal(test.images[0, :28], np.frombuffer(raw[16:44], np.uint8))


def test_verify_detects_tampering(tmp_path, clean_env):
    make_mnist_dir(tmp_path / "d")
    assert len(data.load_mnist("train", tmp_path / "d")) == 12
    with pytest.raises(DataError, match="sha256"):
        data.load_mnist("train", tmp_path / "d", verify=True)


def test_load_mnist_validation(tmp_path, clean_env):
    folder = tmp_path / "d"
    make_mnist_dir(folder)
    with pytest.raises(DataError, match="split"):
        data.load_mnist("valid", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(DataError, match="do not belong together"):
        data.load_mnist("test", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(7, 10, np.uint8))))
    with pytest.raises(DataError, match="label 10"):
        data.load_mnist("test", folder)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((7, 27, 28)))))
    with pytest.raises(DataError, match=r"\(N, 28, 28\)"):
        data.load_mnist("test", folder)


def test_dataset_checks_shapes():
    ds = data.Dataset(np.zeros((3, 784), np.uint8), np.zeros(3, np.uint8))
    assert len(ds) == 3
    with pytest.raises(DataError):
        data.Dataset(np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(DataError):
        data.Dataset(np.zeros((3, 784), np.uint8), np.zeros(4, np.uint8))


# --- resolve_data_dir / download ------------------------------------------------------------------

def test_resolve_precedence(tmp_path, clean_env, monkeypatch):
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", tmp_path / "xdg" / "cuttlefish" / "mnist"
    for folder in (explicit, env, cache):
        make_mnist_dir(folder)
    assert data.resolve_data_dir(download=False) == cache
    monkeypatch.setenv("CUTTLEFISH_DATA", str(env))
    assert data.resolve_data_dir(download=False) == env
    assert data.resolve_data_dir(str(explicit), download=False) == explicit


def test_resolve_cache_falls_back_to_home(tmp_path, clean_env, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    home_cache = tmp_path / "home" / ".cache" / "cuttlefish" / "mnist"
    make_mnist_dir(home_cache, gz=False)
    assert data.resolve_data_dir(download=False) == home_cache


def test_resolve_raw_and_gz_mix(tmp_path, clean_env):
    folder = tmp_path / "mix"
    make_mnist_dir(folder)
    for name in NAMES[:2]:
        gz = folder / f"{name}.gz"
        (folder / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert data.resolve_data_dir(str(folder), download=False) == folder
    assert len(data.load_mnist("train", folder)) == 12


def test_explicit_missing_files_named(tmp_path, clean_env, monkeypatch):
    folder = tmp_path / "partial"
    make_mnist_dir(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    make_mnist_dir(tmp_path / "xdg" / "cuttlefish" / "mnist")  # must not be used as a fallback
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as info:
        data.resolve_data_dir(str(folder))
    assert "train-images" not in str(info.value).split("lacks")[1].split(";")[0]
    monkeypatch.setenv("CUTTLEFISH_DATA", str(folder))
    with pytest.raises(DataError, match="CUTTLEFISH_DATA.*t10k-labels-idx1-ubyte"):
        data.resolve_data_dir()
    # the train split does not need the missing test labels
    assert len(data.load_mnist("train")) == 12
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist("test")


def test_explicit_not_a_directory(tmp_path, clean_env):
    with pytest.raises(DataError, match="does not exist"):
        data.resolve_data_dir(str(tmp_path / "nope"))


def test_nothing_found_without_download(clean_env):
    with pytest.raises(DataError, match="downloading disabled.*--data"):
        data.resolve_data_dir(download=False)


def test_download_unreachable(tmp_path, clean_env):
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="downloading MNIST.*failed.*127.0.0.1:9.*--data DIR.*CUTTLEFISH_DATA"):
        data.download_mnist(dest, timeout=2.0)
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial files left behind


def test_resolve_download_unreachable(clean_env):
    with pytest.raises(DataError, match="downloading MNIST"):
        data.resolve_data_dir()
    with pytest.raises(DataError, match="downloading MNIST"):
        data.load_mnist("test")


def test_download_tries_mirrors_in_order_and_checks_hash(tmp_path, clean_env, monkeypatch):
    dest = tmp_path / "dl"
    payloads = {n: b"content of " + n.encode() for n in NAMES}
    monkeypatch.setattr(data, "SHA256", {n: hashlib.sha256(p).hexdigest() for n, p in payloads.items()})
    fetched = []

    class FakeResponse:
        def __init__(self, body):
            self.body = body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.body

    def fake_urlopen(url, timeout):
        fetched.append(url)
        if url.startswith("https://bad/"):
            return FakeResponse(gzip.compress(b"tampered"))
        return FakeResponse(gzip.compress(payloads[url.rsplit("/", 1)[1][:-3]]))

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(data, "MIRRORS", ("https://bad/", "https://good/"))
    data.download_mnist(dest)
    assert fetched == [f"{m}{n}.gz" for n in NAMES for m in ("https://bad/", "https://good/")]
    for name in NAMES:
        assert gzip.decompress((dest / f"{name}.gz").read_bytes()) == payloads[name]
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    monkeypatch.setattr(data, "MIRRORS", ("https://bad/",))
    shutil.rmtree(dest)
    with pytest.raises(DataError, match="downloading MNIST.*sha256"):
        data.download_mnist(dest)


# --- inputs, order, batches ------------------------------------------------------------------------

def test_to_inputs():
    images = np.array([[0] * 783 + [255], [128] * 784], dtype=np.uint8)
    out = data.to_inputs(images, np.float32)
    assert out.dtype == np.float32 and out.shape == (2, 784)
    assert out[0, -1] == 1.0 and out[0, 0] == 0.0
    np.testing.assert_array_equal(out, images.astype(np.float32) / np.float32(255))
    assert data.to_inputs(images.reshape(2, 28, 28), "float64").shape == (2, 784)
    with pytest.raises(TypeError):
        data.to_inputs(images, np.int32)


def test_epoch_order():
    plain = data.epoch_order(10, 3, 42, False)
    np.testing.assert_array_equal(plain, np.arange(10))
    a = data.epoch_order(1000, 2, 7, True)
    np.testing.assert_array_equal(a, data.epoch_order(1000, 2, 7, True))
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))
    np.testing.assert_array_equal(a, np.random.default_rng([7, 2]).permutation(1000))
    assert not np.array_equal(a, data.epoch_order(1000, 3, 7, True))
    assert not np.array_equal(a, data.epoch_order(1000, 2, 8, True))
    assert data.epoch_order(0, 0, 0, True).shape == (0,)


def test_batch_slices():
    assert data.batch_slices(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert data.batch_slices(8, 4) == [(0, 4), (4, 8)]
    assert data.batch_slices(3, 10) == [(0, 3)]
    assert data.batch_slices(0, 4) == []
    with pytest.raises(ValueError):
        data.batch_slices(10, 0)


# --- load_images: PNG and .npy ---------------------------------------------------------------------

def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_row(ftype: int, row: bytes, prior: bytes, bpp: int) -> bytes:
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ftype]
        out.append((x - pred) % 256)
    return bytes([ftype]) + bytes(out)


def encode_png(rows: list[bytes], width: int, height: int, depth: int, color: int, bpp: int,
               extra: list[tuple[bytes, bytes]] = (), interlace: int = 0) -> bytes:
    """Tiny PNG encoder: row y uses filter type y % 5."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    prior = bytes(len(rows[0]))
    stream = b""
    for y, row in enumerate(rows):
        stream += _filter_row(y % 5, row, prior, bpp)
        prior = row
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    body = chunk(b"IHDR", ihdr) + b"".join(chunk(k, v) for k, v in extra)
    # split IDAT in two to exercise concatenation
    z = zlib.compress(stream)
    body += chunk(b"IDAT", z[:10]) + chunk(b"IDAT", z[10:]) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def png_from_array(pixels: np.ndarray, color: int, depth: int = 8, **kw) -> bytes:
    """Encode an (H, W, C) array in the given PNG color type (depth 8 or 16)."""
    h, w, ch = pixels.shape
    dt = ">u2" if depth == 16 else np.uint8
    rows = [pixels[y].astype(dt).tobytes() for y in range(h)]
    return encode_png(rows, w, h, depth, color, ch * depth // 8, **kw)


RNG = np.random.default_rng(1234)


def lum(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def as_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1)


def test_png_gray8(tmp_path):
    gray = RNG.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    (tmp_path / "g.png").write_bytes(png_from_array(gray, 0))
    out = data.load_images([str(tmp_path / "g.png")])
    assert out.dtype == np.uint8 and out.shape == (1, 784)
    np.testing.assert_array_equal(out[0], gray.reshape(-1))


def test_png_gray16(tmp_path):
    gray = RNG.integers(0, 65536, (28, 28, 1), dtype=np.uint16)
    (tmp_path / "g.png").write_bytes(png_from_array(gray, 0, depth=16))
    out = data.load_images([tmp_path / "g.png"])
    np.testing.assert_array_equal(out[0], as_u8(gray[..., 0] * (255.0 / 65535)))


def test_png_gray_alpha(tmp_path):
    ga = RNG.integers(0, 256, (28, 28, 2), dtype=np.uint8)
    (tmp_path / "ga.png").write_bytes(png_from_array(ga, 4))
    out = data.load_images([tmp_path / "ga.png"])
    np.testing.assert_array_equal(out[0], as_u8(ga[..., 0] * (ga[..., 1] / 255.0)))


def test_png_rgb(tmp_path):
    rgb = RNG.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    (tmp_path / "c.png").write_bytes(png_from_array(rgb, 2))
    out = data.load_images([tmp_path / "c.png"])
    np.testing.assert_array_equal(out[0], as_u8(lum(rgb)))


def test_png_rgba_composited_on_black(tmp_path):
    rgba = RNG.integers(0, 256, (28, 28, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 255, 255, 0)  # fully transparent white -> black
    rgba[0, 1] = (255, 255, 255, 255)
    (tmp_path / "c.png").write_bytes(png_from_array(rgba, 6))
    out = data.load_images([tmp_path / "c.png"])
    np.testing.assert_array_equal(out[0], as_u8(lum(rgba[..., :3]) * (rgba[..., 3] / 255.0)))
    assert out[0, 0] == 0 and out[0, 1] == 255


def test_png_rgba16(tmp_path):
    rgba = RNG.integers(0, 65536, (28, 28, 4), dtype=np.uint16)
    (tmp_path / "c.png").write_bytes(png_from_array(rgba, 6, depth=16))
    out = data.load_images([tmp_path / "c.png"])
    scaled = rgba * (255.0 / 65535)
    np.testing.assert_array_equal(out[0], as_u8(lum(scaled[..., :3]) * (scaled[..., 3] / 255.0)))


def test_png_palette_with_trns(tmp_path):
    palette = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]], np.uint8)
    trns = bytes([255, 128])  # entries 2.. are opaque by default
    index = RNG.integers(0, 4, (28, 28, 1), dtype=np.uint8)
    blob = png_from_array(index, 3, extra=[(b"PLTE", palette.tobytes()), (b"tRNS", trns)])
    (tmp_path / "p.png").write_bytes(blob)
    alpha = np.array([255, 128, 255, 255])[index[..., 0]] / 255.0
    expected = as_u8(lum(palette[index[..., 0]]) * alpha)
    np.testing.assert_array_equal(data.load_images([tmp_path / "p.png"])[0], expected)


def test_png_palette_4bit(tmp_path):
    palette = np.stack([np.arange(16) * 17] * 3, axis=1).astype(np.uint8)
    index = RNG.integers(0, 16, (28, 28), dtype=np.uint8)
    rows = [bytes((index[y, 2 * i] << 4) | index[y, 2 * i + 1] for i in range(14)) for y in range(28)]
    blob = encode_png(rows, 28, 28, 4, 3, 1, extra=[(b"PLTE", palette.tobytes())])
    (tmp_path / "p4.png").write_bytes(blob)
    expected = as_u8(lum(palette[index]))
    np.testing.assert_array_equal(data.load_images([tmp_path / "p4.png"])[0], expected)


def test_png_errors(tmp_path):
    gray = np.zeros((27, 28, 1), np.uint8)
    (tmp_path / "small.png").write_bytes(png_from_array(gray, 0))
    with pytest.raises(DataError, match="small.png.*28x27.*28x28"):
        data.load_images([tmp_path / "small.png"])
    (tmp_path / "inter.png").write_bytes(png_from_array(np.zeros((28, 28, 1), np.uint8), 0, interlace=1))
    with pytest.raises(DataError, match="inter.png: interlaced PNG not supported"):
        data.load_images([tmp_path / "inter.png"])
    good = png_from_array(np.zeros((28, 28, 1), np.uint8), 0)
    corrupt = bytearray(good)
    corrupt[40] ^= 0xFF
    (tmp_path / "crc.png").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="crc.png"):
        data.load_images([tmp_path / "crc.png"])
    (tmp_path / "trunc.png").write_bytes(good[:-20])
    with pytest.raises(DataError, match="trunc.png"):
        data.load_images([tmp_path / "trunc.png"])
    bad_plte = png_from_array(np.zeros((28, 28, 1), np.uint8), 3, extra=[(b"PLTE", b"\x00" * 4)])
    (tmp_path / "plte.png").write_bytes(bad_plte)
    with pytest.raises(DataError, match="plte.png: PLTE"):
        data.load_images([tmp_path / "plte.png"])
    no_plte = png_from_array(np.zeros((28, 28, 1), np.uint8), 3)
    (tmp_path / "noplte.png").write_bytes(no_plte)
    with pytest.raises(DataError, match="noplte.png: palette PNG without"):
        data.load_images([tmp_path / "noplte.png"])
    (tmp_path / "note.txt").write_text("hello")
    with pytest.raises(DataError, match="note.txt.*not a PNG or .npy"):
        data.load_images([tmp_path / "note.txt"])
    with pytest.raises(DataError, match="absent.png"):
        data.load_images([tmp_path / "absent.png"])


@pytest.mark.parametrize("shape", [(28, 28), (784,), (3, 28, 28), (3, 784)])
def test_npy_uint8_shapes(tmp_path, shape):
    arr = RNG.integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    out = data.load_images([str(tmp_path / "a.npy")])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr.reshape(-1, 784))


def test_npy_float_scales(tmp_path):
    base = RNG.integers(0, 256, (2, 784), dtype=np.uint8)
    np.save(tmp_path / "unit.npy", (base / 255.0).astype(np.float32))
    np.save(tmp_path / "byte.npy", base.astype(np.float64))
    out = data.load_images([tmp_path / "unit.npy", tmp_path / "byte.npy"])
    assert out.shape == (4, 784)
    np.testing.assert_array_equal(out[:2], base)
    np.testing.assert_array_equal(out[2:], base)


def test_npy_errors(tmp_path):
    np.save(tmp_path / "shape.npy", np.zeros((28, 27), np.uint8))
    with pytest.raises(DataError, match="shape.npy.*shape"):
        data.load_images([tmp_path / "shape.npy"])
    np.save(tmp_path / "neg.npy", np.full((28, 28), -1.0))
    with pytest.raises(DataError, match="neg.npy"):
        data.load_images([tmp_path / "neg.npy"])
    np.save(tmp_path / "big.npy", np.full((28, 28), 300.0))
    with pytest.raises(DataError, match="big.npy"):
        data.load_images([tmp_path / "big.npy"])
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan))
    with pytest.raises(DataError, match="nan.npy"):
        data.load_images([tmp_path / "nan.npy"])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        data.load_images([tmp_path / "obj.npy"])


def test_mixed_inputs_concatenate(tmp_path):
    gray = RNG.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    (tmp_path / "g.png").write_bytes(png_from_array(gray, 0))
    np.save(tmp_path / "a.npy", np.zeros((2, 784), np.uint8))
    out = data.load_images([str(tmp_path / "a.npy"), str(tmp_path / "g.png")])
    assert out.shape == (3, 784)
    np.testing.assert_array_equal(out[2], gray.reshape(-1))
    assert data.load_images([]).shape == (0, 784)
