"""Message transports for neurons, chosen by URL scheme: memory:// (in-process) and amqp(s):// (RabbitMQ)."""
from __future__ import annotations

import importlib
from types import MappingProxyType
from urllib.parse import urlsplit

from broker.base import Broker, Delivery
from broker.errors import (
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    MissingExtra,
    QueueNotDeclared,
    UnknownScheme,
    redact_url,
)

# scheme -> (module, class, pip extra or None); imported only when used
BACKENDS = {
    "memory": ("broker.memory", "MemoryBroker", None),
    "amqp": ("broker.rabbitmq", "RabbitBroker", "rabbitmq"),
    "amqps": ("broker.rabbitmq", "RabbitBroker", "rabbitmq"),
}

# pip extra -> the top-level driver packages it installs
EXTRA_PACKAGES = MappingProxyType({"rabbitmq": ("pika",)})


def connect(url: str, **options) -> Broker:
    """Open the broker backend that `url`'s scheme names."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in BACKENDS:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise UnknownScheme(f"unknown broker URL scheme in {redact_url(url)!r}; known: {known}")
    module, cls, extra = BACKENDS[scheme]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise UnknownScheme(f"the {scheme}:// broker is not part of this version of cuttlefish") from exc
        if extra is None or (exc.name or "").partition(".")[0] not in EXTRA_PACKAGES[extra]:
            raise  # a missing module that is not the driver: not an extra to install
        raise MissingExtra(
            f"the {scheme}:// broker needs the {exc.name} package: pip install 'cuttlefish[{extra}]'"
        ) from exc
    return getattr(mod, cls)(url, **options)


__all__ = [
    "BACKENDS", "Broker", "BrokerClosed", "BrokerError", "BrokerUnavailable", "Delivery",
    "MissingExtra", "QueueNotDeclared", "UnknownScheme", "connect", "redact_url",
]
