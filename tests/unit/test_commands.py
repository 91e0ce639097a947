"""The commands as a user meets them: help on everything, --version, log levels, deploy that never clobbers,
status and scale that say what is wrong at once."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time

import pytest

from neuron.topology import Topology
from orchestrator import __version__
from orchestrator.cli import main
from orchestrator.cli.commands import _parser
from paramstore import open_store
from paramstore.lease import Lease
from paramstore.run import RunRecord
from tests.conftest import ROOT

TINY = ROOT / "examples" / "tiny.yaml"
COMPOSE = ROOT / "examples" / "compose.yaml"


def _actions(parser: argparse.ArgumentParser, name: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for command, sub in action.choices.items():
                yield f"{name} {command}", "(the command)", helps.get(command)
                yield from _actions(sub, f"{name} {command}")
        elif not isinstance(action, (argparse._HelpAction,)):
            yield name, "/".join(action.option_strings) or action.dest, action.help


def test_every_command_and_option_has_a_line_of_help():
    missing = [(cmd, opt) for cmd, opt, text in _actions(_parser(), "cuttlefish") if not text]
    assert missing == []


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip().endswith(__version__)


@pytest.mark.parametrize("argv", [["--log-level", "info", "plan", str(TINY)], ["plan", str(TINY), "--log-level", "INFO"]])
def test_log_level_before_or_after_the_command(argv, capsys):
    assert main(argv) == 0
    assert logging.getLogger().level == logging.INFO


def test_log_level_from_the_environment(monkeypatch):
    monkeypatch.setenv("CUTTLEFISH_LOG_LEVEL", "debug")
    assert main(["plan", str(TINY)]) == 0
    assert logging.getLogger().level == logging.DEBUG


def test_an_unknown_log_level_is_an_error(monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--log-level", "loud", "plan", str(TINY)])
    assert info.value.code == 2 and "unknown log level 'loud'" in capsys.readouterr().err
    monkeypatch.setenv("CUTTLEFISH_LOG_LEVEL", "chatty")
    assert main(["plan", str(TINY)]) == 2
    assert "CUTTLEFISH_LOG_LEVEL: unknown log level 'chatty'" in capsys.readouterr().err


def test_deploy_never_overwrites_a_file_it_did_not_write_for_this_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(TINY, tmp_path / "tiny.yaml")
    shutil.copy(COMPOSE, tmp_path / "compose.yaml")
    (tmp_path / "docker-compose.yml").write_text("services: {mine: {image: busybox}}\n")
    deploy = ["deploy", "--target", "compose"]
    assert main([*deploy, "compose.yaml"]) == 2  # no -o: the default file is someone else's
    assert "docker-compose.yml was not written by deploy" in capsys.readouterr().err
    assert (tmp_path / "docker-compose.yml").read_text().startswith("services: {mine")
    assert main([*deploy, "compose.yaml", "--force"]) == 0
    assert main([*deploy, "compose.yaml"]) == 0  # generated for the same config: may be regenerated
    assert main([*deploy, "tiny.yaml"]) == 2
    assert "was generated for compose.yaml, not tiny.yaml" in capsys.readouterr().err
    text = (tmp_path / "docker-compose.yml").read_text()
    (tmp_path / "docker-compose.yml").write_text(text.replace("restart: on-failure", "restart: always"))
    assert main([*deploy, "compose.yaml"]) == 2  # edited by hand since
    assert "or was edited since" in capsys.readouterr().err


def test_the_repository_file_is_not_clobbered_by_another_config(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    before = (ROOT / "docker-compose.yml").read_text()
    assert main(["deploy", "examples/tiny.yaml", "--target", "compose"]) == 2
    assert (ROOT / "docker-compose.yml").read_text() == before


def test_compose_dry_run_prints_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", str(COMPOSE), "--target", "compose", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "services:" in out and "# cuttlefish-deploy: config=" in out
    assert list(tmp_path.iterdir()) == []


def test_ecs_output_writes_the_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: a call would fail
    out = tmp_path / "plan.json"
    assert main(["deploy", str(ROOT / "examples" / "ecs.yaml"), "--target", "ecs", "--dry-run", "--region",
                 "eu-west-1", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())["region"] == "eu-west-1"


def test_status_with_a_memory_config_says_why(capsys):
    assert main(["status", str(TINY)]) == 2
    err = capsys.readouterr().err
    assert f"{TINY}: paramstore: is memory://" in err and "give --store" in err
    assert "or a config" not in err.split("paramstore: ")[0]


def _finished_run(tmp_path, mnist_dir) -> str:
    store = f"file://{tmp_path}/store"
    assert main(["train", str(TINY), "--data", str(mnist_dir), "--max-steps", "20", "--quiet", "--store", store,
                 "--run-id", "r1"]) == 0
    return store


def test_scale_of_a_finished_run_says_so_at_once(tmp_path, mnist_dir, capsys):
    store = _finished_run(tmp_path, mnist_dir)
    started = time.monotonic()
    assert main(["scale", "--store", store, "--run-id", "r1", "--layer", "1", "--shards", "2", "--wait", "300"]) == 2
    assert time.monotonic() - started < 30
    assert "run r1 is not running (status 'done')" in capsys.readouterr().err
    with open_store(store) as opened:  # the driver recorded its config's limit for later `scale` commands
        assert RunRecord(opened, "r1").manifest().max_neurons == 256


def test_scale_of_a_run_whose_driver_is_gone_says_so_at_once(tmp_path, mnist_dir, capsys):
    store = _finished_run(tmp_path, mnist_dir)
    with open_store(store) as opened:  # as if the driver had been killed mid-run: manifest running, no lease
        RunRecord(opened, "r1").update(status="running")
    started = time.monotonic()
    assert main(["scale", "--store", store, "--run-id", "r1", "--layer", "1", "--shards", "2", "--wait", "300"]) == 1
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "run r1 is not being trained: its driver stopped" in err and "asked run" not in err


def _running_run(tmp_path, sizes, shards, **fields) -> str:
    """A store holding run r1 as a live driver leaves it: running, its split in the manifest, its lease held."""
    store = f"file://{tmp_path}/store"
    with open_store(store) as opened:
        lease = Lease(opened, "r1", ttl=300)
        lease.acquire()  # not renewed: it just stays valid for the test's few seconds
        RunRecord(opened, "r1").create(status="running", topology=Topology("r1", sizes, shards).to_dict(), **fields)
    return store


@pytest.mark.parametrize("config, recorded, limit, source", [
    (None, None, 256, "the default neural_network.max_neurons; give the run's config if it sets another"),
    (None, 30, 30, "the run's neural_network.max_neurons, as its manifest records it"),
    ("max_neurons: 40", 30, 40, "neural_network.max_neurons of"),
])
def test_scale_beyond_the_neuron_limit_is_refused_before_asking(tmp_path, capsys, config, recorded, limit, source):
    store = _running_run(tmp_path, (784, 300, 10), (2, 1), **({"max_neurons": recorded} if recorded else {}))
    argv = ["scale", "--store", store, "--run-id", "r1", "--layer", "1", "--shards", "290", "--wait", "1"]
    if config:
        path = tmp_path / "net.yaml"
        path.write_text(TINY.read_text().replace("neural_network:\n", f"neural_network:\n  {config}\n"))
        argv.insert(1, str(path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--shards: 291 neurons exceed the limit of {limit} per run; layer 1 can have at most {limit - 1}" in err
    assert source in err and "asked run" not in err
    with open_store(store) as opened:
        assert RunRecord(opened, "r1").scale_request() is None  # nothing was asked of the driver


def test_the_neurons_refuse_an_unknown_log_level_too(monkeypatch, capsys):
    from neuron.service import main as neuron_main

    monkeypatch.setenv("CUTTLEFISH_LOG_LEVEL", "loud")
    assert neuron_main(["--layer", "1", "--run-id", "r1", "--store", "memory://", "--broker", "memory://"]) == 2
    assert "unknown log level 'loud'" in capsys.readouterr().err


def test_the_driver_refuses_a_stored_request_beyond_the_neuron_limit(tmp_path):
    from orchestrator.training import rescale
    from paramstore.manifest import ScaleRequest

    with open_store(_running_run(tmp_path, (784, 300, 10), (2, 1), max_neurons=5)) as opened:
        record = RunRecord(opened, "r1")
        topo = Topology.from_dict(dict(record.manifest().topology))
        request_id = record.request_scale(1, 5)  # written to the store by hand, past `scale`'s own check
        request = record.scale_request()
        assert request is not None and request.id == request_id
        assert rescale.resolve(record, topo, request, can_replace=True, limit=5) is None
        [entry] = record.manifest().rescales
        assert entry.refused == "6 neurons exceed the limit of 5 per run; layer 1 can have at most 4"
        assert record.scale_request() is None
        assert rescale.resolve(record, topo, ScaleRequest("x", 1, 3, 0.0), can_replace=True, limit=5).shards == (3, 1)
