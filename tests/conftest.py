"""Shared fixtures: the MNIST folder, small datasets, and the CI rule that service tests never skip."""
from __future__ import annotations

import contextlib
import os
import pathlib

import pytest

from tests import services

ROOT = pathlib.Path(__file__).resolve().parent.parent
MNIST = pathlib.Path(os.environ.get("CUTTLEFISH_DATA", ROOT.parent / "shared" / "datasets" / "mnist"))


def in_ci() -> bool:
    """Whether this is a CI run, where a missing service is a failure and not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip (on a laptop) or fail (under CI=true) when a needed service or file is missing."""
    if not condition:
        if in_ci():
            pytest.fail(f"{why} (CI=true: required)")
        pytest.skip(why)


@pytest.fixture(scope="session")
def mnist_dir() -> pathlib.Path:
    """The folder with the MNIST IDX files."""
    require((MNIST / "train-images-idx3-ubyte.gz").exists() or (MNIST / "train-images-idx3-ubyte").exists(),
            f"MNIST not found in {MNIST}")
    return MNIST


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """(train, test) datasets."""
    from orchestrator.data.mnist import load_mnist

    return load_mnist("train", mnist_dir), load_mnist("test", mnist_dir)


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """The first 2,000 training and 500 test samples: enough for exactness tests, fast."""
    from orchestrator.data.mnist import Dataset

    train, test = mnist
    return Dataset(train.images[:2000], train.labels[:2000]), Dataset(test.images[:500], test.labels[:500])


@pytest.fixture(scope="session")
def _services():
    """Containers started for this session, stopped at its end."""
    with contextlib.ExitStack() as stack:
        yield stack


def _service_url(kind: str, env: str, stack: contextlib.ExitStack) -> str:
    # session-scoped callers: one container per kind and session
    if os.environ.get(env):
        return os.environ[env]
    problem = services.docker_problem()
    require(problem is None, f"{kind} needs Docker or {env}: {problem}")
    return stack.enter_context(getattr(services, kind)())[0]


@pytest.fixture(scope="session")
def amqp_url(_services) -> str:
    """URL of a RabbitMQ shared by the session (CUTTLEFISH_TEST_AMQP_URL, else a container)."""
    return _service_url("rabbitmq", "CUTTLEFISH_TEST_AMQP_URL", _services)


@pytest.fixture(scope="session")
def redis_url(_services) -> str:
    """URL of a Redis shared by the session (CUTTLEFISH_TEST_REDIS_URL, else a container)."""
    return _service_url("redis", "CUTTLEFISH_TEST_REDIS_URL", _services)


@pytest.fixture(scope="session")
def moto_endpoint(_services) -> str:
    """Endpoint URL of a moto server shared by the session."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        require(False, "the AWS tests need moto[server] (pip install -e '.[test]' in the checkout)")
    return _services.enter_context(services.moto_server())


@pytest.fixture(scope="session")
def dynamodb_url(request) -> str:
    """URL of a DynamoDB table (CUTTLEFISH_TEST_DYNAMODB_URL, else in the session's moto server)."""
    if os.environ.get("CUTTLEFISH_TEST_DYNAMODB_URL"):
        return os.environ["CUTTLEFISH_TEST_DYNAMODB_URL"]
    endpoint = request.getfixturevalue("moto_endpoint")
    return f"dynamodb://cuttlefish-test?region=us-east-1&endpoint={endpoint}&create=1"
