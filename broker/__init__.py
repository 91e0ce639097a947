"""Message transports for neurons, chosen by URL scheme: memory:// (in-process) and amqp(s):// (RabbitMQ)."""
from __future__ import annotations

from types import MappingProxyType

from broker.base import Broker, Delivery
from broker.errors import (
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    MissingExtra,
    QueueNotDeclared,
    UnknownScheme,
)
from broker.schemes import (
    BROKER_PASSWORD_FILE_ENV,
    Backend,
    SchemeErrors,
    install_hint,
    load_backend,
    redact_url,
    with_password,
)

# scheme -> (module, class, pip extra or None); imported only when used
BACKENDS = MappingProxyType({
    "memory": Backend("broker.memory", "MemoryBroker", None),
    "amqp": Backend("broker.rabbitmq", "RabbitBroker", "rabbitmq"),
    "amqps": Backend("broker.rabbitmq", "RabbitBroker", "rabbitmq"),
})

# pip extra -> the top-level driver packages it installs
EXTRA_PACKAGES = MappingProxyType({"rabbitmq": ("pika",)})


_ERRORS = SchemeErrors(
    unknown=lambda url: UnknownScheme(
        f"unknown broker URL scheme in {redact_url(url)!r}; known: {', '.join(f'{s}://' for s in BACKENDS)}"),
    not_included=lambda scheme: UnknownScheme(f"the {scheme}:// broker is not part of this version of cuttlefish"),
    missing_extra=lambda scheme, package, extra: MissingExtra(
        f"the {scheme}:// broker needs the {package} package: {install_hint(package, extra)}"),
)


def connect(url: str, **options) -> Broker:
    """Open the broker backend that `url`'s scheme names."""
    url = with_password(url, BROKER_PASSWORD_FILE_ENV)
    return load_backend(url, BACKENDS, EXTRA_PACKAGES, _ERRORS)(url, **options)


__all__ = [
    "BACKENDS", "Broker", "BrokerClosed", "BrokerError", "BrokerUnavailable", "Delivery",
    "MissingExtra", "QueueNotDeclared", "UnknownScheme", "connect", "redact_url",
]
