"""Read a YAML network description and validate it into a Config."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from orchestrator.config.fields import join, read_fields, show
from orchestrator.config.schema import TOP_FIELDS, Config
from orchestrator.errors import ConfigError, raise_all


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """Construct a mapping after checking its own scalar keys are unique."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # Merge keys (<<) legitimately repeat and override; only literal keys count.
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, which reads `1e-3` (no dot) as a string; learning
# rates are routinely written that way, so resolve it as a float like YAML 1.2.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def config_from_mapping(data: Mapping, source: str = "<string>") -> Config:
    """Validate an already-parsed mapping (e.g. from yaml.safe_load) into a Config."""
    if data is None:
        raise ConfigError("", "document is empty; expected a 'neural_network' section")
    if not isinstance(data, Mapping):
        raise ConfigError("", f"top level must be a mapping of sections (got {show(data)})")
    config = Config(**read_fields(data, "", TOP_FIELDS), source=source)
    layers = len(config.network.shards)
    problems = []
    for name in ("cpus", "memory_mb"):
        value = getattr(config.deploy, name)
        if isinstance(value, tuple) and len(value) != layers:
            problems.append(ConfigError(f"deploy.{name}", f"has {len(value)} entries but needs {layers} "
                                                          "(one per hidden layer plus the output layer)"))
    raise_all(problems)
    return config


def _node_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    """Record the 1-based line of every key and list item under `node`, by dotted path."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                sub = join(path, key.value)
                lines.setdefault(sub, key.start_mark.line + 1)
                _node_lines(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            lines.setdefault(sub, item.start_mark.line + 1)
            _node_lines(item, sub, lines)


def yaml_lines(text: str) -> dict[str, int]:
    """The line of every dotted path in YAML text ({} if it does not parse)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    if root is not None:
        _node_lines(root, "", lines)
    return lines


def _line_of(path: str, lines: dict[str, int]) -> int | None:
    """The line of `path`, or of its nearest enclosing key that the file has (a missing key: its section)."""
    while path and not path.startswith("-"):
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def locate(exc: ConfigError, file: str, text: str | None = None) -> ConfigError:
    """Give each problem of `exc` the config file's name and the line of its YAML path; returns `exc`."""
    if text is None:
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            text = ""
    lines = yaml_lines(text)
    for problem in exc.problems:
        if problem.file is None and not problem.path.startswith("-"):
            problem.file = file
            if problem.line is None:
                problem.line = _line_of(problem.path, lines)
    return exc


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse YAML text into a Config; errors name `source` and the line of each problem."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (column {mark.column + 1})" if mark else ""
        raise ConfigError("", f"invalid YAML{where}: {exc.problem or exc.context}", file=source,
                          line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}", file=source) from None
    try:
        return config_from_mapping(data, source)
    except ConfigError as exc:
        raise locate(exc, source, text) from None


def load_config(path: str | os.PathLike) -> Config:
    """Read and parse a YAML config file."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        hint = ""
        if not os.path.exists(name) and os.path.basename(os.path.dirname(name)) == "examples":
            hint = " (the example configs: `cuttlefish examples DIR` copies them into DIR)"
        raise ConfigError("", f"cannot read it: {exc.strerror or exc}{hint}", file=name) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read it: not UTF-8 text (byte {exc.start})", file=name) from None
    return parse_config(text, source=name)
