"""Passwords from files: the broker reads only its own file, the store only its own, a URL's own password wins."""
from __future__ import annotations

import subprocess

import pytest

import broker
import paramstore
from broker.schemes import with_password
from orchestrator.deploy import compose
from orchestrator.errors import ConfigError

BROKER_URL = "amqp://cuttlefish@rabbitmq:5672/%2F"
STORE_URL = "redis://redis:6379/0"


@pytest.fixture
def files(tmp_path):
    """Two password files with different passwords, and the environment that names both."""
    (tmp_path / "broker").write_text("br@ker/pw:1\n")
    (tmp_path / "store").write_text("st0re-pw\n")
    return {"CUTTLEFISH_BROKER_PASSWORD_FILE": str(tmp_path / "broker"),
            "CUTTLEFISH_STORE_PASSWORD_FILE": str(tmp_path / "store")}


def test_a_url_without_password_takes_it_from_the_named_file(files):
    broker_var, store_var = "CUTTLEFISH_BROKER_PASSWORD_FILE", "CUTTLEFISH_STORE_PASSWORD_FILE"
    assert with_password(BROKER_URL, broker_var, files) == "amqp://cuttlefish:br%40ker%2Fpw%3A1@rabbitmq:5672/%2F"
    assert with_password(STORE_URL, store_var, files) == "redis://:st0re-pw@redis:6379/0"
    assert with_password("rediss://redis:6380/0", store_var, files) == "rediss://:st0re-pw@redis:6380/0"
    assert with_password("redis://:own@redis:6379/0", store_var, files) == "redis://:own@redis:6379/0"  # its own wins
    assert with_password(STORE_URL, store_var, {broker_var: files[broker_var]}) == STORE_URL  # never the other's
    for url in ("memory://", "file://rel/dir", "file:///abs/dir", "dynamodb://table?region=eu-west-1"):
        assert with_password(url, store_var, files) == url  # no server to log in to


def test_an_unreadable_file_is_named(tmp_path):
    env = {"CUTTLEFISH_STORE_PASSWORD_FILE": str(tmp_path / "missing")}
    with pytest.raises(OSError, match=r"cannot read the password file .*missing \(\$CUTTLEFISH_STORE_PASSWORD_FILE\)"):
        with_password(STORE_URL, "CUTTLEFISH_STORE_PASSWORD_FILE", env)


def test_the_retired_shared_file_is_refused_with_the_new_names(files):
    """An old setup's one file for both would be silently ignored otherwise, and fail later on a login."""
    old = {"CUTTLEFISH_PASSWORD_FILE": files["CUTTLEFISH_STORE_PASSWORD_FILE"]}
    with pytest.raises(OSError, match=r"CUTTLEFISH_PASSWORD_FILE is no longer read.*"
                                      r"CUTTLEFISH_BROKER_PASSWORD_FILE and \$CUTTLEFISH_STORE_PASSWORD_FILE"):
        with_password(BROKER_URL, "CUTTLEFISH_BROKER_PASSWORD_FILE", old)
    assert with_password("memory://", "CUTTLEFISH_BROKER_PASSWORD_FILE", old) == "memory://"
    # the new variable set: the old one does not matter
    assert ":st0re-pw@" in with_password(STORE_URL, "CUTTLEFISH_STORE_PASSWORD_FILE", {**old, **files})


class _Recorder:
    """A backend that only remembers the URL it was opened with."""

    def __init__(self, url, **_options):
        self.url = url


@pytest.mark.parametrize("open_url, module, url, own_var, own, other", [
    (broker.connect, broker, BROKER_URL, "CUTTLEFISH_BROKER_PASSWORD_FILE", "br%40ker%2Fpw%3A1", "st0re-pw"),
    (paramstore.open_store, paramstore, STORE_URL, "CUTTLEFISH_STORE_PASSWORD_FILE", "st0re-pw", "br%40ker"),
])
def test_each_backend_reads_only_its_own_file(monkeypatch, files, open_url, module, url, own_var, own, other):
    monkeypatch.setattr(module, "load_backend", lambda *_args: _Recorder)
    monkeypatch.delenv("CUTTLEFISH_PASSWORD_FILE", raising=False)
    for name, path in files.items():
        monkeypatch.setenv(name, path)
    opened = open_url(url).url
    assert own in opened and other not in opened
    monkeypatch.delenv(own_var)  # only the other's file left: no password, rather than the wrong one
    assert open_url(url).url == url


def test_scale_and_status_reach_a_compose_redis_with_the_store_secret(tmp_path, monkeypatch):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "broker_password").write_text("broker-pw\n")
    monkeypatch.delenv("CUTTLEFISH_STORE_PASSWORD_FILE", raising=False)
    monkeypatch.setattr(compose.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "127.0.0.1:4711\n", ""))
    compose_file = str(tmp_path / "docker-compose.yml")
    with pytest.raises(ConfigError, match="CUTTLEFISH_STORE_PASSWORD_FILE: no password in .*secrets/store_password"):
        compose.store_url(compose_file)  # never the broker's instead
    (tmp_path / "secrets" / "store_password").write_text("store-pw\n")
    assert compose.store_url(compose_file) == "redis://:store-pw@127.0.0.1:4711/0"
    other = tmp_path / "elsewhere"
    other.write_text("from-env\n")
    monkeypatch.setenv("CUTTLEFISH_STORE_PASSWORD_FILE", str(other))
    assert compose.store_url(compose_file) == "redis://:from-env@127.0.0.1:4711/0"
