"""The tuned pika transport (broker/rabbitmq/transport.py): the same bytes as pika's, fewer copies and sends."""
from __future__ import annotations

import collections
import math
import socket

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
    """pika's I/O services as its transport uses them: which fds have a writer, and the callbacks scheduled."""

    def __init__(self) -> None:
        self.writers: set = set()
        self.callbacks: list = []

    def set_reader(self, fd, callback) -> None:
        pass

    def remove_reader(self, fd) -> None:
        pass

    def set_writer(self, fd, callback) -> None:
        self.writers.add(fd)

    def remove_writer(self, fd) -> None:
        self.writers.discard(fd)

    def add_callback_threadsafe(self, callback) -> None:
        self.callbacks.append(callback)


class _WiredImpl(_Impl):
    """The connection's side: pika's own write path goes to the real transport."""

    def __init__(self, t) -> None:
        super().__init__(131064)
        self.transport = t

    def _adapter_emit_data(self, data) -> None:
        super()._adapter_emit_data(data)
        self.transport.write(data)


PUBLISH = spec.Basic.Publish(exchange="cf.run", routing_key="cf.run.L2.0")
TRANSIENT = spec.BasicProperties(delivery_mode=1)


def _wired(sock=None, sndbuf: int | None = None):
    """pika's real plaintext transport over one end of a socket pair, with the tweaks; and the other end."""
    from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

    if sock is None:
        sock, peer = socket.socketpair()
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setblocking(False)
        peer.settimeout(5)
    else:
        peer = None
    loop = _Loop()
    t = _AsyncPlaintextTransport(sock, None, loop)
    assert transport._can_gather(t) and transport._can_send_eagerly(t)  # the pika in use has what they need
    t._produce = transport._gathered_producer(t)
    return t, _WiredImpl(t), loop, peer


def _publish(impl, body: bytes) -> None:
    transport._frame_sender(impl, impl.transport)(1, PUBLISH, (TRANSIENT, body))


def _read(peer, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        got += peer.recv(1 << 20)
    return bytes(got)


def test_a_message_with_nothing_before_it_is_sent_at_once_without_a_writer():
    t, impl, loop, peer = _wired()
    _publish(impl, b"x" * 50_000)
    assert not loop.writers and impl.emitted == []  # neither pika's write nor its writer came into it
    assert t.get_write_buffer_size() == 0 and not t._tx_buffers
    assert _read(peer, impl.bytes_sent) == _stock_frames(1, PUBLISH, TRANSIENT, b"x" * 50_000, 131064)


def test_what_the_socket_does_not_take_at_once_is_left_to_pikas_writer_in_order():
    t, impl, loop, peer = _wired(sndbuf=4096)
    body = bytes(range(256)) * 1000
    _publish(impl, body)
    assert loop.writers == {t._sock.fileno()}  # one writer, for the rest
    assert 0 < t.get_write_buffer_size() == sum(len(b) for b in t._tx_buffers) < impl.bytes_sent
    got = bytearray()
    while t._tx_buffers:  # the I/O loop's turns: the socket is writable once the peer has read
        got += peer.recv(1 << 20)
        t._on_socket_writable()  # pika's own handler; it removes the writer when nothing is left
    got += _read(peer, impl.bytes_sent - len(got))
    assert bytes(got) == _stock_frames(1, PUBLISH, TRANSIENT, body, 131064)
    assert not loop.writers and t.get_write_buffer_size() == 0


def test_a_message_queued_behind_others_goes_through_pikas_own_write_after_them():
    t, impl, loop, peer = _wired()
    t.write(b"waiting")  # pika buffered these and registered its writer
    _publish(impl, b"z" * 10)
    assert b"".join(bytes(e) for e in impl.emitted) == _stock_frames(1, PUBLISH, TRANSIENT, b"z" * 10, 131064)
    peer.settimeout(0.05)
    with pytest.raises(TimeoutError):
        peer.recv(100)  # nothing overtook what waits
    t._on_socket_writable()
    peer.settimeout(5)
    assert _read(peer, 7 + impl.bytes_sent) == b"waiting" + _stock_frames(1, PUBLISH, TRANSIENT, b"z" * 10, 131064)


def test_a_broken_socket_aborts_the_transport_as_pikas_writer_would():
    t, impl, loop, peer = _wired()
    peer.close()
    _publish(impl, b"w" * 1000)
    assert t._state == t._STATE_FAILED and not loop.writers and not t._tx_buffers
    assert len(loop.callbacks) == 1  # the connection learns it is lost from pika's own notice


def test_an_interrupted_send_leaves_its_bytes_with_pikas_writer():
    class Interrupted:
        def fileno(self) -> int:
            return 99

        def sendmsg(self, buffers):
            raise KeyboardInterrupt

    t, impl, loop, _ = _wired(Interrupted())
    with pytest.raises(KeyboardInterrupt):
        _publish(impl, b"v" * 1000)
    assert loop.writers == {99} and t.get_write_buffer_size() == impl.bytes_sent  # not stuck, not lost


def test_an_inactive_transport_takes_pikas_path_and_sends_nothing():
    t, impl, loop, peer = _wired()
    t._state = t._STATE_FAILED
    _publish(impl, b"u" * 1000)
    assert impl.emitted and not t._tx_buffers and not loop.writers  # pika's write ignores it, as stock pika does
