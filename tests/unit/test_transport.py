"""The tuned pika transport (broker/rabbitmq/transport.py): the same bytes as pika's, fewer copies and sends."""
from __future__ import annotations

import collections
import math

import pytest

pika = pytest.importorskip("pika")

from pika import frame, spec  # noqa: E402

from broker.rabbitmq import transport  # noqa: E402


class _Impl:
    """The parts of pika's Connection the frame sender uses."""

    def __init__(self, body_max: int) -> None:
        self._body_max_length = body_max
        self.bytes_sent = self.frames_sent = 0
        self.emitted: list = []

    def _adapter_emit_data(self, data) -> None:
        self.emitted.append(data)


def _stock_frames(channel: int, method, properties, body: bytes, body_max: int) -> bytes:
    # pika's Connection._send_message, frame by frame
    out = [frame.Method(channel, method).marshal(), frame.Header(channel, len(body), properties).marshal()]
    for n in range(math.ceil(len(body) / body_max)):
        out.append(frame.Body(channel, body[n * body_max:(n + 1) * body_max]).marshal())
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, 131064, 131065, 131153, 300_000])
def test_frames_are_byte_for_byte_pikas_own(size):
    body_max = 131064
    impl = _Impl(body_max)
    method = spec.Basic.Publish(exchange="cf.run", routing_key="cf.run.L2.0")
    properties = spec.BasicProperties(delivery_mode=1)
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    transport._frame_sender(impl)(3, method, (properties, body))
    sent = b"".join(bytes(piece) for piece in impl.emitted)
    assert sent == _stock_frames(3, method, properties, body, body_max)
    assert impl.bytes_sent == len(sent)
    assert impl.frames_sent == 2 + math.ceil(size / body_max)
    # no copy of the body: its frames are views of it
    assert all(piece.obj is body for piece in impl.emitted if isinstance(piece, memoryview))


class _Socket:
    """A socket whose sendmsg takes, call by call, the byte counts of `script` ("block": would block)."""

    def __init__(self, *script) -> None:
        self.script, self.data, self.calls = list(script), bytearray(), 0

    def sendmsg(self, buffers):
        self.calls += 1
        limit = self.script.pop(0) if self.script else 1 << 30
        if limit == "block":
            raise BlockingIOError(11, "would block")
        taken = b"".join(bytes(b) for b in buffers)[:limit]
        self.data += taken
        return len(taken)


class _Transport:
    def __init__(self, sock, chunks) -> None:
        self._sock = sock
        self._tx_buffers = collections.deque(chunks)
        self._tx_buffered_byte_count = sum(len(c) for c in chunks)


def test_everything_buffered_goes_out_in_one_gathered_send():
    chunks = [b"method", b"header", memoryview(b"x" * 1000), b"\xce"]
    t = _Transport(_Socket(), chunks)
    transport._gathered_producer(t)()
    assert t._sock.calls == 1 and bytes(t._sock.data) == b"".join(bytes(c) for c in chunks)
    assert not t._tx_buffers and t._tx_buffered_byte_count == 0


def test_partial_sends_keep_the_rest_queued_in_order():
    t = _Transport(_Socket(15, 7), [b"a" * 10, b"b" * 10, b"c" * 10])
    transport._gathered_producer(t)()
    assert bytes(t._sock.data) == b"a" * 10 + b"b" * 10 + b"c" * 10
    assert t._sock.calls == 3 and t._tx_buffered_byte_count == 0


def test_a_full_socket_raises_for_pika_to_wait_and_loses_nothing():
    t = _Transport(_Socket(5, "block"), [b"a" * 10, b"b" * 10])
    produce = transport._gathered_producer(t)
    with pytest.raises(BlockingIOError):  # pika's caller takes it as "wait until writable"
        produce()
    assert bytes(t._sock.data) == b"a" * 5 and t._tx_buffered_byte_count == 15
    assert b"".join(bytes(c) for c in t._tx_buffers) == b"a" * 5 + b"b" * 10
    produce()  # writable again
    assert bytes(t._sock.data) == b"a" * 10 + b"b" * 10 and not t._tx_buffers


def test_an_unknown_transport_is_left_as_pika_made_it():
    class Conn:
        _impl = None
    assert transport.tune(Conn()) == {"large_reads": False, "gathered_writes": False, "zero_copy_frames": False,
                                      "eager_sends": False}


class _Loop:
    """pika's I/O services, as far as the transport uses them: which fd has a writer."""

    def __init__(self) -> None:
        self.writers: list = []

    def set_writer(self, fd, callback) -> None:
        self.writers.append(fd)


class _LiveTransport(_Transport):
    """A plaintext transport in the active state, with pika's own buffering (no writer of its own)."""

    _STATE_ACTIVE = 1

    def __init__(self, sock, chunks=()) -> None:
        super().__init__(sock, list(chunks))
        sock.fileno = lambda: 7
        self._state, self._nbio = self._STATE_ACTIVE, _Loop()
        self._produce = transport._gathered_producer(self)

    def _buffer_tx_data(self, data) -> None:
        self._tx_buffers.append(data)
        self._tx_buffered_byte_count += len(data)

    def _on_socket_writable(self) -> None:
        self._produce()


def _publish(impl, body: bytes) -> None:
    method = spec.Basic.Publish(exchange="cf.run", routing_key="cf.run.L2.0")
    transport._frame_sender(impl, impl.transport)(1, method, (spec.BasicProperties(delivery_mode=1), body))


def _impl_on(t: _LiveTransport) -> _Impl:
    impl = _Impl(131064)
    impl.transport = t
    return impl


def test_a_message_with_nothing_before_it_is_sent_at_once_without_a_writer():
    t = _LiveTransport(_Socket())
    impl = _impl_on(t)
    _publish(impl, b"x" * 200_000)
    assert t._sock.calls == 1 and len(t._sock.data) == impl.bytes_sent
    assert not t._tx_buffers and t._tx_buffered_byte_count == 0
    assert t._nbio.writers == [] and impl.emitted == []  # pika's write, and its writer, never came into it


def test_what_the_socket_does_not_take_at_once_is_left_to_pikas_writer_in_order():
    for script in ((1000, "block"), ("block",)):  # part taken, then full; full at once
        t = _LiveTransport(_Socket(*script))
        impl = _impl_on(t)
        _publish(impl, b"y" * 200_000)
        assert t._nbio.writers == [7]  # one writer, for the rest
        t._on_socket_writable()
        assert not t._tx_buffers and bytes(t._sock.data) == _stock_frames(
            1, spec.Basic.Publish(exchange="cf.run", routing_key="cf.run.L2.0"), spec.BasicProperties(delivery_mode=1),
            b"y" * 200_000, 131064)


def test_a_message_queued_behind_others_goes_through_pikas_own_write():
    t = _LiveTransport(_Socket(), [b"waiting"])  # pika's writer is registered for these bytes
    impl = _impl_on(t)
    _publish(impl, b"z" * 10)
    assert t._sock.calls == 0 and impl.emitted  # not overtaking what waits, not sent twice
