"""A small PNG decoder (every colour type and bit depth, no interlacing) for the digits predict reads.

Only zlib and NumPy: no imaging library is needed to run a model.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from types import MappingProxyType

import numpy as np

from orchestrator.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_PNG_CHANNELS = MappingProxyType({0: 1, 2: 3, 3: 1, 4: 2, 6: 4})
_PNG_DEPTHS = MappingProxyType({0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)})


def _png_chunks(data: bytes, path: str) -> Iterator[tuple[bytes, bytes]]:
    """Yield (type, payload) of each PNG chunk after checking its CRC."""
    pos = len(PNG_MAGIC)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise DataError(f"{path}: truncated PNG chunk {ctype!r}")
        body = data[pos + 8:end]
        if zlib.crc32(ctype + body) != struct.unpack(">I", data[end:end + 4])[0]:
            raise DataError(f"{path}: CRC mismatch in PNG chunk {ctype!r}; the file is damaged")
        yield ctype, body
        if ctype == b"IEND":
            return
        pos = end + 4
    raise DataError(f"{path}: PNG ends without an IEND chunk; the file is truncated")


def _unfilter(raw: bytes, height: int, stride: int, bpp: int, path: str) -> np.ndarray:
    """Undo PNG per-row filters (None, Sub, Up, Average, Paeth) into a (height, stride) uint8 array."""
    out = np.zeros((height + 1, stride), dtype=np.uint8)  # row 0 is the all-zero "previous" row
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        prior = out[y].tobytes()
        if ftype == 0:
            pass
        elif ftype == 2:
            line = bytearray((np.frombuffer(line, np.uint8) + out[y]).tobytes())
        elif ftype in (1, 3, 4):
            # Sub/Average/Paeth depend on already-decoded bytes of the same row, so go byte by byte.
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prior[i]
                c = prior[i - bpp] if i >= bpp else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) >> 1
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        else:
            raise DataError(f"{path}: unknown PNG filter type {ftype} on row {y}")
        out[y + 1] = np.frombuffer(bytes(line), np.uint8)
    return out[1:]


MAX_PIXELS = 4096 * 4096  # a bigger picture of one digit is more likely a mistake (or a decompression bomb)


def png_pixels(path: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a non-interlaced PNG of any size into float (H, W) grayscale 0..255 and (H, W) alpha 0..1."""
    chunks = list(_png_chunks(data, path))
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise DataError(f"{path}: PNG does not start with a valid IHDR chunk")
    width, height, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if interlace:
        raise DataError(f"{path}: interlaced PNG not supported; re-save it without interlacing")
    if not 0 < width * height <= MAX_PIXELS:
        raise DataError(f"{path}: image is {width}x{height}; at most {MAX_PIXELS:,} pixels are read")
    if ctype not in _PNG_CHANNELS or depth not in _PNG_DEPTHS[ctype] or comp or filt:
        raise DataError(f"{path}: unsupported PNG format (color type {ctype}, bit depth {depth})")
    palette = trns = None
    idat = []
    for kind, body in chunks[1:]:
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"PLTE":
            if not body or len(body) % 3:
                raise DataError(f"{path}: PLTE chunk of {len(body)} bytes is not a list of RGB triples")
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3).astype(np.float64)
        elif kind == b"tRNS":
            trns = body
        elif kind[0:1].isupper() and kind != b"IEND":
            raise DataError(f"{path}: unknown critical PNG chunk {kind!r}")
    channels = _PNG_CHANNELS[ctype]
    stride = (width * channels * depth + 7) // 8
    expected = height * (stride + 1)
    try:
        # Bounded decompression: the image never needs more than `expected` bytes.
        raw = zlib.decompressobj().decompress(b"".join(idat), expected + 1)
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt PNG image data ({exc})") from exc
    if len(raw) != expected:
        raise DataError(f"{path}: PNG image data has {len(raw)} bytes, expected {expected}")
    rows = _unfilter(raw, height, stride, max(1, channels * depth // 8), path)
    if depth == 16:
        samples = rows.view(">u2").astype(np.int64)
    elif depth == 8:
        samples = rows.astype(np.int64)
    else:
        bits = np.unpackbits(rows, axis=1)[:, :width * depth].reshape(height, width, depth)
        samples = (bits.astype(np.int64) << np.arange(depth - 1, -1, -1)).sum(axis=2)
    samples = samples.reshape(height, width, channels)
    maxv = (1 << depth) - 1
    alpha = np.ones((height, width))
    if ctype == 3:
        if palette is None:
            raise DataError(f"{path}: palette PNG without a PLTE chunk")
        index = samples[..., 0]
        if int(index.max()) >= len(palette):
            raise DataError(f"{path}: PNG pixel refers to palette entry beyond the {len(palette)} defined")
        color = palette[index]
        if trns is not None:
            table = np.full(len(palette), 255.0)
            table[:min(len(trns), len(palette))] = np.frombuffer(trns, np.uint8)[:len(palette)]
            alpha = table[index] / 255.0
    else:
        scaled = samples * (255.0 / maxv)
        if ctype in (4, 6):
            alpha = scaled[..., -1] / 255.0
            scaled = scaled[..., :-1]
        elif trns is not None and len(trns) == 2 * channels:
            key = np.array(struct.unpack(f">{channels}H", trns))
            alpha = np.any(samples != key, axis=2).astype(np.float64)
        color = scaled
    if color.shape[-1] == 3:
        gray = 0.299 * color[..., 0] + 0.587 * color[..., 1] + 0.114 * color[..., 2]
    else:
        gray = color[..., 0]
    return gray, alpha


def png_grayscale(path: str, data: bytes, side: int) -> np.ndarray:
    """Decode a `side`x`side` PNG into uint8 (1, side*side) grayscale, alpha over black, exactly as stored."""
    gray, alpha = png_pixels(path, data)
    if gray.shape != (side, side):
        raise DataError(f"{path}: image is {gray.shape[1]}x{gray.shape[0]}, expected {side}x{side}")
    return np.clip(np.rint(gray * alpha), 0, 255).astype(np.uint8).reshape(1, side * side)
