"""rediss://: the store over TLS against a Redis container with a self-signed certificate made by openssl."""
from __future__ import annotations

import secrets
import shutil
import subprocess
import time

import numpy as np
import pytest

from paramstore import open_store
from paramstore.checkpoint import Checkpoints
from paramstore.errors import StoreUnavailable
from tests import services
from tests.conftest import require

pytestmark = pytest.mark.integration


def _certificate(folder, ip: str) -> None:
    """A self-signed certificate for `ip`, its key readable by the container's redis user."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=redis",
                    "-addext", f"subjectAltName=IP:{ip}", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    (folder / "key.pem").chmod(0o644)  # a throwaway key of a test container


@pytest.fixture
def tls_redis(tmp_path):
    """(rediss URL without options, the CA file) of a Redis that speaks only TLS, reached at its address."""
    problem = services.docker_problem()
    require(problem is None, f"needs Docker: {problem}")
    require(shutil.which("openssl") is not None, "needs openssl to make a certificate")
    import docker

    password = secrets.token_hex(8)
    client = docker.from_env()
    serve = ("redis-server --port 0 --tls-port 6380 --tls-cert-file /tls/cert.pem --tls-key-file /tls/key.pem "
             f"--tls-auth-clients no --requirepass {password}")
    # the certificate names the container's address, known once it runs: the server waits for it
    box = client.containers.run(services.image("redis"),
                                ["sh", "-c", f"while [ ! -f /tls/ready ]; do sleep 0.1; done; exec {serve}"],
                                detach=True, volumes={str(tmp_path): {"bind": "/tls", "mode": "ro"}})
    try:
        box.reload()
        ip = box.attrs["NetworkSettings"]["IPAddress"]
        _certificate(tmp_path, ip)
        (tmp_path / "ready").touch()
        deadline = time.monotonic() + 30
        while b"Ready to accept connections" not in box.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield f"rediss://:{password}@{ip}:6380/0", tmp_path / "cert.pem"
    finally:
        box.remove(force=True)
        client.close()


def test_a_checkpoint_round_trips_over_tls_and_the_certificate_is_checked(tls_redis, tmp_path):
    url, ca = tls_redis
    with open_store(f"{url}?ssl_ca_certs={ca}") as store:  # verified: the CA, and the address is the certificate's
        ckpt = Checkpoints(store, "tls")
        ckpt.record.create(status="running")
        w = np.arange(12, dtype=np.float32).reshape(3, 4)
        ckpt.write_slice(1, 1, 0, 3, {"W": w, "b": np.ones(3, np.float32)})
        ckpt.commit(1, {1: [(0, 3)]})
        assert np.array_equal(Checkpoints(store, "tls").read_layer(1, 1, ["W"])["W"], w)
    with pytest.raises(StoreUnavailable, match="certificate verify failed"):  # the system CAs do not know it
        open_store(url)
    other = tmp_path / "other"
    other.mkdir()
    _certificate(other, "10.0.0.1")
    with pytest.raises(StoreUnavailable, match="certificate verify failed"):  # nor does another self-signed one
        open_store(f"{url}?ssl_ca_certs={other / 'cert.pem'}")
    with pytest.raises(StoreUnavailable):  # nothing but TLS is served
        open_store(url.replace("rediss://", "redis://") + "?outage=1")
