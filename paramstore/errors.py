"""The paramstore package's error tree; driver exceptions are translated into these at the edge."""
from __future__ import annotations

from collections.abc import Iterable

from broker.schemes import install_hint, redact_url


class StoreError(Exception):
    """Base of every paramstore error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or failed an I/O operation."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = redact_url(url)
        msg = f"parameter store unavailable at {self.url}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class StoreRefused(StoreError):
    """The store is up but refuses writes (out of memory, read-only, disk full): retrying cannot help."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = redact_url(url)
        super().__init__(f"the parameter store at {self.url} refused a write: {detail}")


class RunDataLost(StoreError):
    """The store no longer holds a running run's manifest (or lease): it lost the run's data."""


class LeaseHeld(StoreError):
    """Another driver holds the run's lease: this one may not drive the run."""


class LeaseLost(StoreError):
    """This driver's lease was taken over by another driver: it must stop without committing."""


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
            f"the {scheme}:// store needs the {package} package: {install_hint(package, extra)}"
        )


class CorruptValue(StoreError):
    """A stored value is malformed: bad JSON or array meta, wrong byte length, missing chunk, non-finite floats."""


class MissingKey(StoreError, LookupError):
    """An operation that needs an existing value (e.g. get_rows) found none."""


class CheckpointError(StoreError):
    """A checkpoint cannot be written, committed or read: not committed, slices missing, rows not covered, ..."""


class InvalidKey(StoreError):
    """A key, prefix, run id or array name breaks the naming rules, or would escape the store."""
