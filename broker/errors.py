"""The broker package's error tree; driver exceptions are translated into these at the edge."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

# Query parameters whose values are credentials, e.g. ?password=... (the same rule as paramstore's redact_url)
_SECRET_PARAM = re.compile(r"([?&;][^=&#;]*(?:pass|pwd|secret|token)[^=&#;]*=)[^&#;]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with any password (userinfo or credential query parameter) replaced by '***', safe to log."""
    try:
        urlsplit(url)
    except ValueError:
        # An unparseable URL may hide a password anywhere, so show none of it.
        return "<unparseable url>"
    head, sep, rest = url.partition("//")
    if sep:
        # The userinfo runs to the last '@' before the query: a password may itself hold '/', '@' or ':',
        # which urlsplit would cut into host or path and so leave partly visible.
        end = min([i for i in (rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
        userinfo, at, hostpart = rest[:end].rpartition("@")
        user, colon, password = userinfo.partition(":")
        if at and colon and password:
            url = f"{head}//{user}:***@{hostpart}{rest[end:]}"
    return _SECRET_PARAM.sub(r"\1***", url)


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
