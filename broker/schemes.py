"""URLs that name backends: redacting their secrets, and loading the backend a scheme names from a table.

Shared by broker/ and paramstore/. It lives here because broker/ is the lower of the two (a transport
with no domain knowledge, used by everything above it); paramstore/ imports it, and broker/ imports nothing
of paramstore/. It imports only the standard library.
"""
from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple
from urllib.parse import quote, urlsplit

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


def install_hint(package: str, extra: str) -> str:
    """How to install a missing driver: the package itself, or this project's extra from its checkout.

    Never the distribution name 'cuttlefish': on the public index that name belongs to an unrelated project.
    """
    return f"pip install {package} (or, in the Cuttlefish checkout, pip install -e '.[{extra}]')"


class Backend(NamedTuple):
    """Where the backend of one scheme lives, and the pip extra that installs its driver (None: no driver)."""

    module: str
    cls: str
    extra: str | None


class SchemeErrors(NamedTuple):
    """How a package reports what load_backend finds wrong, in its own error types."""

    unknown: Callable[[str], Exception]  # (url): the scheme names no backend
    not_included: Callable[[str], Exception]  # (scheme): the table names a module this version lacks
    missing_extra: Callable[[str, str, str], Exception]  # (scheme, package, extra): the driver is not installed


def scheme_of(url: str) -> str:
    """The scheme of `url`, or "" if it cannot be parsed."""
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


BROKER_PASSWORD_FILE_ENV = "CUTTLEFISH_BROKER_PASSWORD_FILE"
STORE_PASSWORD_FILE_ENV = "CUTTLEFISH_STORE_PASSWORD_FILE"
# the one file both once read: whoever held the broker's password could then read the run's message key
RETIRED_PASSWORD_FILE_ENV = "CUTTLEFISH_PASSWORD_FILE"
# the schemes whose URL carries a password: in file://rel/dir or dynamodb://table the "host" is no server
PASSWORD_SCHEMES = frozenset({"amqp", "amqps", "redis", "rediss"})


def with_password(url: str, variable: str, environ: Mapping[str, str] | None = None) -> str:
    """`url` with the password read from the file $`variable` names, if it has none itself.

    The broker reads BROKER_PASSWORD_FILE_ENV and the store STORE_PASSWORD_FILE_ENV, never each other's, so
    the broker's credentials do not open the store that holds the run's message key. Containers get their
    passwords as compose or ECS secrets (files), never in their environment or on a command line; the URLs
    they are given name the user only ("amqp://cuttlefish@rabbitmq/", "redis://redis/0").
    """
    env = os.environ if environ is None else environ
    path = env.get(variable)
    parts = urlsplit(url)
    if parts.scheme not in PASSWORD_SCHEMES or not parts.netloc or parts.password is not None:
        return url
    if not path:
        if env.get(RETIRED_PASSWORD_FILE_ENV):  # an old setup: say so rather than fail on a missing password
            raise OSError(f"${RETIRED_PASSWORD_FILE_ENV} is no longer read: the broker and the store each have "
                          f"their own password file, ${BROKER_PASSWORD_FILE_ENV} and ${STORE_PASSWORD_FILE_ENV}")
        return url
    try:
        with open(path, encoding="utf-8") as fh:
            password = fh.read().strip()
    except OSError as exc:
        raise OSError(f"cannot read the password file {path} (${variable}): {exc.strerror}") from None
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


def load_backend(url: str, backends: Mapping[str, Backend], extra_packages: Mapping[str, tuple[str, ...]],
                 errors: SchemeErrors) -> type:
    """The backend class that `url`'s scheme names in `backends`, its module imported only now."""
    scheme = scheme_of(url)
    if scheme not in backends:
        raise errors.unknown(url)
    module, cls, extra = backends[scheme]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise errors.not_included(scheme) from exc
        top = (exc.name or "").partition(".")[0]
        if extra is None or top not in extra_packages[extra]:
            raise  # a missing module that is not the driver: not an extra to install
        raise errors.missing_extra(scheme, top, extra) from exc
    backend: type = getattr(mod, cls)
    return backend
