"""Reading pictures of digits for `predict`: PNG (built in), .npy arrays, and JPEG and the rest through Pillow."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orchestrator.data import mnist, png
from orchestrator.data.digits import mnist_form
from orchestrator.errors import DataError

PILLOW_HINT = "pip install Pillow (or, in the Cuttlefish checkout, pip install -e '.[images]')"


def _pillow_pixels(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) grayscale 0..255 and (H, W) alpha 0..1 of any picture Pillow reads."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: not a PNG or .npy file; other formats (JPEG, GIF, BMP, ...) need Pillow: "
                        f"{PILLOW_HINT}") from None
    try:
        with Image.open(path) as img:
            if img.width * img.height > png.MAX_PIXELS:
                raise DataError(f"{path}: image is {img.width}x{img.height}; at most {png.MAX_PIXELS:,} pixels are read")
            pixels = np.asarray(img.convert("LA"), dtype=np.float64)  # (H, W, 2) luminance and alpha
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the picture: {exc}") from exc
    return pixels[..., 0], pixels[..., 1] / 255.0


def read_pictures(path: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Every picture in file `path` as ((H, W) grayscale 0..255, alpha or None)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(png.MAX_PIXELS * 8 + 1024)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data.startswith(png.PNG_MAGIC):
        return [png.png_pixels(path, data)]
    if data.startswith(mnist.NPY_MAGIC):
        flat = mnist.npy_images(path)  # (N, 784) uint8
        return [(image.reshape(mnist.IMAGE_SIDE, mnist.IMAGE_SIDE).astype(np.float64), None) for image in flat]
    return [_pillow_pixels(path)]


def load_digits(paths: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, list[str]]]]:
    """uint8 (N, 784) images in MNIST's form from the files, and (file, what was done) for each changed one."""
    images, notes = [], []
    for path in map(str, paths):
        pictures = read_pictures(path)
        for i, (gray, alpha) in enumerate(pictures):
            image, done = mnist_form(gray, alpha)
            images.append(image.reshape(mnist.IMAGE_SIZE))
            if done:
                notes.append((path if len(pictures) == 1 else f"{path}[{i}]", done))
    return np.stack(images) if images else np.zeros((0, mnist.IMAGE_SIZE), np.uint8), notes
