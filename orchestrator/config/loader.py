"""Read a YAML network description and validate it into a Config."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from orchestrator.config.fields import read_fields, show
from orchestrator.config.schema import TOP_FIELDS, Config
from orchestrator.errors import ConfigError


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
        raise ConfigError("<file>", "document is empty; expected a 'neural_network' section")
    if not isinstance(data, Mapping):
        raise ConfigError("<file>", f"top level must be a mapping of sections (got {show(data)})")
    config = Config(**read_fields(data, "", TOP_FIELDS), source=source)
    layers = len(config.network.shards)
    for name in ("cpus", "memory_mb"):
        value = getattr(config.deploy, name)
        if isinstance(value, tuple) and len(value) != layers:
            raise ConfigError(f"deploy.{name}", f"has {len(value)} entries but needs {layers} "
                                                "(one per hidden layer plus the output layer)")
    return config


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse YAML text into a Config."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("<file>", f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"invalid YAML: {exc}") from None
    return config_from_mapping(data, source)


def load_config(path: str | os.PathLike) -> Config:
    """Read and parse a YAML config file."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        reason = f"cannot read {name}: not UTF-8 text (byte {exc.start})"
        raise ConfigError("<file>", reason) from None
    return parse_config(text, source=name)
