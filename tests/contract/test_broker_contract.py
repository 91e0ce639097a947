"""One behavioural contract for every broker backend.

RabbitMQ comes from CUTTLEFISH_TEST_AMQP_URL or a container (tests/services.py).
Each test uses its own queue names, so a shared broker needs no cleaning.
"""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from broker import BrokerError, UnknownScheme, connect, redact_url

BACKENDS = ["memory", "rabbitmq"]


@pytest.fixture(params=BACKENDS)
def broker(request):
    """A connected broker of each backend (RabbitMQ from the session's service fixture)."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("amqp_url")
    b = connect(url)
    yield b
    b.close()


@pytest.fixture
def names(broker):
    """Fresh queue names (deleted afterwards)."""
    prefix = f"cf.test.{uuid.uuid4().hex[:8]}"
    made = []

    def make(suffix):
        made.append(f"{prefix}.{suffix}")
        return made[-1]

    yield make
    for name in made:
        broker.delete(name)


def test_publish_get_ack_in_order(broker, names):
    q = names("q")
    broker.declare(q)
    for i in range(50):
        broker.publish(q, f"m{i}".encode())
    got = []
    for _ in range(50):
        d = broker.get(q, timeout=5)
        got.append(d.body)
        broker.ack(d)
    assert got == [f"m{i}".encode() for i in range(50)]
    assert broker.get(q, timeout=0.1) is None


def test_get_times_out_empty(broker, names):
    q = names("empty")
    broker.declare(q)
    assert broker.get(q, timeout=0.2) is None


def test_reject_dead_letters(broker, names):
    q, dead = names("work"), names("dead")
    broker.declare(q, dead_letter=dead)
    broker.publish(q, b"poison")
    d = broker.get(q, timeout=5)
    broker.reject(d, "bad message")
    dl = broker.get(dead, timeout=5)
    assert dl is not None and dl.body == b"poison" and dl.reason == "bad message"
    broker.ack(dl)
    assert broker.get(q, timeout=0.2) is None


def test_depth_purge_and_publish_many(broker, names):
    a, b = names("a"), names("b")
    broker.declare(a)
    broker.declare(b)
    broker.publish_many([a, b], b"x")
    broker.publish(a, b"y")
    # a real broker routes asynchronously: counts are settled shortly after publish returns
    assert _eventually(lambda: broker.depth(a) == 2 and broker.depth(b) == 1)
    assert broker.purge(a) == 2
    assert broker.depth(a) == 0


def _eventually(check, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_large_bodies_round_trip(broker, names):
    q = names("big")
    broker.declare(q)
    body = os.urandom(1 << 20)
    broker.publish(q, body)
    d = broker.get(q, timeout=10)
    assert d.body == body
    broker.ack(d)


def test_rabbitmq_connections_take_every_transport_tweak(amqp_url):
    """Large reads, gathered writes, zero-copy frames and eager sends (broker/rabbitmq/transport.py) on the pika in use."""
    plain = not amqp_url.startswith("amqps://")  # TLS keeps pika's own writer
    b = connect(amqp_url)
    try:
        assert b.transport_tweaks == {"large_reads": True, "gathered_writes": plain, "zero_copy_frames": plain,
                                      "eager_sends": plain}
    finally:
        b.close()


def test_concurrent_publishers(broker, names):
    q = names("conc")
    broker.declare(q)

    def pub(k):
        for i in range(100):
            broker.publish(q, f"{k}:{i}".encode())

    threads = [threading.Thread(target=pub, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = []
    while (d := broker.get(q, timeout=1)) is not None:
        seen.append(d.body)
        broker.ack(d)
    assert sorted(seen) == sorted(f"{k}:{i}".encode() for k in range(4) for i in range(100))
    for k in range(4):  # per publisher, order holds
        mine = [s for s in seen if s.startswith(f"{k}:".encode())]
        assert mine == [f"{k}:{i}".encode() for i in range(100)]


def test_undeclared_queue_is_an_error(broker):
    with pytest.raises(BrokerError):
        broker.publish(f"cf.test.never.{uuid.uuid4().hex}", b"x")


def test_unknown_scheme_and_redaction():
    with pytest.raises(UnknownScheme, match="amqp://"):
        connect("kafka://host")
    assert redact_url("amqp://user:secret@host:5672/vh") == "amqp://user:***@host:5672/vh"
    assert "secret" not in redact_url("amqps://u:secret@h/")
    assert redact_url("amqp://u:ab/cd@rabbitmq:5672/%2F") == "amqp://u:***@rabbitmq:5672/%2F"
    assert redact_url("amqp://h/?password=s3cret") == "amqp://h/?password=***"
