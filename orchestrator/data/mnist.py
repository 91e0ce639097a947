"""MNIST loading (IDX, gzip or raw), data-folder resolution, batching, and the images predict reads.

PNG decoding is in png.py.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import pathlib
import struct
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Sequence

import numpy as np

from neuron.kernels import scale_pixels
from orchestrator.data.png import PNG_MAGIC, png_grayscale
from orchestrator.errors import ConfigError, DataError, raise_all

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
SHA256 = MappingProxyType({
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
})
SPLITS = MappingProxyType({
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
})
ENV_VAR = "CUTTLEFISH_DATA"
IMAGE_SIDE = 28
IMAGE_SIZE = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10

_IDX_TYPES = MappingProxyType({
    0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64",
})
_GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"
_HINT = ("pass --data DIR or set CUTTLEFISH_DATA to a folder holding the MNIST IDX files "
         "(" + ", ".join(f"{n}[.gz]" for n in SHA256) + ")")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A split of MNIST: uint8 images of shape (N, 784) and uint8 labels of shape (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        """Reject arrays that break the (N, 784) uint8 / (N,) uint8 contract."""
        im, lb = self.images, self.labels
        if (im.dtype != np.uint8 or im.shape[1:] != (IMAGE_SIZE,) or lb.dtype != np.uint8
                or lb.shape != im.shape[:1]):
            raise DataError(f"Dataset needs uint8 images (N, {IMAGE_SIZE}) and uint8 labels (N,); "
                            f"got images {im.dtype} {im.shape}, labels {lb.dtype} {lb.shape}")

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.labels.shape[0])


def check_fits(num_inputs: int, num_classes: int, **datasets: Dataset | None) -> None:
    """ConfigError naming the config key and both numbers when a network cannot take the data sets given by name.

    Checked before any neuron starts: a network too narrow for the images, or with fewer classes than the
    labels, would only be found out by neurons rejecting every message.
    """
    problems = []
    for name, data in datasets.items():
        if data is None or not len(data):
            continue
        pixels, top = data.images.shape[1], int(data.labels.max())
        if num_inputs != pixels:
            problems.append(ConfigError("neural_network.num_inputs",
                                        f"is {num_inputs}, but the {name} set's images have {pixels} pixels"))
        if num_classes <= top:
            problems.append(ConfigError("neural_network.num_classes",
                                        f"is {num_classes}, but the {name} set's labels go up to {top} "
                                        f"(so {top + 1} classes are needed)"))
        if problems:
            break  # the other sets are MNIST's too: one set tells it
    raise_all(problems)


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an uncompressed IDX (unsigned byte) payload into an array of its dimensions."""
    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise DataError(f"{name}: not an IDX file (bad magic {raw[:4].hex() or 'empty'}); "
                        "expected 0000 + type byte + ndim byte, e.g. an MNIST *-ubyte file")
    type_byte, ndim = raw[2], raw[3]
    if type_byte != 0x08:
        kind = _IDX_TYPES.get(type_byte, "unknown")
        raise DataError(f"{name}: IDX element type 0x{type_byte:02X} ({kind}) is not supported; "
                        "only 0x08 (unsigned byte) is, as used by MNIST")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes, need {header} "
                        f"for {ndim} dimensions); the file is damaged, fetch it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(dims)
    if len(raw) != header + count:
        state = "truncated" if len(raw) < header + count else "has trailing bytes"
        raise DataError(f"{name}: IDX data {state}: dims {dims} need {header + count} bytes, "
                        f"file has {len(raw)}; the file is damaged, fetch it again")
    # Copy so the array owns writable memory instead of pinning the (immutable) input bytes.
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims).copy()


def _read_bytes(path: os.PathLike | str) -> bytes:
    """Read a file, transparently gunzipping it when it starts with the gzip magic."""
    try:
        raw = pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc}); fetch the file again") from exc
    return raw


def read_idx_file(path: os.PathLike | str) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by content) or raw."""
    return parse_idx(_read_bytes(path), str(path))


def _find(directory: pathlib.Path, name: str) -> pathlib.Path | None:
    """Return the raw or gzipped copy of an IDX file in directory, preferring raw (faster)."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(directory: pathlib.Path, names: Sequence[str]) -> list[str]:
    """Names among `names` with neither a raw nor a .gz copy in directory."""
    return [n for n in names if _find(directory, n) is None]


def _cache_dir() -> pathlib.Path:
    """The per-user download cache: $XDG_CACHE_HOME (if absolute) or ~/.cache, plus cuttlefish/mnist."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = pathlib.Path(xdg) if os.path.isabs(xdg) else pathlib.Path(os.path.expanduser("~")) / ".cache"
    return base / "cuttlefish" / "mnist"


def _checked_dir(path: pathlib.Path, origin: str, names: Sequence[str]) -> pathlib.Path:
    """Return path if it holds all names, else fail loudly rather than fall back elsewhere."""
    if not path.is_dir():
        raise DataError(f"data folder {path} (from {origin}) does not exist or is not a directory; {_HINT}")
    missing = _missing(path, names)
    if missing:
        raise DataError(f"data folder {path} (from {origin}) lacks "
                        + ", ".join(f"{n}[.gz]" for n in missing) + f"; {_HINT}")
    return path


def _resolve(explicit: str | os.PathLike | None, download: bool, names: Sequence[str]) -> pathlib.Path:
    """Locate a folder holding `names` (see resolve_data_dir for the order)."""
    if explicit is not None and str(explicit) != "":
        return _checked_dir(pathlib.Path(explicit).expanduser(), "--data", names)
    env = os.environ.get(ENV_VAR, "")
    if env:
        return _checked_dir(pathlib.Path(env).expanduser(), f"${ENV_VAR}", names)
    cache = _cache_dir()
    if cache.is_dir() and not _missing(cache, names):
        return cache
    if not download:
        raise DataError(f"MNIST not found: no --data, no ${ENV_VAR}, and the cache {cache} "
                        f"lacks the files (downloading disabled); {_HINT}")
    download_mnist(cache)
    return cache


def resolve_data_dir(explicit: str | None = None, *, download: bool = True) -> pathlib.Path:
    """Find the MNIST folder: explicit, then $CUTTLEFISH_DATA, then the cache (downloading if allowed)."""
    return _resolve(explicit, download, tuple(SHA256))


def _sha256_ok(data: bytes, name: str) -> bool:
    """Whether decompressed content matches the published checksum for name."""
    return hashlib.sha256(data).hexdigest() == SHA256[name]


def _write_atomic(target: pathlib.Path, payload: bytes) -> None:
    """Write payload via a temp file + os.replace so readers never see a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(url: str, timeout: float, name: str) -> bytes:
    """Download one .gz and return it, raising ValueError/OSError-family errors on any problem."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https mirrors)
        payload = resp.read()
    try:
        content = gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"not valid gzip data ({exc})") from exc
    if not _sha256_ok(content, name):
        raise ValueError("sha256 of the decompressed content does not match the published checksum")
    return payload


def download_mnist(dest: pathlib.Path, *, timeout: float = 30.0) -> None:
    """Download the four MNIST .gz files into dest from the public mirrors, verifying sha256."""
    dest = pathlib.Path(dest)
    for name in SHA256:
        reasons = []
        for mirror in MIRRORS:
            url = f"{mirror}{name}.gz"
            try:
                payload = _fetch(url, timeout, name)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                reasons.append(f"{url}: {exc}")
                continue
            try:
                _write_atomic(dest / f"{name}.gz", payload)
            except OSError as exc:
                raise DataError(f"downloading MNIST failed: cannot write {dest / name}.gz "
                                f"({exc}); {_HINT}") from exc
            break
        else:
            raise DataError(f"downloading MNIST into {dest} failed for {name}: "
                            + "; ".join(reasons or ["no mirrors configured"]) + f". {_HINT}")


def load_mnist(split: str, data_dir: str | os.PathLike | None = None, *, verify: bool = False) -> Dataset:
    """Load the "train" or "test" split as a Dataset with images flattened to (N, 784)."""
    if split not in SPLITS:
        raise DataError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    directory = _resolve(data_dir, True, SPLITS[split])
    arrays = []
    for name in SPLITS[split]:
        path = _find(directory, name)
        if path is None:
            raise DataError(f"{directory / name}[.gz] disappeared while loading; {_HINT}")
        raw = _read_bytes(path)
        if verify and not _sha256_ok(raw, name):
            raise DataError(f"{path}: sha256 of the decompressed content does not match the published "
                            f"MNIST checksum {SHA256[name]}; the file is damaged or not MNIST, fetch it again")
        arrays.append(parse_idx(raw, str(path)))
    images, labels = arrays
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{directory}: {SPLITS[split][0]} has shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{directory}: {SPLITS[split][1]} has shape {labels.shape} but there are "
                        f"{images.shape[0]} images; the image and label files do not belong together")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{directory}: {SPLITS[split][1]} holds label {int(labels.max())}, expected 0..9")
    return Dataset(images=images.reshape(images.shape[0], IMAGE_SIZE), labels=labels)


def pixels(images: np.ndarray) -> np.ndarray:
    """The images as pixels shaped (N, 784), in their own dtype (a Dataset's: uint8, what the driver sends)."""
    images = np.asarray(images)
    if images.ndim == 0 or images.size != images.shape[0] * IMAGE_SIZE:
        raise DataError(f"images of shape {images.shape} cannot be viewed as (N, {IMAGE_SIZE})")
    return np.ascontiguousarray(images.reshape(images.shape[0], IMAGE_SIZE))


def to_inputs(images: np.ndarray, dtype) -> np.ndarray:
    """Scale uint8 pixels to [0, 1] in a floating dtype, shaped (N, 784)."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"to_inputs needs a floating dtype, got {dt}")
    return scale_pixels(pixels(images), dt)


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """Sample order for one epoch, a pure function of its arguments so resumed runs replay it."""
    if n < 0:
        raise ValueError(f"epoch_order: n must be >= 0, got {n}")
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_slices(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Half-open (start, stop) bounds covering range(n), keeping a final partial batch."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return [(start, min(start + batch_size, n)) for start in range(0, max(n, 0), batch_size)]


def npy_images(path: str) -> np.ndarray:
    """Decode a .npy file of one or more 28x28 images into uint8 (N, 784)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot load .npy ({exc})") from exc
    grid = arr.ndim in (2, 3) and arr.shape[-2:] == (IMAGE_SIDE, IMAGE_SIDE)
    if not grid and not (arr.ndim in (1, 2) and arr.shape[-1] == IMAGE_SIZE):
        raise DataError(f"{path}: array shape {arr.shape} is not (28,28), (N,28,28), (784,) or (N,784)")
    flat = arr.reshape(-1, IMAGE_SIZE)
    if arr.dtype == np.uint8:
        return flat.copy()
    if arr.dtype.kind in "iub":
        if flat.size and (flat.min() < 0 or flat.max() > 255):
            raise DataError(f"{path}: integer pixels must lie in 0..255")
        return flat.astype(np.uint8)
    if arr.dtype.kind != "f":
        raise DataError(f"{path}: dtype {arr.dtype} not supported; use uint8 or float pixels")
    values = flat.astype(np.float64)
    if not np.all(np.isfinite(values)) or (values.size and values.min() < 0):
        raise DataError(f"{path}: float pixels must be finite and >= 0")
    peak = float(values.max()) if values.size else 0.0
    if peak > 255:
        raise DataError(f"{path}: float pixels go up to {peak}; expected [0,1] or [0,255]")
    scaled = values if peak > 1 else values * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def load_images(paths: Sequence[str]) -> np.ndarray:
    """Read .npy and .png files (detected by content) into one uint8 (N, 784) array for predict."""
    parts = [np.zeros((0, IMAGE_SIZE), dtype=np.uint8)]
    for path in paths:
        path = str(path)
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(PNG_MAGIC))
                data = head + fh.read() if head == PNG_MAGIC else b""
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if head == PNG_MAGIC:
            parts.append(png_grayscale(path, data, IMAGE_SIDE))
        elif head.startswith(NPY_MAGIC):
            parts.append(npy_images(path))
        else:
            raise DataError(f"{path}: not a PNG or .npy file; predict accepts 28x28 PNG images "
                            "or .npy arrays of shape (28,28), (N,28,28), (784,) or (N,784)")
    return np.concatenate(parts, axis=0)
