"""RabbitMQ and Redis for the tests: a URL from the environment, else a testcontainers container.

Images: CUTTLEFISH_RABBITMQ_IMAGE / CUTTLEFISH_REDIS_IMAGE, else the images compose/build-images.sh
builds when they are present, else the official ones. Without Docker the tests that need a service skip,
except under CI=true, where they fail.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import Iterator

# the reaper image cannot be pulled without a registry; containers are stopped by the fixtures instead
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

LOCAL_IMAGES = {"rabbitmq": "cuttlefish/rabbitmq:3.10-bookworm", "redis": "cuttlefish/redis:7.0-bookworm"}
OFFICIAL_IMAGES = {"rabbitmq": "rabbitmq:3.13", "redis": "redis:7.2"}


def docker_problem() -> str | None:
    """Why Docker cannot be used here, or None if it can."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed (pip install -e '.[test]' in the checkout)"
    try:
        client = docker.from_env()
        client.ping()
        client.close()
    except Exception as exc:  # docker raises several unrelated types when no engine answers
        return f"no Docker engine: {type(exc).__name__}: {exc}"
    return None


def image(kind: str) -> str:
    """The image to run for `kind` (rabbitmq, redis)."""
    configured = os.environ.get(f"CUTTLEFISH_{kind.upper()}_IMAGE")
    if configured:
        return configured
    import docker

    client = docker.from_env()
    try:
        client.images.get(LOCAL_IMAGES[kind])
        return LOCAL_IMAGES[kind]
    except docker.errors.ImageNotFound:
        return OFFICIAL_IMAGES[kind]
    finally:
        client.close()


def direct(url: str, box, port: int) -> str:
    """`url` pointed at the container's own address and `port` instead of the port Docker publishes.

    The published port goes through docker-proxy, a userland copy of every byte (its CPU counted nowhere)
    that a compose network does not have, and it may change when the container restarts. Where the
    container's address cannot be reached from here (Docker Desktop), `url` as it is.
    """
    import socket
    from urllib.parse import urlsplit

    container = box.get_wrapped_container()
    container.reload()
    address = container.attrs["NetworkSettings"]["IPAddress"]
    try:
        socket.create_connection((address, port), timeout=2).close()
    except OSError:
        return url
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{user}@{address}:{port}").geturl()


@contextmanager
def rabbitmq() -> Iterator[tuple[str, object]]:
    """(amqp URL, container) of a fresh RabbitMQ with its own user (guest is refused from outside)."""
    from testcontainers.community.rabbitmq import RabbitMqContainer

    password = secrets.token_hex(8)
    with RabbitMqContainer(image("rabbitmq"), username="cuttlefish", password=password) as box:
        host, port = box.get_container_host_ip(), box.get_exposed_port(box.port)
        yield f"amqp://cuttlefish:{password}@{host}:{port}/%2F", box


@contextmanager
def redis() -> Iterator[tuple[str, object]]:
    """(redis URL, container) of a fresh password-protected Redis."""
    from testcontainers.community.redis import RedisContainer

    password = secrets.token_hex(8)
    with RedisContainer(image("redis"), password=password) as box:
        host, port = box.get_container_host_ip(), box.get_exposed_port(box.port)
        yield f"redis://:{password}@{host}:{port}/0", box


@contextmanager
def moto_server() -> Iterator[str]:
    """The endpoint URL of a moto server (every AWS service) on a free local port; AWS itself is not reachable."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ.setdefault(var, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
