"""`docker compose up` of the repository's docker-compose.yml: it trains; a killed neuron changes nothing."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time

import numpy as np
import pytest

from tests import services
from tests.conftest import ROOT, require

pytestmark = pytest.mark.e2e

COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose_cmd():
    """`docker compose` (v2), required under CI."""
    problem = services.docker_problem()
    require(problem is None, f"needs Docker: {problem}")
    ok = shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    require(bool(ok), "needs the docker compose v2 plugin (compose/install-compose-v2.sh)")
    require(bool(os.environ.get("CUTTLEFISH_NEURON_IMAGE")) or services.docker_problem() is None,
            "needs the images of compose/build-images.sh")
    return ["docker", "compose", "-f", str(COMPOSE_FILE)]


class Project:
    """One compose project (its own name, broker and store passwords, and output folder)."""

    def __init__(self, cmd, mnist_dir, out):
        self.cmd, self.out = list(cmd), out
        self.passwords = {"broker": secrets.token_hex(12), "store": secrets.token_hex(12)}
        self.env = {**os.environ, "COMPOSE_PROJECT_NAME": f"cfe2e{secrets.token_hex(3)}",
                    "CUTTLEFISH_DATA": str(mnist_dir), "CUTTLEFISH_OUT": str(out)}
        self.env.pop("CUTTLEFISH_PASSWORD_FILE", None)
        for kind, password in self.passwords.items():  # the project's compose secrets
            secret = out.parent / f"{out.name}-{kind}-password"
            secret.write_text(password + "\n")
            self.env[f"CUTTLEFISH_{kind.upper()}_PASSWORD_FILE"] = str(secret)

    def run(self, *args, check=True):
        res = subprocess.run([*self.cmd, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if check and res.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed: {res.stderr[-2000:]}")
        return res

    def container(self, service):
        ids = self.run("ps", "-q", "--all", service).stdout.split()
        assert ids, f"no container for {service}"
        return ids[0]

    def wait_driver(self, timeout=600):
        res = subprocess.run(["docker", "wait", self.container("driver")], capture_output=True, text=True, timeout=timeout)
        return int(res.stdout.strip())

    def redis_cli(self, password, *args):
        """redis-cli in the project's Redis, logged in with `password` (REDISCLI_AUTH: not on its command line)."""
        return self.run("exec", "-T", "-e", f"REDISCLI_AUTH={password}", "redis", "redis-cli", *args, check=False)

    def logs(self, service):
        return self.run("logs", "--no-color", service).stdout

    def down(self):
        self.run("down", "-v", "--remove-orphans", check=False)


def _accuracy(log: str) -> float:
    found = re.findall(r"test accuracy: (\d\.\d+)", log)
    assert found, f"no accuracy in the driver's log: {log[-1500:]}"
    return float(found[-1])


def test_compose_up_trains_and_a_killed_neuron_leaves_the_model_unchanged(compose_cmd, mnist_dir, tmp_path):
    first = Project(compose_cmd, mnist_dir, tmp_path / "first")
    first.out.mkdir()
    try:
        first.run("up", "-d")
        assert first.wait_driver() == 0, first.logs("driver")[-3000:]
        log = first.logs("driver")
        assert _accuracy(log) >= 0.9
        for password in first.passwords.values():
            assert password not in log + first.logs("neuron-l1-0")
        for service in ("rabbitmq", "redis", "neuron-l1-0", "driver"):  # nor in any container's settings
            ids = first.run("ps", "-q", "--all", service).stdout.split()
            inspect = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout
            assert ids and not any(p in inspect for p in first.passwords.values()), service
        # each server holds only its own secret: the broker's cannot open the store, which holds the run's key
        for service, own, other in (("rabbitmq", "broker", "store"), ("redis", "store", "broker")):
            assert first.run("exec", "-T", service, "cat", f"/run/secrets/{own}_password").stdout.strip() == \
                first.passwords[own], service
            assert first.run("exec", "-T", service, "test", "-e", f"/run/secrets/{other}_password",
                             check=False).returncode == 1, service
        key = "cuttlefish/cf-compose/key"  # the run's message key
        assert first.redis_cli(first.passwords["store"], "exists", key).stdout.strip() == "1"
        refused = first.redis_cli(first.passwords["broker"], "exists", key)  # the broker's password opens no store
        assert refused.stdout.strip() != "1" and re.search("WRONGPASS|NOAUTH", refused.stdout + refused.stderr), refused
        assert {p.name for p in first.out.iterdir()} >= {"model.npz", "metrics.jsonl", "training.svg"}
    finally:
        first.down()

    second = Project(compose_cmd, mnist_dir, tmp_path / "second")
    second.out.mkdir()
    try:
        second.run("up", "-d")
        victim = second.container("neuron-l1-1")
        deadline = time.monotonic() + 300
        while "step " not in second.logs("driver"):  # training is under way
            assert time.monotonic() < deadline, second.logs("driver")[-2000:]
            time.sleep(0.5)
        # kill -9 from the host, as a crash or the OOM killer would: `docker kill` counts as a manual stop,
        # after which Docker applies no restart policy
        pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", victim], capture_output=True,
                             text=True, check=True).stdout.strip()
        os.kill(int(pid), 9)
        assert second.wait_driver() == 0, second.logs("driver")[-3000:]
        log = second.logs("driver")
        assert "replays from checkpoint" in log, log[-3000:]  # the driver noticed and recovered
        restarts = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", victim],
                                  capture_output=True, text=True).stdout.strip()
        assert restarts == "1"  # restarted by its on-failure policy
    finally:
        second.down()
    a, b = np.load(first.out / "model.npz"), np.load(second.out / "model.npz")
    assert sorted(a.files) == sorted(b.files)
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_scaling_a_layer_of_a_running_compose_project(compose_cmd, mnist_dir, tmp_path):
    """`scale --target compose` mid-run: the file is regenerated, that layer's services change, the model agrees."""
    runs = {}
    for name in ("plain", "scaled"):
        project = Project(compose_cmd, mnist_dir, tmp_path / name)
        project.out.mkdir()
        compose_file = tmp_path / f"{name}.yml"  # scale rewrites its file: never the repository's
        compose_file.write_text(COMPOSE_FILE.read_text().replace("context: .", f"context: {ROOT}").replace(
            "./examples/compose.yaml", str(ROOT / "examples/compose.yaml")))
        project.cmd[-1] = str(compose_file)
        try:
            project.run("up", "-d")
            if name == "scaled":
                deadline = time.monotonic() + 300
                while "step " not in project.logs("driver"):
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
                before = project.container("neuron-l2-0")
                res = subprocess.run(["python3", "-m", "orchestrator", "scale", str(ROOT / "examples/compose.yaml"),
                                      "--layer", "1", "--shards", "3", "--target", "compose", "-f", str(compose_file)],
                                     cwd=ROOT, env=project.env, capture_output=True, text=True, timeout=600)
                assert res.returncode == 0, res.stderr
                assert "layer 1: 2 -> 3 neurons" in res.stdout
                assert "neuron-l1-2:" in compose_file.read_text()
                assert project.container("neuron-l2-0") == before  # other layers: the same containers
            assert project.wait_driver() == 0, project.logs("driver")[-3000:]
            runs[name] = np.load(project.out / "model.npz")
        finally:
            project.down()
    a, b = runs["plain"], runs["scaled"]
    weights = [k for k in a.files if k[0] in "Wb"]  # the model file also holds its description (meta)
    assert len(weights) == 6 and sorted(a.files) == sorted(b.files)
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in weights)
    print(f"largest weight difference after rescaling: {worst:.3g}")
    assert worst < 1e-3  # float32, 1,876 steps: a different split changes rounding, not the mathematics
