"""The wire format: a fixed little-endian header plus raw array bytes (or a small JSON object), never pickle.

The kinds and flags it carries, and what they mean, are in neuron/protocol.py.

Every message ends with an HMAC-SHA256 of everything before it under the run's key, checked before any
field but the header's run tag is believed: publishing to the broker is not enough to influence a run.
A GRAD, the one kind whose body differs per receiver (each gets its own columns), is signed for its
receiver as well: its MAC also covers the receiver's (layer, index), which is not sent, so a copy of it
put into another neuron's queue does not verify there. Every other kind is the same for all its receivers.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from broker.base import Delivery
from neuron.errors import (
    BadSignature,
    ForeignMessage,
    MalformedMessage,
    NonFiniteValues,
    OversizedMessage,
    UnexpectedMessage,
)
from neuron.protocol import ACT, CHECKPOINT, CONTROL, EVAL, GRAD, JSON_KINDS, KINDS, LABELS, PRED, REPORT
from neuron.role import DRIVER_LAYER, Role

# the protocol's kinds and flags travel with the codec, so callers that build messages need one import
__all__ = [
    "ACT", "CHECKPOINT", "CONTROL", "EVAL", "GRAD", "JSON_KINDS", "KINDS", "LABELS", "PRED", "REPORT",
    "HEADER", "MAGIC", "VERSION", "Message", "Schema", "decode", "encode",
]

MAGIC = b"CF"
VERSION = 3  # 2: the loss head is source layer HEAD_LAYER, not depth + 1; 3: a GRAD is signed for its receiver

DTYPES: dict[int, np.dtype] = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("<i8"), 5: np.dtype("u1")}
PIXELS = np.dtype("u1")  # the driver's inputs as raw image bytes
DTYPE_CODES = {dt: code for code, dt in DTYPES.items()}
JSON_DTYPE = 0

# magic, version, kind, flags, dtype, ndim, run tag, generation, step, micro, nmicro, source layer, source index
HEADER = struct.Struct("<2sBBBBBQIQIIHI")
RECEIVER = struct.Struct("<HI")  # a GRAD's receiver (layer, index), signed before the header but never sent
DIM = struct.Struct("<I")
MAX_NDIM = 2
MAX_JSON = 64 * 1024
MAC_SIZE = 32  # the HMAC-SHA256 trailer
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class Message:
    """A decoded message: routing header plus either an array or a JSON object."""

    kind: int
    run_tag: int
    generation: int
    step: int
    micro: int = 0
    nmicro: int = 0
    src_layer: int = 0
    src_index: int = 0
    flags: int = 0
    array: np.ndarray | None = None
    data: dict | None = None

    @property
    def values(self) -> np.ndarray:
        """The array of a data message (decode gives every kind but CONTROL and REPORT one)."""
        if self.array is None:
            raise UnexpectedMessage(f"a {KINDS.get(self.kind, self.kind)} message without an array")
        return self.array

    @property
    def source(self) -> Role:
        """The sender: the driver, a neuron or the loss head."""
        return Role(self.src_layer, self.src_index)


@dataclass(frozen=True)
class Schema:
    """What one receiver accepts: run, dtype, sizes, and per (kind, source layer, source index) the width.

    `columns` maps (kind, layer, index) to the expected width of a 2-D array, 0 for a 1-D array, or None
    for a JSON kind.
    """

    run_tag: int
    key: bytes  # the run's message key
    dtype: np.dtype
    max_rows: int  # rows of one micro-batch
    max_batch: int  # rows of one step (labels come once per step)
    max_bytes: int
    columns: Mapping[tuple[int, int, int], int | None]
    receiver: tuple[int, int] = (0, 0)  # (layer, index) of the receiver, which a GRAD must be signed for


def encode(
    kind: int,
    run_tag: int,
    generation: int,
    step: int,
    *,
    micro: int = 0,
    nmicro: int = 0,
    source: tuple[int, int] = (0, 0),
    flags: int = 0,
    array: np.ndarray | None = None,
    data: Mapping | None = None,
    key: bytes,
    to: tuple[int, int] | None = None,
) -> bytes:
    """Encode and sign one message; exactly one of `array` (kinds ACT..PRED) and `data` (CONTROL, REPORT) is given.

    A GRAD is signed for its one receiver `to` (layer, index); other kinds take no `to`.
    """
    return _encode(kind, run_tag, generation, step, micro, nmicro, source, flags, array, data, key,
                   _receiver_prefix(kind, to))


def _encode(kind: int, run_tag: int, generation: int, step: int, micro: int, nmicro: int, source: tuple[int, int],
            flags: int, array: np.ndarray | None, data: Mapping | None, key: bytes, prefix: bytes) -> bytes:
    """encode() with the receiver prefix of the MAC already worked out."""
    mac = hmac.new(check_key(key), prefix, digestmod=hashlib.sha256)
    if kind in JSON_KINDS:
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        head = HEADER.pack(MAGIC, VERSION, kind, flags, JSON_DTYPE, 0, run_tag, generation, step, micro, nmicro, *source)
        mac.update(head)
        mac.update(payload)
        return b"".join((head, payload, mac.digest()))
    arr = np.asarray(array)
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    code = DTYPE_CODES.get(np.dtype(dt))
    if code is None or arr.ndim > MAX_NDIM or arr.ndim == 0:
        raise ValueError(f"cannot encode array of dtype {arr.dtype} and shape {arr.shape}")
    head = HEADER.pack(MAGIC, VERSION, kind, flags, code, arr.ndim, run_tag, generation, step, micro, nmicro, *source)
    dims = b"".join(DIM.pack(d) for d in arr.shape)
    data_bytes = np.ascontiguousarray(arr, dtype=DTYPES[code]).data.cast("B")
    mac.update(head)
    mac.update(dims)
    mac.update(data_bytes)
    return b"".join((head, dims, data_bytes, mac.digest()))


def outgoing(kind: int, run_tag: int, generation: int, step: int, *, micro: int = 0, nmicro: int = 0,
             source: tuple[int, int] = (0, 0), flags: int = 0, array: np.ndarray | None = None,
             data: Mapping | None = None, key: bytes,
             to: tuple[int, int] | None = None) -> tuple[Message, Callable[[], bytes]]:
    """A message as the object a reader in this process takes, and the encoder of its signed bytes.

    Exactly one of `array` and `data` is given, and `to` for a GRAD, as for encode().
    """
    if (array is None) == (data is None):
        raise ValueError("an outgoing message carries either an array or a JSON object")
    prefix = _receiver_prefix(kind, to)  # a missing or needless receiver is the sender's error, found now
    message = Message(kind, run_tag, generation, step, micro, nmicro, source[0], source[1], flags,
                      array=None if array is None else np.ascontiguousarray(array),
                      data=None if data is None else dict(data))

    def body() -> bytes:
        return _encode(kind, run_tag, generation, step, micro, nmicro, source, flags, message.array, message.data,
                       key, prefix)
    return message, body


def _receiver_prefix(kind: int, to: tuple[int, int] | None) -> bytes:
    """What a message's MAC covers before its bytes: a GRAD's receiver, nothing for the other kinds."""
    if kind != GRAD:
        if to is not None:
            raise ValueError(f"a {KINDS.get(kind, kind)} message is signed for every receiver alike, not for {to}")
        return b""
    if to is None:
        raise ValueError("a grad message is signed for its receiver: give `to`")
    return RECEIVER.pack(*to)


def received(delivery: Delivery, schema: Schema) -> Message:
    """The message of `delivery`: the object handed over in this process, else its body decoded and checked."""
    if isinstance(delivery.message, Message):
        return delivery.message
    return decode(delivery.body, schema)


def sign(unsigned: bytes, key: bytes, to: tuple[int, int] | None = None) -> bytes:
    """`unsigned` (a header and payload) with its signature appended, as encode() makes it (`to`: a GRAD's receiver)."""
    prefix = b"" if to is None else RECEIVER.pack(*to)
    return bytes(unsigned) + hmac.digest(check_key(key), prefix + bytes(unsigned), "sha256")


def check_key(key: object) -> bytes:
    """`key` if it can sign a run's messages (bytes, at least MIN_KEY_BYTES long), else ValueError."""
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a run's message key is at least {MIN_KEY_BYTES} bytes")
    return key


def decode(body: bytes | memoryview, schema: Schema) -> Message:
    """Check the signature of `body`, then decode and validate it against `schema`; raises only CodecErrors."""
    if len(body) > schema.max_bytes:
        raise OversizedMessage(f"message of {len(body)} bytes exceeds the limit of {schema.max_bytes}")
    if len(body) < HEADER.size + MAC_SIZE:
        raise MalformedMessage(f"message of {len(body)} bytes is shorter than the {HEADER.size}-byte header "
                               f"and the {MAC_SIZE}-byte signature")
    magic, version, kind, flags, code, ndim, tag, gen, step, micro, nmicro, src_layer, src_index = HEADER.unpack_from(body)
    if magic != MAGIC or version != VERSION:
        raise MalformedMessage(f"bad magic/version {magic!r}/{version}")
    if tag != schema.run_tag:
        raise ForeignMessage(f"message of another run (tag {tag:#x})")
    signed = memoryview(body)[:-MAC_SIZE]
    if len(schema.key) < MIN_KEY_BYTES:  # an empty key would be one anybody can sign with
        raise BadSignature("this receiver holds no key of the run")
    if kind == GRAD:  # signed for its receiver too; the prefix is not sent, so no copy of the body is made
        mac = hmac.new(schema.key, RECEIVER.pack(*schema.receiver), "sha256")
        mac.update(signed)
        digest = mac.digest()
    else:
        digest = hmac.digest(schema.key, signed, "sha256")  # one-shot: the cheaper path for most messages
    if not hmac.compare_digest(digest, body[-MAC_SIZE:]):
        raise BadSignature("message without a valid signature of this run" +
                           (" for this receiver" if kind == GRAD else ""))
    body = signed  # from here on, only the signed bytes
    if kind not in KINDS:
        raise MalformedMessage(f"unknown kind {kind}")
    key = (kind, src_layer, src_index)
    if key not in schema.columns:
        raise UnexpectedMessage(f"no {KINDS[kind]} message expected from source {src_layer}.{src_index}")
    expected_cols = schema.columns[key]
    common = dict(kind=kind, run_tag=tag, generation=gen, step=step, micro=micro, nmicro=nmicro,
                  src_layer=src_layer, src_index=src_index, flags=flags)
    if kind in JSON_KINDS:
        return Message(**common, data=_decode_json(bytes(body[HEADER.size:]), code, ndim))
    return Message(**common, array=_decode_array(body, code, ndim, expected_cols, kind, schema, src_layer))


def _decode_json(payload: bytes, code: int, ndim: int) -> dict:
    if code != JSON_DTYPE or ndim != 0:
        raise MalformedMessage("JSON message with an array header")
    if len(payload) > MAX_JSON:
        raise OversizedMessage(f"JSON payload of {len(payload)} bytes exceeds {MAX_JSON}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"bad JSON payload: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessage("JSON payload is not an object")
    return data


def _decode_array(body: bytes | memoryview, code: int, ndim: int, expected_cols, kind: int, schema: Schema,
                  src_layer: int) -> np.ndarray:
    dtype = DTYPES.get(code)
    if dtype is None:
        raise MalformedMessage(f"unknown dtype code {code}")
    if not 1 <= ndim <= MAX_NDIM:
        raise MalformedMessage(f"array of {ndim} dimensions")
    offset = HEADER.size + ndim * DIM.size
    if len(body) < offset:
        raise MalformedMessage("truncated shape")
    shape = struct.unpack_from(f"<{ndim}I", body, HEADER.size)
    count = shape[0] if ndim == 1 else shape[0] * shape[1]
    if len(body) - offset != count * dtype.itemsize:
        raise MalformedMessage(f"payload of {len(body) - offset} bytes does not match shape {shape} of {dtype}")
    want_dtype = schema.dtype if kind in (ACT, GRAD) else None
    # the driver may send its inputs as the raw pixels, a quarter of the bytes; layer 1 scales them
    pixels = kind == ACT and src_layer == DRIVER_LAYER and dtype == PIXELS
    if want_dtype is not None and dtype != want_dtype and not pixels:
        raise UnexpectedMessage(f"{KINDS[kind]} of dtype {dtype}, expected {want_dtype}")
    if kind in (LABELS, PRED) and dtype.kind not in "iu":
        raise UnexpectedMessage(f"{KINDS[kind]} of dtype {dtype}, expected integers")
    want_ndim = 1 if expected_cols == 0 else 2
    rows = shape[0]
    limit = schema.max_batch if kind == LABELS else schema.max_rows
    if ndim != want_ndim or not 1 <= rows <= limit or (want_ndim == 2 and shape[1] != expected_cols):
        raise UnexpectedMessage(f"{KINDS[kind]} of shape {shape} does not fit the plan")
    array = np.frombuffer(body, dtype=dtype, offset=offset).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise NonFiniteValues(f"{KINDS[kind]} holds NaN or infinite values")
    return array

