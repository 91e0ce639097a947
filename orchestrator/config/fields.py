"""The building blocks of config validation: converters of raw YAML values, and key tables of sections.

A converter takes (raw YAML value, dotted path) and returns the typed value or raises ConfigError naming
that path.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.schemes import redact_url, scheme_of
from orchestrator.errors import ConfigError, raise_all

Converter = Callable[[Any, str], Any]


def show(value: Any) -> str:
    """Render a raw YAML value the way the user wrote it, briefly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list, tuple)):
        return "a mapping" if isinstance(value, Mapping) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value: Any) -> bool:
    """True for real integers; YAML `true` must not pass as 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def join(prefix: str, key: str) -> str:
    """Extend a dotted path by one key."""
    return f"{prefix}.{key}" if prefix else key


def check(test: Callable[[Any], bool], wanted: str) -> Converter:
    """Converter that passes values satisfying test and otherwise says what was wanted."""

    def convert(value: Any, path: str) -> Any:
        if not test(value):
            raise ConfigError(path, f"{wanted} (got {show(value)})")
        return value

    return convert


def integer(minimum: int) -> Converter:
    """Converter for an integer >= minimum."""
    return check(lambda v: is_int(v) and v >= minimum, f"must be an integer >= {minimum}")


def choice(allowed: tuple[str, ...]) -> Converter:
    """Converter for one of a fixed set of strings, matched case-sensitively."""
    wanted = f"must be one of {', '.join(allowed)}"
    return check(lambda v: isinstance(v, str) and v in allowed, wanted)


text_list = check(lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                    "must be a list of non-empty strings")
boolean = check(lambda v: isinstance(v, bool), "must be true or false")
text = check(lambda v: isinstance(v, str) and v != "", "must be a non-empty string")
url = check(lambda v: isinstance(v, str) and "://" in v, "must be a URL such as 'memory://'")


def backend_url(known: Iterable[str]) -> Converter:
    """Converter for a URL whose scheme names one of the `known` backends (shown with its password hidden)."""
    schemes = tuple(known)

    def convert(value: Any, path: str) -> str:
        value = url(value, path)
        if scheme_of(value) not in schemes:
            raise ConfigError(path, f"unknown URL scheme in {redact_url(value)!r}; known: "
                                    f"{', '.join(s + '://' for s in schemes)}")
        return value

    return convert


def number(within: Callable[[float], bool], bounds: str) -> Converter:
    """Converter for a finite number satisfying within (bounds describes it); ints accepted."""

    def convert(value: Any, path: str) -> float:
        number = math.nan
        if is_int(value) or isinstance(value, float):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range is not a usable number
                pass
        if not (math.isfinite(number) and within(number)):
            raise ConfigError(path, f"must be a finite number {bounds} (got {show(value)})")
        return number

    return convert


def optional(convert: Converter) -> Converter:
    """Let null through as None, otherwise defer to convert."""
    return lambda value, path: None if value is None else convert(value, path)


def number_or_list(within: Callable[[float], bool], bounds: str) -> Converter:
    """Converter for a number satisfying within, or a list of them (returned as a tuple)."""
    one = number(within, bounds)

    def convert(value: Any, path: str) -> float | tuple[float, ...]:
        if isinstance(value, list):
            return tuple(one(item, f"{path}[{i}]") for i, item in enumerate(value))
        return one(value, path)

    return convert


def int_or_list(minimum: int) -> Converter:
    """Converter for an integer >= minimum or a list of them (returned as a tuple)."""
    one = integer(minimum)

    def convert(value: Any, path: str) -> int | tuple[int, ...]:
        if isinstance(value, list):
            return tuple(one(item, f"{path}[{i}]") for i, item in enumerate(value))
        if not is_int(value):
            raise ConfigError(
                path, f"must be an integer >= {minimum} or a list of them (got {show(value)})"
            )
        return one(value, path)

    return convert


# A raw default is a YAML value and goes through the converter too, so it can never bypass validation;
# OWN leaves the key out, so the dataclass's own default (the one place it is written) applies.
REQUIRED = object()
OWN = object()


@dataclass(frozen=True)
class Field:
    """One YAML key: its dataclass attribute, converter and raw default."""

    key: str
    convert: Converter
    default: Any = REQUIRED
    attr: str = ""  # dataclass attribute when it differs from the YAML key

    @property
    def name(self) -> str:
        """Dataclass attribute this key fills."""
        return self.attr or self.key


def read_fields(data: Mapping, prefix: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    """Check keys of one mapping against a table and convert every field; every problem is reported at once."""
    values, unknown, wrong = _collect_fields(data, prefix, fields)
    raise_all(unknown + wrong)
    return values


def _collect_fields(data: Mapping, prefix: str,
                    fields: tuple[Field, ...]) -> tuple[dict[str, Any], list[ConfigError], list[ConfigError]]:
    """(converted values, unknown-key problems, problems of the table's own keys) of one mapping."""
    allowed = [f.key for f in fields]
    unknown = [ConfigError(join(prefix, str(key)), unknown_key_reason(str(key), allowed))
               for key in data if key not in allowed]
    problems: list[ConfigError] = []
    values = {}
    for field in fields:
        path = join(prefix, field.key)
        try:
            if field.key in data:
                values[field.name] = field.convert(data[field.key], path)
            elif field.default is REQUIRED:
                raise ConfigError(path, "required key missing")
            elif field.default is not OWN:
                values[field.name] = field.convert(field.default, path)
        except ConfigError as exc:  # a section's own collection is flattened into this one
            problems.append(exc)
    return values, unknown, problems


def unknown_key_reason(key: str, allowed: list[str]) -> str:
    """Explain an unknown key, suggesting the likely intended one."""
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (allowed: {', '.join(allowed)})"


def convert_changes(
    fields: tuple[Field, ...], prefix: str, changes: Mapping[str, Any], *, strict: bool
) -> dict[str, Any]:
    """Run programmatic overrides (by attribute name) through the key table."""
    by_attr = {f.name: f for f in fields}
    out = {}
    for attr, value in changes.items():
        field = by_attr.get(attr)
        if field is None:
            if strict:
                raise TypeError(f"unknown {prefix} field {attr!r}")
            out[attr] = value  # not table-checked; dataclasses.replace rejects bad names
        else:
            out[attr] = field.convert(value, join(prefix, field.key))
    return out


def section(fields: tuple[Field, ...], build: Callable[[dict[str, Any], str], Any]) -> Converter:
    """Converter for a mapping section built from a key table."""

    def convert(value: Any, path: str) -> Any:
        if value is None:  # `training:` with nothing under it means all defaults
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be a mapping of keys (got {show(value)})")
        values, unknown, wrong = _collect_fields(value, path, fields)
        if wrong:  # the section cannot be built: report its problems (and any misspelt keys)
            raise_all(unknown + wrong)
        try:  # the section's own cross-checks still run beside a misspelt key
            built = build(values, path)
        except ConfigError as exc:
            unknown.append(exc)
        raise_all(unknown)
        return built

    return convert


