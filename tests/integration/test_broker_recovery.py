"""The RabbitMQ backend when the broker drops its connections or goes away."""
from __future__ import annotations

import time
import uuid

import pytest

from broker import BrokerError, BrokerUnavailable, connect
from tests import services
from tests.conftest import require

pytestmark = pytest.mark.integration


@pytest.fixture
def own_rabbitmq():
    """A RabbitMQ of this test alone, since the test closes its connections and stops it."""
    problem = services.docker_problem()
    require(problem is None, f"needs Docker: {problem}")
    with services.rabbitmq() as (url, box):
        yield url, box


def test_reconnects_and_redelivers_after_the_broker_drops_the_connection(own_rabbitmq):
    url, box = own_rabbitmq
    b = connect(url, reconnect_timeout=30)
    q = f"cf.recovery.{uuid.uuid4().hex[:8]}.q"
    b.declare(q, dead_letter=q.rsplit(".", 1)[0] + ".dead")
    b.publish(q, b"first")
    taken = b.get(q, timeout=10)
    assert taken.body == b"first"
    code, out = box.exec(["rabbitmqctl", "close_all_connections", "test"])
    assert code == 0, out
    again = b.get(q, timeout=30)  # never acked: the broker hands it out again on the new connection
    assert again is not None and again.body == b"first"
    b.ack(taken)  # the old delivery's ack belongs to a dead connection and is ignored
    b.ack(again)
    b.publish(q, b"second")
    d = b.get(q, timeout=10)
    assert d is not None and d.body == b"second"
    b.ack(d)
    assert b.get(q, timeout=0.5) is None
    b.close()


def test_a_broker_that_stays_away_is_a_clear_error(own_rabbitmq):
    url, box = own_rabbitmq
    b = connect(url, reconnect_timeout=3)
    q = f"cf.recovery.{uuid.uuid4().hex[:8]}.q"
    b.declare(q)
    box.get_wrapped_container().stop(timeout=5)
    t0 = time.monotonic()
    with pytest.raises(BrokerError) as info:
        while time.monotonic() - t0 < 60:
            b.publish(q, b"x")
            b.get(q, timeout=0.5)
    assert isinstance(info.value, BrokerUnavailable)
    assert time.monotonic() - t0 < 30
    assert url.split(":")[2].split("@")[0] not in str(info.value)  # no password in the message
    b.close()
