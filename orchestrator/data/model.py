"""Model files (.npz of W1, b1, ..., Wk, bk; never pickled) and the seeded initial weights."""
from __future__ import annotations

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


def save_model(path: str | os.PathLike, params: Params) -> None:
    """Write `params` as W1, b1, ..., Wk, bk into an .npz, atomically."""
    arrays = {}
    for i, (w, b) in enumerate(params, start=1):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    path = os.fspath(path)
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_model(path: str | os.PathLike, sizes: tuple[int, ...] | None = None, dtype: str | None = None) -> Params:
    """Read an .npz model, checking names, shapes (against `sizes` if given) and finiteness."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
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


def model_sizes(params: Params) -> tuple[int, ...]:
    """Layer sizes n_0..n_k of a model."""
    return (params[0][0].shape[1], *(w.shape[0] for w, _ in params))
