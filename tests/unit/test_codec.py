"""The wire codec: round trips, validation against the plan, and fuzzing that decode never crashes."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuron import codec
from neuron.errors import (
    BadSignature,
    CodecError,
    ForeignMessage,
    MalformedMessage,
    NonFiniteValues,
    OversizedMessage,
    UnexpectedMessage,
)
from neuron.topology import Topology

KEY = bytes(range(32))
TOPO = Topology("codec-test", sizes=(6, 5, 3), shards=(2, 1), batch_size=8, micro_batches=2).with_key(KEY)
# neuron (2, 0) gets activations from (1, 0) [3 columns] and (1, 1) [2 columns]
SCHEMA = TOPO.schema_for(2, 0)


def _act(array, source=(1, 0), **kw):
    return codec.encode(codec.ACT, TOPO.run_tag, 1, 7, micro=1, nmicro=2, source=source, array=array, key=KEY, **kw)


def test_round_trip_array():
    x = np.arange(12, dtype="<f4").reshape(4, 3)
    msg = codec.decode(_act(x, flags=codec.CHECKPOINT), SCHEMA)
    assert (msg.kind, msg.generation, msg.step, msg.micro, msg.nmicro, msg.source) == (codec.ACT, 1, 7, 1, 2, (1, 0))
    assert msg.flags == codec.CHECKPOINT
    assert msg.array.dtype == np.float32 and np.array_equal(msg.array, x)


def test_round_trip_json():
    body = codec.encode(codec.CONTROL, TOPO.run_tag, 3, 0, data={"op": "start", "generation": 3, "version": 10},
                        key=KEY)
    msg = codec.decode(body, SCHEMA)
    assert msg.data == {"op": "start", "generation": 3, "version": 10}


def test_noncontiguous_slices_encode_in_order():
    x = np.arange(20, dtype="<f4").reshape(4, 5)
    msg = codec.decode(_act(x[:, 1:4]), SCHEMA)
    assert np.array_equal(msg.array, x[:, 1:4])


@pytest.mark.parametrize(
    "body, error",
    [
        (b"", MalformedMessage),
        (b"XX" + bytes(60), MalformedMessage),
        (pickle.dumps(np.zeros((4, 3), dtype=np.float32)), MalformedMessage),
        (_act(np.zeros((4, 3), dtype="<f8")), UnexpectedMessage),  # wrong dtype
        (_act(np.zeros((4, 4), dtype="<f4")), UnexpectedMessage),  # wrong width for source (1, 0)
        (_act(np.zeros((4, 2), dtype="<f4"), source=(1, 1)), None),  # right width for source (1, 1)
        (_act(np.zeros((5, 3), dtype="<f4")), UnexpectedMessage),  # more rows than a micro-batch
        (_act(np.zeros(3, dtype="<f4")), UnexpectedMessage),  # 1-D
        (_act(np.zeros((4, 3), dtype="<f4"), source=(0, 0)), UnexpectedMessage),  # not a neighbour
        (_act(np.full((4, 3), np.nan, dtype="<f4")), NonFiniteValues),
        (_act(np.full((4, 3), np.inf, dtype="<f4")), NonFiniteValues),
        (codec.sign(_act(np.zeros((4, 3), dtype="<f4"))[:-33], KEY), MalformedMessage),  # truncated payload
        (codec.sign(_act(np.zeros((4, 3), dtype="<f4"))[:-32] + b"\0", KEY), MalformedMessage),  # trailing bytes
        (_act(np.zeros((4, 3), dtype="<f4"))[:-1], BadSignature),  # a cut signature
        (_act(np.zeros((4, 3), dtype="<f4"))[:-32], BadSignature),  # no signature
        (_act(np.zeros((4, 3), dtype="<f4")) + b"\0", BadSignature),  # trailing bytes after the signature
        (bytes(10 ** 7), OversizedMessage),
    ],
)
def test_decode_rejects_what_does_not_fit(body, error):
    if error is None:
        codec.decode(body, SCHEMA)
        return
    with pytest.raises(error):
        codec.decode(body, SCHEMA)


def test_other_run_is_foreign():
    other = Topology("another-run", sizes=(6, 5, 3), shards=(2, 1), batch_size=8, micro_batches=2)
    body = codec.encode(codec.ACT, other.run_tag, 1, 0, source=(1, 0), array=np.zeros((2, 3), dtype="<f4"), key=KEY)
    with pytest.raises(ForeignMessage):
        codec.decode(body, SCHEMA)


def test_a_message_signed_with_another_key_or_altered_is_refused():
    x = np.ones((4, 3), dtype="<f4")
    forged = codec.encode(codec.ACT, TOPO.run_tag, 1, 7, micro=1, nmicro=2, source=(1, 0), array=x, key=b"k" * 32)
    with pytest.raises(BadSignature):
        codec.decode(forged, SCHEMA)
    good = bytearray(_act(x))
    codec.decode(bytes(good), SCHEMA)
    for pos in (3, codec.HEADER.size + 9, len(good) - 40, len(good) - 1):  # header, shape, payload, signature
        tampered = bytearray(good)
        tampered[pos] ^= 1
        with pytest.raises((BadSignature, MalformedMessage)):
            codec.decode(bytes(tampered), SCHEMA)
    control = codec.HEADER.pack(codec.MAGIC, codec.VERSION, codec.CONTROL, 0, 0, 0, TOPO.run_tag, 1, 0, 0, 0, 0, 0)
    with pytest.raises(BadSignature):  # a well-formed header and payload without the trailer
        codec.decode(control + b'{"op":"stop","generation":1}' + bytes(32), SCHEMA)


def test_a_gradient_is_signed_for_its_receiver_and_verifies_nowhere_else():
    topo = Topology("grad-test", sizes=(6, 4, 3), shards=(2, 1), batch_size=8, micro_batches=2).with_key(KEY)
    grad = np.ones((4, 2), dtype="<f4")  # layer 1's two neurons own 2 rows each: the same shape for both
    body = codec.encode(codec.GRAD, topo.run_tag, 1, 7, micro=1, source=(2, 0), array=grad, key=KEY, to=(1, 0))
    np.testing.assert_array_equal(codec.decode(body, topo.schema_for(1, 0)).array, grad)
    with pytest.raises(BadSignature, match="for this receiver"):  # a copy put into the other neuron's queue
        codec.decode(body, topo.schema_for(1, 1))
    with pytest.raises(ValueError, match="give `to`"):
        codec.encode(codec.GRAD, topo.run_tag, 1, 7, source=(2, 0), array=grad, key=KEY)
    with pytest.raises(ValueError, match="every receiver alike"):
        codec.encode(codec.ACT, topo.run_tag, 1, 7, source=(1, 0), array=grad, key=KEY, to=(2, 0))


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        codec.encode(codec.CONTROL, TOPO.run_tag, 1, 0, data={"op": "stop"}, key=b"short")
    with pytest.raises(ValueError):
        TOPO.with_key(b"")


def test_the_key_never_leaves_with_the_topology():
    assert "key" not in TOPO.to_dict() and KEY.hex() not in repr(TOPO)
    assert Topology.from_dict({**TOPO.to_dict(), "key": "00" * 32}).key == b""


def test_bad_json_payloads():
    head = codec.HEADER.pack(codec.MAGIC, codec.VERSION, codec.CONTROL, 0, 0, 0, TOPO.run_tag, 1, 0, 0, 0, 0, 0)
    for payload in (b"{", b"[1, 2]", b"\xff\xfe", b'"x"'):
        with pytest.raises(MalformedMessage):
            codec.decode(codec.sign(head + payload, KEY), SCHEMA)


VALID = [
    _act(np.ones((4, 3), dtype="<f4")),
    codec.encode(codec.CONTROL, TOPO.run_tag, 1, 0, data={"op": "stop"}, key=KEY),
]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_decode(body):
    try:
        codec.decode(body, SCHEMA)
    except CodecError:
        pass


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, 64))
def test_mutated_messages_never_crash_decode(valid, flips, cut):
    body = bytearray(valid)
    for pos, value in flips:
        body[pos % len(body)] = value
    body = bytes(body[: len(body) - cut]) if cut < len(body) else bytes(body)
    try:
        msg = codec.decode(body, SCHEMA)
    except CodecError:
        return
    if msg.array is not None:
        assert np.isfinite(msg.array).all()
