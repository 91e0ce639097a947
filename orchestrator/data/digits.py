"""Pictures of digits brought to MNIST's form, as MNIST itself was made, saying what was done to each.

MNIST's digits are white on black, size-normalised to fit a 20x20 box (keeping their aspect ratio, with
anti-aliasing) and placed in a 28x28 field with their centre of mass at its centre. A picture in that form
already (an MNIST image) is used as is; any other is made so: alpha composited, grayscale, inverted when
its background is light, its contrast stretched, cropped to the digit, fitted into 20x20 by area
averaging, and centred by mass.
"""
from __future__ import annotations

import numpy as np

SIDE, BOX = 28, 20
CENTRE = 14.0  # where MNIST's centres of mass lie, in pixel-index coordinates (measured: 13.99, 14.01)
INK = 0.1  # pixels brighter than this fraction of the brightest count as the digit when cropping


def _background(gray: np.ndarray) -> float:
    """The background level: the median of the picture's outermost pixels."""
    frame = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])  # (2W + 2H - 4,)
    return float(np.median(frame))


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights: area averaging when shrinking, linear interpolation when enlarging."""
    if size_out <= size_in:
        edges = np.arange(size_out + 1) * (size_in / size_out)  # (size_out+1,) footprint edges in input pixels
        lo = np.maximum(edges[:-1, None], np.arange(size_in)[None, :])  # (out, in)
        hi = np.minimum(edges[1:, None], np.arange(1, size_in + 1)[None, :])  # (out, in)
        weights = np.clip(hi - lo, 0, None)  # (out, in) overlap of each output pixel with each input pixel
    else:
        centres = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5  # (out,) in input coordinates
        centres = np.clip(centres, 0, size_in - 1)  # (out,)
        weights = np.clip(1 - np.abs(centres[:, None] - np.arange(size_in)[None, :]), 0, None)  # (out, in)
    return weights / weights.sum(axis=1, keepdims=True)  # (out, in) rows sum to 1


def _centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    total = img.sum()
    rows = (img.sum(axis=1) * np.arange(img.shape[0])).sum() / total  # scalar
    cols = (img.sum(axis=0) * np.arange(img.shape[1])).sum() / total  # scalar
    return float(rows), float(cols)


def _in_mnist_form(img: np.ndarray) -> bool:
    """Whether a 28x28 white-on-black picture is laid out as MNIST's are (20-pixel box, centred by mass)."""
    ys, xs = np.nonzero(img > 0)
    if not len(ys):
        return False
    extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    row, col = _centre_of_mass(img)
    return extent in (BOX - 1, BOX) and abs(row - CENTRE) <= 1.0 and abs(col - CENTRE) <= 1.0


def composite(gray: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Flatten transparency onto the background that contrasts with the ink (ink drawn on nothing stays visible)."""
    if alpha is None or np.all(alpha >= 1.0):
        return gray, []
    opaque = alpha > 0.5
    ink = float(gray[opaque].mean()) if opaque.any() else 255.0
    behind = 255.0 if ink < 128 else 0.0
    shown = "white" if behind else "black"
    return gray * alpha + behind * (1 - alpha), [f"transparent pixels shown as {shown}"]


def mnist_form(gray: np.ndarray, alpha: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """A (H, W) grayscale picture (0..255) of one digit as uint8 (28, 28) in MNIST's form, and what was done."""
    gray, notes = composite(np.asarray(gray, dtype=np.float64), alpha)  # (H, W)
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        return np.zeros((SIDE, SIDE), np.uint8), [*notes, "too small to hold a digit: blank"]
    if _background(gray) > 127.5:
        gray = 255.0 - gray  # (H, W) now light on dark, as MNIST
        notes.append("inverted (dark digit on a light background)")
    if gray.shape == (SIDE, SIDE) and _in_mnist_form(gray):
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8), notes
    level = _background(gray)
    gray = np.clip(gray - level, 0, None)  # (H, W) background at 0
    peak = float(gray.max())
    if peak <= 0:
        return np.zeros((SIDE, SIDE), np.uint8), [*notes, "no digit found (a uniform picture): blank"]
    gray = gray * (255.0 / peak)  # (H, W) contrast stretched to 0..255
    ys, xs = np.nonzero(gray > INK * 255.0)
    crop = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1]  # (h, w) the digit's bounding box
    h, w = crop.shape
    scale = BOX / max(h, w)
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    box = _resize_matrix(h, out_h) @ crop @ _resize_matrix(w, out_w).T  # (out_h, out_w) fitted into 20x20
    row, col = _centre_of_mass(box)
    top = int(np.clip(round(CENTRE - row), 0, SIDE - out_h))
    left = int(np.clip(round(CENTRE - col), 0, SIDE - out_w))
    field = np.zeros((SIDE, SIDE))  # (28, 28)
    field[top:top + out_h, left:left + out_w] = box
    notes.append(f"{w}x{h} digit fitted into 20x20 and centred by mass in 28x28")
    return np.clip(np.rint(field), 0, 255).astype(np.uint8), notes
