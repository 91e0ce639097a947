"""One OS process per neuron over a real RabbitMQ and Redis: exactness, kill -9 recovery, hostile input."""
from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from broker import connect
from neuron import codec
from orchestrator.config import load_config
from orchestrator.training.runner import train_run
from paramstore import open_store
from paramstore.checkpoint import Checkpoints
from paramstore.run import RunRecord
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CONFIG = ROOT / "examples" / "tiny.yaml"
STEPS = 300


def _config(amqp_url=None, redis_url=None):
    # small_mnist has 2,000 samples, 32 steps an epoch: ten epochs give the runs STEPS steps
    config = load_config(CONFIG).with_training(epochs=10)
    return config.replace(broker=amqp_url, paramstore=redis_url) if amqp_url else config


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(w1, w2) and np.array_equal(b1, b2)
                                    for (w1, b1), (w2, b2) in zip(a, b))


@pytest.fixture(scope="module")
def reference(small_mnist):
    """Weights of the undisturbed embedded run (memory broker and store)."""
    train, test = small_mnist
    result = train_run(_config(), train, test, run_id="ref", max_steps=STEPS)
    assert result.steps == STEPS
    return result.params


def test_processes_over_amqp_redis_match_embedded_memory_bitwise(small_mnist, reference, amqp_url, redis_url):
    train, test = small_mnist
    seen = {}

    def watch(group):
        def beats():  # heartbeats of every process appear in the store while it runs
            store = open_store(redis_url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(seen) < len(group.roles):
                seen.update(RunRecord(store, run_id).heartbeats())
                time.sleep(0.2)
            store.close()
        threading.Thread(target=beats, daemon=True).start()

    run_id = f"it-exact-{os.getpid()}"
    result = train_run(_config(amqp_url, redis_url), train, test, run_id=run_id, max_steps=STEPS,
                       target="local", on_actors=watch)
    assert _same(result.params, reference)
    assert result.recoveries == 0
    assert set(seen) == {"L1.0", "L1.1", "L1.2", "L2.0", "L2.1", "L3.0", "L3.1", "head"}
    assert all(isinstance(s["pid"], int) and s["pid"] != os.getpid() for s in seen.values())


def test_status_shows_the_neurons_of_a_running_run(small_mnist, amqp_url, redis_url, capsys):
    from orchestrator.cli import main

    train, test = small_mnist
    run_id, tables = f"it-status-{os.getpid()}", []

    def poll(group):
        def loop():
            store = open_store(redis_url)
            while not any((b.get("step") or 0) > 0 for b in RunRecord(store, run_id).heartbeats().values()):
                time.sleep(0.05)
            store.close()
            main(["status", "--store", redis_url, "--broker", amqp_url, "--run-id", run_id])
            tables.append(True)
        threading.Thread(target=loop, daemon=True).start()

    train_run(_config(amqp_url, redis_url), train, test, run_id=run_id, max_steps=STEPS, target="local",
              on_actors=poll)
    assert tables
    assert main(["status", "--store", redis_url, "--run-id", run_id]) == 0
    during, after = capsys.readouterr().out.split(f"run {run_id}:")[1:3]
    assert "running" in during and "8/8 neurons alive" in during
    rows = [line.split() for line in during.splitlines() if line.startswith(("L", "head"))]
    assert sorted(r[0] for r in rows) == ["L1.0", "L1.1", "L1.2", "L2.0", "L2.1", "L3.0", "L3.1", "head"]
    assert all(r[1] == "yes" and r[2] in ("-", "1") and r[7].isdigit() for r in rows)  # alive, a queue depth
    assert any(r[2] == "1" and int(r[3]) > 0 for r in rows)  # heartbeats carry generation and step
    assert f"done, generation 1, checkpoint {STEPS} of {STEPS} steps (100%)" in after


def test_killed_neurons_recover_bitwise(small_mnist, reference, amqp_url, redis_url):
    train, test = small_mnist
    killed, rng = [], random.Random(11)

    def killer(group):
        def loop():
            for _ in range(3):
                time.sleep(rng.uniform(0.5, 1.5))
                name = rng.choice(sorted(group.pids()))
                try:
                    os.kill(group.pids()[name], signal.SIGKILL)
                    killed.append(name)
                except ProcessLookupError:
                    pass
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(_config(amqp_url, redis_url), train, test, run_id=f"it-kill-{os.getpid()}",
                       max_steps=STEPS, target="local", on_actors=killer)
    assert len(killed) == 3 and result.recoveries >= 1
    assert _same(result.params, reference)


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        except FileNotFoundError:
            pass
    return found


def _cli(args, env):
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "train", str(CONFIG), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_driver_resumes_and_killed_neurons_recover_bitwise(mnist_dir, amqp_url, redis_url, tmp_path):
    """The CLI end to end: kill -9 neurons at random, kill -9 the driver, resume it: same model file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = ["--data", str(mnist_dir), "--max-steps", str(STEPS), "--quiet"]
    ref = subprocess.run([sys.executable, "-m", "orchestrator", "train", str(CONFIG), *common,
                          "--save-model", str(tmp_path / "ref.npz")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = ["--target", "local", "--broker", amqp_url, "--store", redis_url, "--run-id", f"it-cli-{os.getpid()}",
           "--save-model", str(tmp_path / "dist.npz"), *common]
    rng = random.Random(5)
    driver = _cli(run, env)
    deadline = time.monotonic() + 60
    while len(_children(driver.pid)) < 8 and time.monotonic() < deadline:  # all neurons up
        time.sleep(0.1)
    time.sleep(1.5)
    kills = 0
    while kills < 2 and driver.poll() is None:
        os.kill(rng.choice(_children(driver.pid)), signal.SIGKILL)
        kills += 1
        time.sleep(rng.uniform(0.3, 1.0))
    assert driver.poll() is None, "the run ended before the driver could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.communicate(timeout=30)
    resumed = _cli([*run, "--resume"], env)
    time.sleep(3)
    for pid in _children(resumed.pid)[:1]:  # and one more neuron of the resumed driver
        os.kill(pid, signal.SIGKILL)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert kills == 2
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "dist.npz")
    assert sorted(a.files) == sorted(b.files)
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert "password" not in err and amqp_url.split(":")[2].split("@")[0] not in err  # no secret in the logs


def test_hostile_messages_over_rabbitmq_are_dead_lettered(small_mnist, reference, amqp_url, redis_url):
    """Junk published straight into the neurons' queues mid-run: rejected, dead-lettered, result unchanged."""
    train, test = small_mnist
    run_id = f"it-hostile-{os.getpid()}"
    config = _config(amqp_url, redis_url)
    injected = []

    def inject(group):
        from orchestrator.config.plan import build_plan

        topo = build_plan(config, run_id, len(train) // config.training.batch_size)
        other = build_plan(config, "another-run", len(train) // config.training.batch_size)

        def loop():
            time.sleep(2)
            with open_store(redis_url) as store:  # the key a process of the run signs with
                key = Checkpoints(store, run_id).record.message_key()
            encode = functools.partial(codec.encode, key=key)
            junk = {
                "random bytes": os.urandom(300),
                "pickle": b"\x80\x04\x95" + os.urandom(40) + b".",
                "wrong dtype": encode(codec.ACT, topo.run_tag, 1, 3, nmicro=1, array=np.zeros((4, 784), np.float64)),
                "wrong shape": encode(codec.ACT, topo.run_tag, 1, 3, nmicro=1, array=np.zeros((4, 7), np.float32)),
                "oversized": b"CF" + os.urandom(topo.max_message_bytes() + 1024),
                "another run": encode(codec.ACT, other.run_tag, 1, 3, nmicro=1, array=np.zeros((4, 784), np.float32)),
            }
            stale = encode(codec.ACT, topo.run_tag, 0, 3, nmicro=1, array=np.zeros((4, 784), np.float32))
            with connect(amqp_url) as b:
                for q in topo.all_queues():
                    b.declare(q, dead_letter=topo.dead_letter_queue)
                for name, body in junk.items():
                    b.publish(topo.queue(1, 0), body)
                    b.publish(topo.queue(2, 1), body)
                    injected.append(name)
                b.publish(topo.queue(1, 1), stale)  # an old generation's message: dropped, not dead-lettered
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(config, train, test, run_id=run_id, max_steps=STEPS, target="local", on_actors=inject)
    assert len(injected) == 6
    assert _same(result.params, reference)
    with connect(amqp_url) as b:
        from orchestrator.config.plan import build_plan

        dead = build_plan(config, run_id, 1).dead_letter_queue
        b.declare(dead)
        letters = []
        while (d := b.get(dead, timeout=2)) is not None:
            letters.append(d)
            b.ack(d)
    assert len(letters) == 12, [d.reason for d in letters]
    assert all(d.reason and d.headers.get("x-first-death-queue") for d in letters)


def test_external_neurons_restarted_by_their_own_policy_recover_bitwise(small_mnist, reference, amqp_url, redis_url):
    """--target external: neurons started outside the driver (as containers are) and restarted by a policy."""
    from orchestrator.config.plan import build_plan
    from orchestrator.runtimes.local import ProcessGroup

    train, test = small_mnist
    config, run_id = _config(amqp_url, redis_url), f"it-ext-{os.getpid()}"
    topo = build_plan(config, run_id, len(train) // config.training.batch_size)
    group = ProcessGroup(topo, amqp_url, redis_url)  # the neurons wait for the driver's manifest
    group.start()
    stop, killed = threading.Event(), []

    def restart_policy():  # like compose's restart: on-failure, without telling the driver anything
        while not stop.wait(0.2):
            for name, proc in list(group.procs.items()):
                if proc.poll() not in (None, 0):
                    group.procs[name] = group._spawn(name)

    def killer():  # once L2.1 has trained a while, mid-run
        store = open_store(redis_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            beat = RunRecord(store, run_id).heartbeats().get("L2.1", {})
            if (beat.get("step") or 0) > 0:
                os.kill(group.pids()["L2.1"], signal.SIGKILL)
                killed.append("L2.1")
                break
            time.sleep(0.05)
        store.close()

    threading.Thread(target=restart_policy, daemon=True).start()
    threading.Thread(target=killer, daemon=True).start()
    try:
        result = train_run(config, train, test, run_id=run_id, max_steps=STEPS, target="external")
    finally:
        stop.set()
        group.stop()
    assert killed == ["L2.1"] and result.recoveries >= 1
    assert _same(result.params, reference)


def test_dynamodb_store_on_the_local_target_matches_memory(small_mnist, reference, amqp_url, dynamodb_url):
    train, test = small_mnist
    config = _config(amqp_url, dynamodb_url)
    result = train_run(config, train, test, run_id=f"it-ddb-{os.getpid()}", max_steps=STEPS, target="local")
    assert _same(result.params, reference)


def test_rescaling_layers_of_a_running_run_keeps_the_mathematics(small_mnist, amqp_url, redis_url, capsys):
    """Layer 1 from 3 neurons to 1, then to 4; float64, so agreement is to rounding (shards change sums)."""
    from orchestrator.cli import main

    train, test = small_mnist
    config = _config().with_training(dtype="float64")
    plain = train_run(config, train, test, run_id="ref64", max_steps=STEPS).params
    run_id, answers = f"it-scale-{os.getpid()}", []

    def scaler(group):
        def loop():
            for shards in (1, 4):
                answers.append(main(["scale", "--store", redis_url, "--run-id", run_id, "--layer", "1",
                                     "--shards", str(shards), "--wait", "120"]))
        threading.Thread(target=loop, daemon=True).start()

    result = train_run(config.replace(broker=amqp_url, paramstore=redis_url), train, test, run_id=run_id,
                       max_steps=STEPS, target="local", on_actors=scaler)
    assert answers == [0, 0]
    out = capsys.readouterr().out
    assert "layer 1: 3 -> 1 neurons at checkpoint" in out and "layer 1: 1 -> 4 neurons at checkpoint" in out
    worst = max(float(np.abs(a - b).max()) for p, q in zip(plain, result.params) for a, b in zip(p, q))
    assert worst < 1e-12, worst
    with open_store(redis_url) as store:
        manifest = Checkpoints(store, run_id).manifest()
    assert [(r["from"], r["to"]) for r in manifest["rescales"]] == [(3, 1), (1, 4)]
    assert all(r["pause_s"] > 0 for r in manifest["rescales"]) and manifest["topology"]["shards"][0] == 4
    assert main(["status", "--store", redis_url, "--run-id", run_id]) == 0
    table = capsys.readouterr().out
    assert sorted(line.split()[0] for line in table.splitlines() if line.startswith("L1.")) == \
        ["L1.0", "L1.1", "L1.2", "L1.3"]
    assert "neurons per layer: [4, 2, 2]" in table and "rescaled layer 1: 1 -> 4 neurons" in table
