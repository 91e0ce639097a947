"""pika's socket transport, tuned for large bodies: big reads, and each message written in one gathered send.

Stock pika reads 4 KiB per recv(), copies a body twice while framing it (a slice per frame, then the
frame's bytes), writes every frame with a send() of its own (four for a 128 KB body), and sends nothing
until its I/O loop next finds the socket writable (an epoll change, a poll and another change per
message). Over a plaintext connection the frames of a message here are memoryviews of the body and go
out in one sendmsg(), at once when nothing else waits to be written; TLS keeps pika's own writer (an SSL
socket has no sendmsg). Each tweak is applied only where the pika in use has the internals it relies on;
otherwise that connection keeps pika's behaviour.
"""
from __future__ import annotations

import itertools
import logging
import math
import struct
from typing import Any

from pika import frame, spec

log = logging.getLogger(__name__)

# pika reads its socket 4 KiB per recv(); a 128 KB body then took ~3x as long to arrive (bench/pingpong.py)
READ_BYTES = 1 << 20
_FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size: AMQP 0-9-1 section 4.2.3
_FRAME_END = bytes((spec.FRAME_END,))
_MAX_IOV = 512  # buffers per sendmsg(); Linux takes up to 1024


def tune(conn: Any, read_bytes: int = READ_BYTES) -> dict[str, bool]:
    """Apply the tweaks to the BlockingConnection `conn`; says which ones took (for tests and logs)."""
    impl: Any = getattr(conn, "_impl", None)
    transport: Any = getattr(impl, "_transport", None)
    done = {"large_reads": False, "gathered_writes": False, "zero_copy_frames": False, "eager_sends": False}
    if transport is not None and hasattr(transport, "_MAX_RECV_BYTES"):
        transport._MAX_RECV_BYTES = read_bytes  # an instance attribute: pika's class and other connections keep theirs
        done["large_reads"] = True
    if _can_gather(transport):
        transport._produce = _gathered_producer(transport)
        done["gathered_writes"] = True
        if all(hasattr(impl, name) for name in ("_send_message", "_body_max_length", "_adapter_emit_data",
                                                "bytes_sent", "frames_sent")):
            eager = _can_send_eagerly(transport)
            impl._send_message = _frame_sender(impl, transport if eager else None)
            done["zero_copy_frames"] = True
            done["eager_sends"] = eager
    return done


def _can_gather(transport: Any) -> bool:
    # the plaintext transport only: its socket is a plain socket, and _produce is what writes it
    sock = getattr(transport, "_sock", None)
    return (type(transport).__name__ == "_AsyncPlaintextTransport" and hasattr(sock, "sendmsg")
            and hasattr(transport, "_tx_buffers") and hasattr(transport, "_tx_buffered_byte_count"))


def _gathered_producer(transport: Any):
    """A replacement of the transport's _produce: everything buffered goes out in as few sendmsg() as the socket takes."""
    sock, buffers = transport._sock, transport._tx_buffers

    def produce() -> None:
        # as pika's own: send until the buffers are empty or the socket would block (BlockingIOError,
        # which pika's caller takes as "wait until writable"); a partial send leaves the rest queued
        while buffers:
            sent = sock.sendmsg(list(itertools.islice(buffers, 0, _MAX_IOV)))
            transport._tx_buffered_byte_count -= sent
            while sent:
                first = buffers[0]
                if sent < len(first):
                    buffers[0] = memoryview(first)[sent:]
                    break
                buffers.popleft()
                sent -= len(first)
    return produce


def _can_send_eagerly(transport: Any) -> bool:
    # pika's invariant this relies on: a writer is registered exactly while _tx_buffers holds data
    return all(hasattr(transport, name) for name in ("_state", "_STATE_ACTIVE", "_buffer_tx_data", "_nbio",
                                                     "_on_socket_writable", "_initiate_abort"))


def _send_now(transport: Any, pieces: list) -> None:
    """Buffer `pieces` and write them at once; what the socket does not take now is left to pika's writer.

    A failed write aborts the transport as pika's writer would (the connection is lost, and reconnected by
    its I/O thread). Unlike pika's path, a publish no longer runs the I/O loop: what the broker sends back
    (a channel's closing, a block) is read when the connection is next serviced, not during the publish.
    """
    for piece in pieces:
        transport._buffer_tx_data(piece)
    try:
        transport._produce()
    except BlockingIOError:
        pass  # the socket is full: pika's writer sends the rest once it is writable
    except OSError as exc:
        log.warning("writing to the broker failed (%s: %s); the connection is aborted", type(exc).__name__, exc)
        transport._initiate_abort(exc)
    finally:
        # whatever happened (an interrupt too), bytes left buffered have pika's writer: none is left stuck
        if transport._tx_buffers and transport._state == transport._STATE_ACTIVE:
            transport._nbio.set_writer(transport._sock.fileno(), transport._on_socket_writable)


def _frame_sender(impl: Any, transport: Any = None):
    """A replacement of the connection's _send_message whose body frames are views of the body, not copies.

    With `transport` (a gathering one), a message is written at once when nothing waits before it.
    """

    def send_message(channel_number: int, method: Any, content: tuple) -> None:
        properties, body = content
        length = len(body)
        # marshalled first, as pika does, so a marshalling error sends nothing
        pieces: list = [frame.Method(channel_number, method).marshal(),
                        frame.Header(channel_number, length, properties).marshal()]
        view, size = memoryview(body), impl._body_max_length
        chunks = math.ceil(length / size)
        for n in range(chunks):
            chunk = view[n * size:(n + 1) * size]
            pieces += (_FRAME_HEAD.pack(spec.FRAME_BODY, channel_number, len(chunk)), chunk, _FRAME_END)
        impl.bytes_sent += sum(len(piece) for piece in pieces)
        impl.frames_sent += 2 + chunks
        if transport is not None and transport._state == transport._STATE_ACTIVE and not transport._tx_buffers:
            _send_now(transport, pieces)  # no writer registered (nothing buffered): none to register or remove
            return
        for piece in pieces:
            impl._adapter_emit_data(piece)
    return send_message
