"""Model files (.npz of W1, b1, ..., Wk, bk and a JSON description; never pickled) and the seeded initial weights.

The description (`meta`, a 0-d unicode array holding JSON text) says what a reader needs to use the
weights right: layer sizes, hidden activation, dtype, class labels, the input's form, and the config the
model was trained from. Files without it (from older versions) still load; their users must say the rest.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from neuron.kernels import init_layer
from orchestrator.errors import ModelFileError

Params = list[tuple[np.ndarray, np.ndarray]]


def init_params(sizes: tuple[int, ...], activation: str, dtype: str, seed: int) -> Params:
    """Initial weights of every layer, a pure function of the sizes, activation, dtype and seed."""
    params = []
    for layer in range(1, len(sizes)):
        rng = np.random.default_rng([seed, layer])
        act = activation if layer < len(sizes) - 1 else "linear"
        params.append(init_layer(rng, sizes[layer], sizes[layer - 1], act, dtype))
    return params


META = "meta"
FORMAT = "cuttlefish-model"
INPUT_FORM = "28x28 grayscale, white digit on black, pixels/255 in row order (MNIST's form)"


def describe(params: Params, activation: str, classes: list, config: dict | None = None, **extra) -> dict:
    """The description stored beside `params`: sizes, activation, dtype, classes, input form, config, `extra`."""
    return {"format": FORMAT, "version": 1, "sizes": list(model_sizes(params)), "activation": activation,
            "output": "linear into softmax", "dtype": str(params[0][0].dtype), "classes": list(classes),
            "input": INPUT_FORM, "config": config, **extra}


def save_model(path: str | os.PathLike, params: Params, meta: dict | None = None) -> None:
    """Write `params` as W1, b1, ..., Wk, bk (and `meta` as JSON text) into an .npz, atomically."""
    arrays = {}
    for i, (w, b) in enumerate(params, start=1):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    if meta is not None:
        arrays[META] = np.array(json.dumps(meta, sort_keys=True))  # a unicode array: loads without pickle
    path = os.fspath(path)
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_model(path: str | os.PathLike, sizes: tuple[int, ...] | None = None, dtype: str | None = None) -> Params:
    """Read an .npz model, checking names, shapes (against `sizes` if given) and finiteness."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files) - {META}
            depth = len([n for n in names if n.startswith("W")])
            params = []
            for i in range(1, depth + 1):
                if f"W{i}" not in names or f"b{i}" not in names:
                    raise ModelFileError(f"{path}: missing W{i} or b{i}")
                params.append((npz[f"W{i}"], npz[f"b{i}"]))
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{path}: cannot read model: {exc}") from exc
    if not params or len(names) != 2 * len(params):
        raise ModelFileError(f"{path}: expected arrays W1, b1, ..., Wk, bk, found {sorted(names)}")
    for i, (w, b) in enumerate(params, start=1):
        if w.ndim != 2 or b.shape != (w.shape[0],) or w.dtype.kind != "f" or b.dtype.kind != "f":
            raise ModelFileError(f"{path}: W{i} {w.shape} / b{i} {b.shape} are not a dense layer")
        if i > 1 and w.shape[1] != params[i - 2][0].shape[0]:
            raise ModelFileError(f"{path}: W{i} takes {w.shape[1]} inputs but layer {i - 1} has {params[i - 2][0].shape[0]} units")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ModelFileError(f"{path}: W{i} or b{i} holds NaN or infinity")
    if sizes is not None:
        found = (params[0][0].shape[1], *(w.shape[0] for w, _ in params))
        if tuple(found) != tuple(sizes):
            raise ModelFileError(f"{path}: model is {'-'.join(map(str, found))}, config says {'-'.join(map(str, sizes))}")
    if dtype is not None:
        params = [(w.astype(dtype), b.astype(dtype)) for w, b in params]
    return params


def read_meta(path: str | os.PathLike) -> dict:
    """The description stored in a model file, or {} for a file written before models described themselves."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if META not in npz.files:
                return {}
            raw = npz[META]
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{path}: cannot read model: {exc}") from exc
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ModelFileError(f"{path}: '{META}' is not JSON text")
    try:
        meta = json.loads(str(raw))
    except ValueError as exc:
        raise ModelFileError(f"{path}: '{META}' is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: '{META}' is not a {FORMAT} description")
    return meta


def model_sizes(params: Params) -> tuple[int, ...]:
    """Layer sizes n_0..n_k of a model."""
    return (params[0][0].shape[1], *(w.shape[0] for w, _ in params))
