"""The compose file the orchestrator writes: current, secret-free, valid for the spec and both compose tools."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

from orchestrator.cli import main
from tests.conftest import ROOT, in_ci, require

SPEC_PATHS = [pathlib.Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")]


def _render(tmp_path, config="examples/compose.yaml", *extra) -> str:
    out = tmp_path / "docker-compose.yml"
    assert main(["deploy", str(ROOT / config), "--target", "compose", "-o", str(out), *extra]) == 0
    return out.read_text()


def test_repository_compose_file_is_what_deploy_writes(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["deploy", "examples/compose.yaml", "--target", "compose", "-o", "-"]) == 0
    assert capsys.readouterr().out == (ROOT / "docker-compose.yml").read_text()


def test_one_service_per_neuron_with_policies_and_limits(tmp_path):
    doc = yaml.safe_load(_render(tmp_path))
    services = doc["services"]
    neurons = sorted(n for n in services if n.startswith("neuron-"))
    assert neurons == ["neuron-head", "neuron-l1-0", "neuron-l1-1", "neuron-l2-0", "neuron-l3-0"]
    for name in neurons:
        s = services[name]
        assert s["restart"] == "on-failure"
        assert s["depends_on"] == {"rabbitmq": {"condition": "service_healthy"},
                                   "redis": {"condition": "service_healthy"}}
    assert services["neuron-l1-0"]["cpus"] == 0.5 and services["neuron-l1-0"]["mem_limit"] == "256m"
    assert "redis-data:/data" in services["redis"]["volumes"] and "--appendonly yes" in services["redis"]["command"][2]
    # the passwords are secret files, never in an environment or a command line
    assert "--requirepass" not in services["redis"]["command"][2]
    assert services["rabbitmq"]["healthcheck"] and services["redis"]["healthcheck"]
    assert services["driver"]["command"][:4] == ["python3", "-m", "orchestrator", "train"]
    for kind, default in (("rabbitmq", "rabbitmq:"), ("redis", "redis:")):
        assert services[kind]["image"].startswith(f"${{CUTTLEFISH_{kind.upper()}_IMAGE:-{default}")
    assert "python:3.11-slim" in services["driver"]["build"]["args"]["PYTHON_IMAGE"]


def test_broker_and_store_have_separate_secrets_each_server_only_its_own(tmp_path):
    """Whoever holds the broker's password must not be able to read the run's message key from the store."""
    doc = yaml.safe_load(_render(tmp_path))
    services = doc["services"]
    assert doc["secrets"] == {
        "broker_password": {"file": "${CUTTLEFISH_BROKER_PASSWORD_FILE:-./secrets/broker_password}"},
        "store_password": {"file": "${CUTTLEFISH_STORE_PASSWORD_FILE:-./secrets/store_password}"}}
    assert services["rabbitmq"]["secrets"] == ["broker_password"]
    assert services["redis"]["secrets"] == ["store_password"]
    rabbit, redis = services["rabbitmq"], services["redis"]
    assert "/run/secrets/broker_password" in rabbit["command"][2] and "store_password" not in str(rabbit)
    assert "/run/secrets/store_password" in redis["command"][2] and "broker_password" not in str(redis)
    assert "/run/secrets/store_password" in " ".join(redis["healthcheck"]["test"])
    runtime = [name for name in services if name not in ("rabbitmq", "redis")]
    assert "driver" in runtime and "neuron-head" in runtime
    for name in runtime:  # the neurons and the driver talk to both, each through its own file
        service = services[name]
        assert service["secrets"] == ["broker_password", "store_password"], name
        env = service["environment"]
        assert env["CUTTLEFISH_BROKER_PASSWORD_FILE"] == "/run/secrets/broker_password", name
        assert env["CUTTLEFISH_STORE_PASSWORD_FILE"] == "/run/secrets/store_password", name
        assert "CUTTLEFISH_PASSWORD_FILE" not in env, name
    for name, service in services.items():
        assert not any("PASS" in k and not k.endswith("_PASSWORD_FILE") for k in service.get("environment", {})), name


def test_no_password_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTTLEFISH_PASSWORD", "s3cret-do-not-write")
    text = _render(tmp_path)
    assert "s3cret" not in text and "${CUTTLEFISH_PASSWORD}" not in text
    assert "/run/secrets/broker_password" in text and "/run/secrets/store_password" in text


def test_validates_against_the_compose_spec(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    spec = next((p for p in SPEC_PATHS if p.exists()), None)
    require(spec is not None or not in_ci(), "the compose-spec schema of Debian's docker-compose package")
    if spec is None:
        pytest.skip("no compose-spec schema on this machine (Debian's docker-compose package has it)")
    jsonschema.validate(yaml.safe_load(_render(tmp_path)), json.loads(spec.read_text()))


@pytest.mark.parametrize("tool", [["docker", "compose"], ["docker-compose"]])
def test_both_compose_tools_accept_it(tmp_path, tool):
    have = shutil.which(tool[0]) and subprocess.run([*tool, "version"], capture_output=True).returncode == 0
    require(bool(have), f"{' '.join(tool)} is needed to check the file")
    _render(tmp_path)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "broker_password").write_text("x\n")
    (tmp_path / "secrets" / "store_password").write_text("y\n")
    env = dict(os.environ)
    res = subprocess.run([*tool, "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr


def test_bad_deploy_arguments_exit_2(tmp_path, capsys):
    assert main(["deploy", str(ROOT / "examples/compose.yaml"), "--target", "compose",
                 "-o", str(tmp_path / "missing" / "x.yml")]) == 2
    assert main(["deploy", str(ROOT / "examples/compose.yaml"), "--target", "compose", "--run-id", "bad id!",
                 "-o", "-"]) == 2
