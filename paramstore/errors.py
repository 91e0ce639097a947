"""The paramstore package's error tree; driver exceptions are translated into these at the edge."""
from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# Query parameters whose values are credentials, e.g. ?password=..., ?aws_secret_access_key=...
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


class StoreError(Exception):
    """Base of every paramstore error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or failed an I/O operation."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = redact_url(url)
        msg = f"parameter store unavailable at {self.url}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class UnknownScheme(StoreError):
    """The URL's scheme names no store backend."""

    def __init__(self, url: str, known: Iterable[str]) -> None:
        self.known = sorted(known)
        listed = ", ".join(f"{s}://" for s in self.known)
        super().__init__(f"unknown parameter store URL scheme in {redact_url(url)!r}; known: {listed}")


class MissingExtra(StoreError):
    """The backend's driver package is not installed."""

    def __init__(self, scheme: str, package: str, extra: str) -> None:
        self.scheme, self.package, self.extra = scheme, package, extra
        super().__init__(
            f"the {scheme}:// store needs the {package} package: pip install 'cuttlefish[{extra}]'"
        )


class CorruptValue(StoreError):
    """A stored value is malformed: bad JSON or array meta, wrong byte length, missing chunk, non-finite floats."""


class MissingKey(StoreError, LookupError):
    """An operation that needs an existing value (e.g. get_rows) found none."""


class CheckpointError(StoreError):
    """A checkpoint cannot be written, committed or read: not committed, slices missing, rows not covered, ..."""


class InvalidKey(StoreError):
    """A key, prefix, run id or array name breaks the naming rules, or would escape the store."""
