"""Service backends and the neuron process without services: clear errors, no secrets, exit statuses."""
from __future__ import annotations

import socket
import time

import pytest

from broker import BrokerUnavailable, connect
from neuron.service import main as neuron_main
from paramstore import StoreUnavailable, open_store
from tests.conftest import ROOT


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_is_a_clear_error_without_the_password():
    pytest.importorskip("pika")
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        connect(f"amqp://user:hunter2@127.0.0.1:{_closed_port()}/%2F", connect_timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert "hunter2" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_unreachable_redis_is_a_clear_error_without_the_password():
    pytest.importorskip("redis")
    with pytest.raises(StoreUnavailable) as info:
        open_store(f"redis://:hunter2@127.0.0.1:{_closed_port()}/0?timeout=1&retries=0")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("argv, message", [
    ([], "--run-id"),
    (["--run-id", "r1"], "--layer"),
    (["--run-id", "r1", "--layer", "x"], "--layer must be a number"),
    (["--run-id", "r1", "--layer", "0"], "no neuron at layer 0"),
    (["--run-id", "r1", "--layer", "1"], "broker and a store URL"),
])
def test_neuron_process_usage_errors_exit_2(argv, message, capsys, monkeypatch):
    for var in ("CUTTLEFISH_RUN_ID", "CUTTLEFISH_LAYER", "CUTTLEFISH_BROKER", "CUTTLEFISH_STORE", "CUTTLEFISH_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert neuron_main(argv) == 2
    assert message in capsys.readouterr().err


def test_neuron_process_without_a_run_manifest_gives_up_with_status_1(tmp_path, capsys):
    status = neuron_main(["--run-id", "nothing-here", "--layer", "1", "--broker", "memory://",
                          "--store", f"file://{tmp_path}", "--wait", "0.5"])
    assert status == 1
    assert "no manifest" in capsys.readouterr().err


def test_local_target_refuses_memory_urls(capsys):
    from orchestrator.cli import main

    assert main(["train", str(ROOT / "examples" / "tiny.yaml"), "--target", "local", "--store", "file:///tmp/x"]) == 2
    assert "memory://" in capsys.readouterr().err
