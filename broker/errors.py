"""The broker package's error tree; driver exceptions are translated into these at the edge."""
from __future__ import annotations

from broker.schemes import redact_url


class BrokerError(Exception):
    """Base of every broker error."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (after retries)."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = redact_url(url)
        msg = f"broker unavailable at {self.url}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class UnknownScheme(BrokerError):
    """The URL's scheme names no broker backend."""


class MissingExtra(BrokerError):
    """The backend's driver package is not installed."""


class QueueNotDeclared(BrokerError):
    """A queue was used before being declared."""


class BrokerClosed(BrokerError):
    """The broker was used after close()."""
