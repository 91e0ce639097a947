"""Parse a YAML network description into frozen, validated dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.errors import ConfigError

__all__ = [
    "DTYPES", "ACTIVATIONS", "OPTIMIZERS", "NetworkConfig", "TrainingConfig", "EcsConfig",
    "Config", "load_config", "parse_config", "config_from_mapping",
]

DTYPES = ("float32", "float64")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the network: layer widths, activation and neuron processes per layer."""

    num_inputs: int
    hidden: tuple[int, ...]
    num_classes: int
    activation: str
    shards: tuple[int, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Widths of every layer, input layer first and output layer last."""
        return (self.num_inputs, *self.hidden, self.num_classes)


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters and bookkeeping of a training run."""

    epochs: int
    batch_size: int
    num_parameter_servers: int | None
    learning_rate: float
    optimizer: str
    momentum: float
    micro_batches: int
    shuffle: bool
    seed: int
    dtype: str
    checkpoint_every: int
    lr_decay: float = 1.0  # the learning rate of epoch e is learning_rate * lr_decay ** e
    weight_decay: float = 0.0  # L2: weight_decay * p is added to each gradient


@dataclass(frozen=True)
class EcsConfig:
    """Where to run on AWS ECS; every field is optional here, `deploy --target ecs` says what it needs."""

    task_definition: str | None = None  # prefix of the task definition families (default: the run id)
    cluster: str | None = None
    auto_scaling_group_resource_id: str | None = None  # ARN of an Auto Scaling group: an EC2 capacity provider
    region: str | None = None
    launch_type: str = "FARGATE"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    execution_role_arn: str | None = None
    task_role_arn: str | None = None
    log_group: str | None = None
    image: str | None = None
    broker_secret_arn: str | None = None  # a secret holding the whole broker URL, password included
    store_secret_arn: str | None = None  # the same for the store (or store_url when it has no password)
    store_url: str | None = None
    self_hosted: bool = False  # run RabbitMQ and Redis as services found through Cloud Map
    password_secret_arn: str | None = None  # their password, when self-hosted
    namespace: str = "cuttlefish.local"
    vpc_id: str | None = None
    rabbitmq_image: str = "rabbitmq:3.13"
    redis_image: str = "redis:7.2"


@dataclass(frozen=True)
class DeployConfig:
    """Container limits per layer (hidden layers then the output layer); None leaves them unlimited."""

    cpus: float | tuple[float, ...] | None = None
    memory_mb: int | tuple[int, ...] | None = None

    def for_layer(self, layer: int) -> tuple[float | None, int | None]:
        """(cpus, memory in MB) for the neurons of `layer` (1-based)."""
        def pick(value):
            return value[layer - 1] if isinstance(value, tuple) else value
        return pick(self.cpus), pick(self.memory_mb)


@dataclass(frozen=True)
class Config:
    """A whole, validated network description."""

    network: NetworkConfig
    training: TrainingConfig
    ecs: EcsConfig
    broker: str
    paramstore: str
    source: str
    deploy: DeployConfig = DeployConfig()

    def replace(self, **changes: Any) -> Config:
        """Copy with top-level fields changed; broker/paramstore are re-validated."""
        checked = _convert_changes(_SCALAR_FIELDS, "", changes, strict=False)
        return dataclasses.replace(self, **checked)

    def with_training(self, **changes: Any) -> Config:
        """Copy with TrainingConfig fields (by attribute name) changed and re-validated."""
        checked = _convert_changes(_TRAINING_FIELDS, "training", changes, strict=True)
        training = dataclasses.replace(self.training, **checked)
        _check_training(training, "training")
        return dataclasses.replace(self, training=training)


# A converter takes (raw YAML value, dotted path) and returns the typed value or
# raises ConfigError naming that path.
_Converter = Callable[[Any, str], Any]


def _show(value: Any) -> str:
    """Render a raw YAML value the way the user wrote it, briefly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list, tuple)):
        return "a mapping" if isinstance(value, Mapping) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    """True for real integers; YAML `true` must not pass as 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def _join(prefix: str, key: str) -> str:
    """Extend a dotted path by one key."""
    return f"{prefix}.{key}" if prefix else key


def _check(test: Callable[[Any], bool], wanted: str) -> _Converter:
    """_Converter that passes values satisfying test and otherwise says what was wanted."""

    def convert(value: Any, path: str) -> Any:
        if not test(value):
            raise ConfigError(path, f"{wanted} (got {_show(value)})")
        return value

    return convert


def _integer(minimum: int) -> _Converter:
    """_Converter for an integer >= minimum."""
    return _check(lambda v: _is_int(v) and v >= minimum, f"must be an integer >= {minimum}")


def _choice(allowed: tuple[str, ...]) -> _Converter:
    """_Converter for one of a fixed set of strings, matched case-sensitively."""
    wanted = f"must be one of {', '.join(allowed)}"
    return _check(lambda v: isinstance(v, str) and v in allowed, wanted)


_boolean = _check(lambda v: isinstance(v, bool), "must be true or false")
_text = _check(lambda v: isinstance(v, str) and v != "", "must be a non-empty string")
_url = _check(lambda v: isinstance(v, str) and "://" in v, "must be a URL such as 'memory://'")


def _number(within: Callable[[float], bool], bounds: str) -> _Converter:
    """_Converter for a finite number satisfying within (bounds describes it); ints accepted."""

    def convert(value: Any, path: str) -> float:
        number = math.nan
        if _is_int(value) or isinstance(value, float):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range is not a usable number
                pass
        if not (math.isfinite(number) and within(number)):
            raise ConfigError(path, f"must be a finite number {bounds} (got {_show(value)})")
        return number

    return convert


def _optional(convert: _Converter) -> _Converter:
    """Let null through as None, otherwise defer to convert."""
    return lambda value, path: None if value is None else convert(value, path)


def _number_or_list(within: Callable[[float], bool], bounds: str) -> _Converter:
    """_Converter for a number satisfying within, or a list of them (returned as a tuple)."""
    one = _number(within, bounds)

    def convert(value: Any, path: str) -> float | tuple[float, ...]:
        if isinstance(value, list):
            return tuple(one(item, f"{path}[{i}]") for i, item in enumerate(value))
        return one(value, path)

    return convert


def _int_or_list(minimum: int) -> _Converter:
    """_Converter for an integer >= minimum or a list of them (returned as a tuple)."""
    one = _integer(minimum)

    def convert(value: Any, path: str) -> int | tuple[int, ...]:
        if isinstance(value, list):
            return tuple(one(item, f"{path}[{i}]") for i, item in enumerate(value))
        if not _is_int(value):
            raise ConfigError(
                path, f"must be an integer >= {minimum} or a list of them (got {_show(value)})"
            )
        return one(value, path)

    return convert


# Defaults are raw YAML values and go through the converter too, so a default
# can never bypass validation.
_REQUIRED = object()


@dataclass(frozen=True)
class _Field:
    """One YAML key: its dataclass attribute, converter and raw default."""

    key: str
    convert: _Converter
    default: Any = _REQUIRED
    attr: str = ""  # dataclass attribute when it differs from the YAML key

    @property
    def name(self) -> str:
        """Dataclass attribute this key fills."""
        return self.attr or self.key


def _read_fields(data: Mapping, prefix: str, fields: tuple[_Field, ...]) -> dict[str, Any]:
    """Check keys of one mapping against a table and convert every field."""
    allowed = [f.key for f in fields]
    for key in data:
        if key not in allowed:
            raise ConfigError(_join(prefix, str(key)), _unknown_key_reason(str(key), allowed))
    values = {}
    for field in fields:
        path = _join(prefix, field.key)
        if field.key in data:
            values[field.name] = field.convert(data[field.key], path)
        elif field.default is _REQUIRED:
            raise ConfigError(path, "required key missing")
        else:
            values[field.name] = field.convert(field.default, path)
    return values


def _unknown_key_reason(key: str, allowed: list[str]) -> str:
    """Explain an unknown key, suggesting the likely intended one."""
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (allowed: {', '.join(allowed)})"


def _convert_changes(
    fields: tuple[_Field, ...], prefix: str, changes: Mapping[str, Any], *, strict: bool
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
            out[attr] = field.convert(value, _join(prefix, field.key))
    return out


def _section(fields: tuple[_Field, ...], build: Callable[[dict[str, Any], str], Any]) -> _Converter:
    """_Converter for a mapping section built from a key table."""

    def convert(value: Any, path: str) -> Any:
        if value is None:  # `training:` with nothing under it means all defaults
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be a mapping of keys (got {_show(value)})")
        return build(_read_fields(value, path, fields), path)

    return convert


def _layer_name(index: int, num_hidden: int) -> str:
    """Human name of the index-th sharded layer (hidden layers, then output)."""
    return "the output layer" if index == num_hidden else f"hidden layer {index}"


def _per_layer(value: int | tuple[int, ...], count: int, path: str, why: str) -> tuple[int, ...]:
    """Expand an int to `count` copies, or check a list has exactly `count` entries."""
    if isinstance(value, int):
        return (value,) * count
    if len(value) != count:
        noun = "entry" if len(value) == 1 else "entries"
        raise ConfigError(path, f"has {len(value)} {noun} but needs {count} ({why})")
    return value


def _build_network(v: dict[str, Any], path: str) -> NetworkConfig:
    """Expand per-layer shorthands and check shard counts against layer widths."""
    num_hidden = v["num_hidden"]
    hidden = _per_layer(
        v["widths"], num_hidden, _join(path, "num_nodes_per_layer"),
        f"num_of_hidden_layers is {num_hidden}",
    )
    layers = (*hidden, v["num_classes"])
    shards_path = _join(path, "shards_per_layer")
    shards = _per_layer(
        v["shards"], len(layers), shards_path, "one per hidden layer plus the output layer"
    )
    for i, (count, width) in enumerate(zip(shards, layers)):
        if count > width:
            # A neuron process with no neurons to own cannot exist, so never clamp silently.
            where = shards_path if isinstance(v["shards"], int) else f"{shards_path}[{i}]"
            layer = _layer_name(i, num_hidden)
            reason = f"{count} shards exceed the width of {layer} ({width} neurons)"
            raise ConfigError(where, reason)
    return NetworkConfig(
        num_inputs=v["num_inputs"], hidden=hidden, num_classes=v["num_classes"],
        activation=v["activation"], shards=shards,
    )


def _check_training(training: TrainingConfig, path: str) -> None:
    """Cross-field checks of a TrainingConfig."""
    if training.micro_batches > training.batch_size:
        raise ConfigError(
            _join(path, "micro_batches"),
            f"must be an integer between 1 and data_batch_size ({training.batch_size}) "
            f"(got {training.micro_batches})",
        )


def _build_training(v: dict[str, Any], path: str) -> TrainingConfig:
    """Build and cross-check the training section."""
    training = TrainingConfig(**v)
    _check_training(training, path)
    return training


_NETWORK_FIELDS = (
    _Field("num_of_hidden_layers", _integer(0), attr="num_hidden"),
    _Field("num_nodes_per_layer", _int_or_list(1), attr="widths"),
    _Field("num_classes", _integer(2)),
    _Field("num_inputs", _integer(1), 784),
    _Field("activation", _choice(ACTIVATIONS), "relu"),
    _Field("shards_per_layer", _int_or_list(1), 1, attr="shards"),
)

_TRAINING_FIELDS = (
    _Field("epochs", _integer(1), 1),
    _Field("data_batch_size", _integer(1), 100, attr="batch_size"),
    _Field("num_parameter_servers", _optional(_integer(0)), None),
    _Field("learning_rate", _number(lambda x: x > 0, "> 0"), 0.1),
    _Field("optimizer", _choice(OPTIMIZERS), "sgd"),
    _Field("momentum", _number(lambda x: 0 <= x < 1, ">= 0 and < 1"), 0.9),
    _Field("micro_batches", _integer(1), 1),
    _Field("shuffle", _boolean, True),
    _Field("seed", _integer(0), 0),
    _Field("dtype", _choice(DTYPES), "float32"),
    _Field("checkpoint_every", _integer(1), 100),
    _Field("lr_decay", _number(lambda x: 0 < x <= 1, "> 0 and <= 1"), 1.0),
    _Field("weight_decay", _number(lambda x: 0 <= x < 1, ">= 0 and < 1"), 0.0),
)

_text_list = _check(lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                    "must be a list of non-empty strings")

_ECS_FIELDS = (
    _Field("task_definition", _optional(_text), None),
    _Field("cluster", _optional(_text), None),
    _Field("auto_scaling_group_resource_id", _optional(_text), None),
    _Field("region", _optional(_text), None),
    _Field("launch_type", _choice(("FARGATE", "EC2")), "FARGATE"),
    _Field("subnets", _text_list, []),
    _Field("security_groups", _text_list, []),
    _Field("assign_public_ip", _boolean, False),
    _Field("execution_role_arn", _optional(_text), None),
    _Field("task_role_arn", _optional(_text), None),
    _Field("log_group", _optional(_text), None),
    _Field("image", _optional(_text), None),
    _Field("broker_secret_arn", _optional(_text), None),
    _Field("store_secret_arn", _optional(_text), None),
    _Field("store_url", _optional(_url), None),
    _Field("self_hosted", _boolean, False),
    _Field("password_secret_arn", _optional(_text), None),
    _Field("namespace", _text, "cuttlefish.local"),
    _Field("vpc_id", _optional(_text), None),
    _Field("rabbitmq_image", _text, "rabbitmq:3.13"),
    _Field("redis_image", _text, "redis:7.2"),
)


def _build_ecs(v: dict[str, Any], _path: str) -> EcsConfig:
    return EcsConfig(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})

_DEPLOY_FIELDS = (
    _Field("cpus", _optional(_number_or_list(lambda x: x > 0, "> 0")), None),
    _Field("memory_mb", _optional(_int_or_list(16)), None),
)

_SCALAR_FIELDS = (
    _Field("broker", _url, "memory://"),
    _Field("paramstore", _url, "memory://"),
)

_TOP_FIELDS = (
    _Field("neural_network", _section(_NETWORK_FIELDS, _build_network), attr="network"),
    _Field("training", _section(_TRAINING_FIELDS, _build_training), {}),
    _Field("ecs", _section(_ECS_FIELDS, _build_ecs), {}),
    _Field("deploy", _section(_DEPLOY_FIELDS, lambda v, _path: DeployConfig(**v)), {}),
    *_SCALAR_FIELDS,
)


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
                    None, None, f"duplicate key {_show(key)}", key_node.start_mark
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
        raise ConfigError("<file>", f"top level must be a mapping of sections (got {_show(data)})")
    config = Config(**_read_fields(data, "", _TOP_FIELDS), source=source)
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
