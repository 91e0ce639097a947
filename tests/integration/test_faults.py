"""Attacks and faults against real RabbitMQ and Redis containers: forged messages sent with another AMQP client
(py-amqp), two drivers on one run, Redis restarted without persistence, paused, out of memory.

Each test ends either bitwise equal to an undisturbed run or with a clear error within a stated time.
"""
from __future__ import annotations

import os
import threading
import time
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from neuron import codec, protocol
from neuron.role import HEAD, Role
from orchestrator.config import load_config
from orchestrator.config.plan import build_plan
from orchestrator.errors import TrainingError
from orchestrator.training.runner import train_run
from paramstore import open_store
from paramstore.errors import StoreError
from paramstore.run import RunRecord
from tests import services
from tests.conftest import ROOT, require
from tests.integration.test_local_run import _same

pytestmark = pytest.mark.integration

CONFIG = ROOT / "examples" / "tiny.yaml"
STEPS = 64  # two epochs of small_mnist, a checkpoint every 8 steps


def _config(amqp_url=None, redis_url=None):
    config = load_config(CONFIG).with_training(epochs=2, checkpoint_every=8, stall_timeout=60)
    return config.replace(broker=amqp_url, paramstore=redis_url) if amqp_url else config


@pytest.fixture(scope="module")
def reference(small_mnist):
    """Weights of the undisturbed embedded run (memory broker and store)."""
    train, test = small_mnist
    return train_run(_config(), train, test, run_id="ref", max_steps=STEPS).params


def _own(kind: str, port: int):
    """(URL by the container's address, container) of a fresh service of one test, which may restart it.

    By address, not a published port: the port mapping may change when the container restarts.
    """
    problem = services.docker_problem()
    require(problem is None, f"needs Docker: {problem}")
    with getattr(services, kind)() as (url, box):
        direct = services.direct(url, box, port)
        require(direct != url, f"needs the {kind} container's own address to be reachable from here")
        yield direct, box


@pytest.fixture
def own_redis():
    """(URL, container, password) of a Redis of this test alone: the test restarts, pauses or fills it."""
    for url, box in _own("redis", 6379):
        yield url, box, urlsplit(url).password


@pytest.fixture
def own_rabbitmq():
    """(URL, container) of a RabbitMQ of this test alone: the test restarts it or raises its alarms."""
    yield from _own("rabbitmq", 5672)


def _wait_for_step(redis_url: str, run_id: str, step: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with open_store(redis_url) as store:
        record = RunRecord(store, run_id)
        while time.monotonic() < deadline:
            if any((b.get("step") or 0) >= step for b in record.heartbeats().values()):
                return
            time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not reach step {step}")


def _raw_publish(amqp_url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish with py-amqp (not pika, which the runtime uses) through the default exchange."""
    import amqp

    parts = urlsplit(amqp_url)
    conn = amqp.Connection(host=f"{parts.hostname}:{parts.port}", userid=unquote(parts.username),
                           password=unquote(parts.password), virtual_host="/")
    conn.connect()
    try:
        channel = conn.channel()
        for queue, body in messages:
            channel.basic_publish(amqp.Message(body), exchange="", routing_key=queue)
    finally:
        conn.close()


def test_forged_messages_from_another_client_change_nothing(small_mnist, reference, amqp_url, redis_url):
    """Forged LABELS, next-generation inputs, control and reports, signed with a guessed key: all dead-lettered."""
    train, test = small_mnist
    config, run_id = _config(amqp_url, redis_url), f"it-forged-{os.getpid()}"
    topo = build_plan(config, run_id, len(train) // config.training.batch_size)
    sign = dict(key=os.urandom(32))  # what an attacker without the run's key can do
    tag, forged = topo.run_tag, []
    for step in range(10, 18):  # wrong labels for the loss head, ahead of the real ones (dedup keeps the first)
        forged.append((HEAD.queue(run_id), codec.encode(protocol.LABELS, tag, 1, step, nmicro=4,
                                                        array=np.zeros(64, np.int32), **sign)))
    for micro in range(4):  # inputs for a generation not started yet: they would wait in the buffer
        forged.append((topo.queue(1, 0), codec.encode(protocol.ACT, tag, 2, 0, micro=micro, nmicro=4,
                                                      array=np.full((16, 784), 255, np.uint8), **sign)))
    forged.append((topo.queue(1, 0), codec.encode(protocol.CONTROL, tag, 1, 0, **sign,
                                                  data=protocol.Start(2, 0, None, 99).to_data())))
    for role in topo.roles():
        forged.append((role.queue(run_id), codec.encode(protocol.CONTROL, tag, 1, 0, **sign,
                                                        data=protocol.Stop(2 ** 32 - 1, 99).to_data())))
    driver = topo.queue(0)
    forged.append((driver, codec.encode(protocol.REPORT, tag, 1, 0, source=Role(1, 0), **sign,
                                        data={"event": "failed", "actor": "L1.0", "error": "attacker's text"})))
    forged += [(driver, codec.encode(protocol.REPORT, tag, 1, 0, source=Role(1, 0), **sign,
                                     data={"event": "hello", "actor": "L1.0", "pid": 1})) for _ in range(51)]
    forged.append((driver, codec.encode(protocol.REPORT, tag, 1, 0, source=Role(1, 0), **sign,
                                        data={"event": "checkpoint", "actor": "L1.0", "version": 9999})))
    sent = []

    def attack(runtime):
        def loop():
            _wait_for_step(redis_url, run_id, 5)
            _raw_publish(amqp_url, forged)
            sent.append(len(forged))
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(config, train, test, run_id=run_id, max_steps=STEPS, target="local", on_actors=attack)
    assert sent == [len(forged)] and result.recoveries == 0
    assert _same(result.params, reference)
    reasons = [str(m.headers.get("x-cuttlefish-reason", "")) for m in _dead_letters(amqp_url, topo.dead_letter_queue)]
    assert len(reasons) == len(forged) and all(r.startswith("BadSignature") for r in reasons), reasons[:3]


def test_a_second_driver_is_refused_at_once_and_the_first_finishes_bitwise(small_mnist, amqp_url, redis_url):
    train, test = small_mnist
    # long enough that the first driver still holds the run when the resuming one has waited out its lease check
    epochs, run_id = 8, f"it-two-{os.getpid()}"
    config = _config(amqp_url, redis_url).with_training(epochs=epochs)
    reference = train_run(_config().with_training(epochs=epochs), train, test, run_id="ref-two").params
    outcomes = {}

    def second_driver(runtime):
        def loop():
            _wait_for_step(redis_url, run_id, 5)
            for mode in ("start", "resume"):
                t0 = time.monotonic()
                try:
                    train_run(config, train, test, run_id=run_id, resume=mode == "resume", target="local")
                    outcomes[mode] = ("trained", time.monotonic() - t0)
                except TrainingError as exc:
                    outcomes[mode] = (str(exc), time.monotonic() - t0)
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(config, train, test, run_id=run_id, target="local", on_actors=second_driver)
    deadline = time.monotonic() + 30
    while len(outcomes) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _same(result.params, reference) and result.recoveries == 0
    start, resume = outcomes["start"], outcomes["resume"]
    assert "driven by another driver" in start[0] and "second driver is refused" in start[0] and start[1] < 2
    # a resuming driver first waits to see whether the holder still renews its lease: a third of its 15 s
    assert "driven by another driver" in resume[0] and resume[1] < 8


def test_redis_restarted_without_persistence_ends_the_run_clearly(small_mnist, amqp_url, own_redis):
    """The run's manifest vanished under it: the run ends within 30 s and nothing is recreated."""
    train, test = small_mnist
    redis_url, box, password = own_redis
    config, run_id = _config(amqp_url, redis_url), f"it-lost-{os.getpid()}"

    def restart(runtime):
        def loop():
            _wait_for_step(redis_url, run_id, 12)
            box.exec(["redis-cli", "-a", password, "--no-auth-warning", "CONFIG", "SET", "save", ""])
            box.get_wrapped_container().restart(timeout=5)
            restarted.append(time.monotonic())
        threading.Thread(target=loop, daemon=True).start()

    restarted = []
    with pytest.raises((TrainingError, StoreError)) as exc:
        train_run(config, train, test, run_id=run_id, max_steps=10 * STEPS, target="local", on_actors=restart)
    ended = time.monotonic()
    assert restarted and ended - restarted[0] < 30
    assert "lost run" in str(exc.value) or "no longer has the manifest" in str(exc.value), str(exc.value)
    assert "restarted without persistence" in str(exc.value)
    with open_store(redis_url) as store:
        assert RunRecord(store, run_id).manifest() is None  # never recreated


@pytest.mark.parametrize("outage", ["pause", "stop"])
def test_an_8_second_redis_outage_is_ridden_out_bitwise(small_mnist, reference, amqp_url, own_redis, outage):
    """Redis paused (requests hang) or stopped (connections refused) for 8 s: retried, not fatal; bitwise."""
    train, test = small_mnist
    redis_url, box, _ = own_redis
    config, run_id = _config(amqp_url, redis_url), f"it-{outage}-{os.getpid()}"
    done = []

    def disturb(runtime):
        def loop():
            _wait_for_step(redis_url, run_id, 6)
            container = box.get_wrapped_container()
            if outage == "pause":
                container.pause()
            else:
                container.stop(timeout=5)  # it saves on the way down: its data comes back
            time.sleep(8)
            container.unpause() if outage == "pause" else container.start()
            done.append(True)
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(config, train, test, run_id=run_id, max_steps=STEPS, target="local", on_actors=disturb)
    assert done and _same(result.params, reference)


def test_redis_out_of_memory_ends_the_run_at_once_naming_the_store(small_mnist, amqp_url, own_redis, capsys,
                                                                    tmp_path, mnist_dir):
    """Exit 1 within 30 s of the store filling up, with one readable line naming the store, no bytes."""
    from orchestrator.cli import main

    redis_url, box, password = own_redis
    run_id = f"it-oom-{os.getpid()}"
    filled = []

    def fill():
        _wait_for_step(redis_url, run_id, 4, timeout=120)
        code, out = box.exec(["redis-cli", "-a", password, "--no-auth-warning", "INFO", "memory"])
        used = int(next(line.split(":")[1] for line in out.decode().splitlines() if line.startswith("used_memory:")))
        box.exec(["redis-cli", "-a", password, "--no-auth-warning", "CONFIG", "SET", "maxmemory-policy", "noeviction"])
        box.exec(["redis-cli", "-a", password, "--no-auth-warning", "CONFIG", "SET", "maxmemory", str(used + 4096)])
        filled.append(time.monotonic())

    threading.Thread(target=fill, daemon=True).start()
    rc = main(["train", str(CONFIG), "--data", str(mnist_dir), "--target", "local", "--broker", amqp_url,
               "--store", redis_url, "--run-id", run_id, "--max-steps", "2000", "--quiet"])
    ended = time.monotonic()
    err = capsys.readouterr().err
    assert rc == 1 and filled and ended - filled[0] < 30
    line = [x for x in err.splitlines() if x.startswith("orchestrator: error:")]
    assert len(line) == 1, err
    assert "out of memory" in line[0] and "redis://:***@" in line[0], line[0]
    assert password not in err and "\\x" not in line[0] and "b'" not in line[0]


def test_a_broker_restart_is_replayed_as_soon_as_it_is_back(small_mnist, own_rabbitmq, redis_url):
    """RabbitMQ restarted mid-run (transient messages lost): replayed within 30 s, not after a stall; bitwise."""
    train, test = small_mnist
    amqp_url, box = own_rabbitmq
    steps = 4 * 32  # under way while the broker restarts
    reference = train_run(_config().with_training(epochs=4), train, test, run_id="ref", max_steps=steps).params
    config = _config(amqp_url, redis_url).with_training(epochs=4)  # stall_timeout 60 s
    run_id = f"it-brk-{os.getpid()}"
    restarted, replayed = [], []

    def restart(runtime):
        def loop():
            _wait_for_step(redis_url, run_id, 10)
            # the broker node restarts inside its container: connections drop, transient messages are gone
            for command in ("stop_app", "start_app"):
                code, out = box.exec(["rabbitmqctl", command])
                assert code == 0, out
            restarted.append(time.monotonic())
            with open_store(redis_url) as store:
                record = RunRecord(store, run_id)
                while time.monotonic() - restarted[0] < 90:
                    if (record.manifest().generation or 0) >= 2:  # the driver opened the replay's generation
                        replayed.append(time.monotonic())
                        return
                    time.sleep(0.1)
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(config, train, test, run_id=run_id, max_steps=steps, target="local", on_actors=restart)
    assert restarted and replayed and result.recoveries >= 1
    assert replayed[0] - restarted[0] < 30  # a stall would take the 60 s of stall_timeout
    assert _same(result.params, reference)


def _dead_letters(amqp_url: str, queue: str) -> list:
    import amqp

    parts = urlsplit(amqp_url)
    conn = amqp.Connection(host=f"{parts.hostname}:{parts.port}", userid=unquote(parts.username),
                           password=unquote(parts.password), virtual_host="/")
    conn.connect()
    letters = []
    try:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            letters.append(message)
    finally:
        conn.close()
    return letters


def test_oversized_bodies_are_dropped_and_not_kept_whole(small_mnist, reference, amqp_url, redis_url):
    """Five 20 MB bodies into a neuron's queue: rejected, dead-lettered as their first KB; bitwise result."""
    train, test = small_mnist
    config, run_id = _config(amqp_url, redis_url), f"it-big-{os.getpid()}"
    topo = build_plan(config, run_id, len(train) // config.training.batch_size)
    sent = []

    def flood(runtime):
        def loop():
            _wait_for_step(redis_url, run_id, 5)
            body = b"CF" + os.urandom(20 << 20)
            _raw_publish(amqp_url, [(topo.queue(1, 0), body)] * 5)
            sent.append(True)
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(config, train, test, run_id=run_id, max_steps=STEPS, target="local", on_actors=flood)
    assert sent and _same(result.params, reference)
    letters = _dead_letters(amqp_url, topo.dead_letter_queue)
    assert len(letters) == 5
    assert all(len(m.body) == 1024 and m.headers["x-cuttlefish-truncated"] == (20 << 20) + 2 for m in letters)
    assert all(str(m.headers["x-cuttlefish-reason"]).startswith("OversizedMessage") for m in letters)


def test_a_broker_memory_alarm_is_reported_as_such(small_mnist, own_rabbitmq, redis_url):
    """A RabbitMQ over its memory watermark blocks publishers: the run ends within the stall time saying so."""
    train, test = small_mnist
    amqp_url, box = own_rabbitmq
    # Enough epochs that the run is still going when rabbitmqctl (seconds to start) raises the alarm.
    config = _config(amqp_url, redis_url).with_training(epochs=400, stall_timeout=10)
    run_id = f"it-alarm-{os.getpid()}"
    raised = []

    def alarm(runtime):
        def loop():
            _wait_for_step(redis_url, run_id, 5)
            code, out = box.exec(["rabbitmqctl", "set_vm_memory_high_watermark", "0.00001"])
            assert code == 0, out
            raised.append(time.monotonic())
        threading.Thread(target=loop, daemon=True).start()

    with pytest.raises(TrainingError, match="the broker raised a resource alarm .*memory") as exc:
        train_run(config, train, test, run_id=run_id, target="local", on_actors=alarm)
    assert raised and time.monotonic() - raised[0] < 60, str(exc.value)
