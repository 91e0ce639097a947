"""The config's frozen dataclasses, each field's one default, and the key tables that fill them from YAML."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from broker import BACKENDS as BROKERS
from neuron.kernels import HIDDEN_ACTIVATIONS
from neuron.optim import OPTIMIZERS
from orchestrator.config.fields import (
    OWN,
    Field,
    backend_url,
    boolean,
    choice,
    convert_changes,
    int_or_list,
    integer,
    join,
    number,
    number_or_list,
    optional,
    section,
    text,
    text_list,
    url,
)
from orchestrator.errors import ConfigError, raise_all
from paramstore import BACKENDS as STORES

DTYPES = ("float32", "float64")
MAX_NEURONS = 256  # neurons of a run at most by default: each is a process (or a thread) with its own queue
ACTIVATIONS = HIDDEN_ACTIVATIONS  # the hidden layers' choices; the output layer is linear into the softmax


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the network: layer widths, activation and neuron processes per layer."""

    num_inputs: int
    hidden: tuple[int, ...]
    num_classes: int
    activation: str
    shards: tuple[int, ...]
    max_neurons: int = MAX_NEURONS

    @property
    def sizes(self) -> tuple[int, ...]:
        """Widths of every layer, input layer first and output layer last."""
        return (self.num_inputs, *self.hidden, self.num_classes)


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters and bookkeeping of a training run."""

    epochs: int = 1
    batch_size: int = 100
    num_parameter_servers: int | None = None  # accepted from the seed config; neurons own their weights
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    micro_batches: int = 1
    shuffle: bool = True
    seed: int = 0
    dtype: str = "float32"
    checkpoint_every: int = 100
    stall_timeout: float = 120.0  # seconds without any message before the driver gives the generation up
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
    # their passwords, when self-hosted: separate, since the store holds the run's message key
    broker_password_secret_arn: str | None = None
    store_password_secret_arn: str | None = None
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
    source: str
    broker: str = "memory://"
    paramstore: str = "memory://"
    deploy: DeployConfig = DeployConfig()

    def replace(self, **changes: Any) -> Config:
        """Copy with top-level fields changed; broker/paramstore are re-validated."""
        checked = convert_changes(SCALAR_FIELDS, "", changes, strict=False)
        return dataclasses.replace(self, **checked)

    def with_training(self, **changes: Any) -> Config:
        """Copy with TrainingConfig fields (by attribute name) changed and re-validated."""
        checked = convert_changes(TRAINING_FIELDS, "training", changes, strict=True)
        training = dataclasses.replace(self.training, **checked)
        _check_training(training, "training")
        return dataclasses.replace(self, training=training)


def _layer_name(index: int, num_hidden: int) -> str:
    """Human name of the index-th (0-based) sharded layer, numbered from 1 as plan and scale number them."""
    return f"layer {index + 1} (the output layer)" if index == num_hidden else f"layer {index + 1}"


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
    problems: list[ConfigError] = []
    try:
        hidden = _per_layer(
            v["widths"], num_hidden, join(path, "num_nodes_per_layer"),
            f"num_of_hidden_layers is {num_hidden}",
        )
    except ConfigError as exc:
        problems.append(exc)
        hidden = None
    shards_path = join(path, "shards_per_layer")
    try:
        shards = _per_layer(
            v["shards"], num_hidden + 1, shards_path, "one per hidden layer plus the output layer"
        )
    except ConfigError as exc:
        problems.append(exc)
        shards = None
    if hidden is not None and shards is not None:
        for i, (count, width) in enumerate(zip(shards, (*hidden, v["num_classes"]))):
            if count > width:
                # A neuron process with no neurons to own cannot exist, so never clamp silently.
                where = shards_path if isinstance(v["shards"], int) else f"{shards_path}[{i}]"
                layer = _layer_name(i, num_hidden)
                problems.append(ConfigError(where, f"{count} shards exceed the width of {layer} ({width} neurons)"))
        if sum(shards) > v["max_neurons"]:
            problems.append(ConfigError(shards_path, f"{sum(shards)} neurons exceed the limit of {v['max_neurons']} "
                                                     f"per run ({join(path, 'max_neurons')}; each neuron is a process "
                                                     "with its own queue)"))
    raise_all(problems)
    return NetworkConfig(
        num_inputs=v["num_inputs"], hidden=hidden, num_classes=v["num_classes"],
        activation=v["activation"], shards=shards, max_neurons=v["max_neurons"],
    )


def _check_training(training: TrainingConfig, path: str) -> None:
    """Cross-field checks of a TrainingConfig."""
    if training.micro_batches > training.batch_size:
        raise ConfigError(
            join(path, "micro_batches"),
            f"must be an integer between 1 and data_batch_size ({training.batch_size}) "
            f"(got {training.micro_batches})",
        )


def _build_training(v: dict[str, Any], path: str) -> TrainingConfig:
    """Build and cross-check the training section."""
    training = TrainingConfig(**v)
    _check_training(training, path)
    return training


# the key tables of each section: YAML key, converter, default (OWN: the dataclass's), attribute
NETWORK_FIELDS = (
    Field("num_of_hidden_layers", integer(0), attr="num_hidden"),
    Field("num_nodes_per_layer", int_or_list(1), attr="widths"),
    Field("num_classes", integer(2)),
    Field("num_inputs", integer(1), 784),
    Field("activation", choice(ACTIVATIONS), ACTIVATIONS[0]),
    Field("shards_per_layer", int_or_list(1), 1, attr="shards"),
    Field("max_neurons", integer(1), MAX_NEURONS),
)

TRAINING_FIELDS = (
    Field("epochs", integer(1), OWN),
    Field("data_batch_size", integer(1), OWN, attr="batch_size"),
    Field("num_parameter_servers", optional(integer(0)), OWN),
    Field("learning_rate", number(lambda x: x > 0, "> 0"), OWN),
    Field("optimizer", choice(OPTIMIZERS), OWN),
    Field("momentum", number(lambda x: 0 <= x < 1, ">= 0 and < 1"), OWN),
    Field("micro_batches", integer(1), OWN),
    Field("shuffle", boolean, OWN),
    Field("seed", integer(0), OWN),
    Field("dtype", choice(DTYPES), OWN),
    Field("checkpoint_every", integer(1), OWN),
    Field("stall_timeout", number(lambda x: x > 0, "> 0"), OWN),
    Field("lr_decay", number(lambda x: 0 < x <= 1, "> 0 and <= 1"), OWN),
    Field("weight_decay", number(lambda x: 0 <= x < 1, ">= 0 and < 1"), OWN),
)


ECS_FIELDS = (
    Field("task_definition", optional(text), OWN),
    Field("cluster", optional(text), OWN),
    Field("auto_scaling_group_resource_id", optional(text), OWN),
    Field("region", optional(text), OWN),
    Field("launch_type", choice(("FARGATE", "EC2")), OWN),
    Field("subnets", text_list, OWN),
    Field("security_groups", text_list, OWN),
    Field("assign_public_ip", boolean, OWN),
    Field("execution_role_arn", optional(text), OWN),
    Field("task_role_arn", optional(text), OWN),
    Field("log_group", optional(text), OWN),
    Field("image", optional(text), OWN),
    Field("broker_secret_arn", optional(text), OWN),
    Field("store_secret_arn", optional(text), OWN),
    Field("store_url", optional(url), OWN),
    Field("self_hosted", boolean, OWN),
    Field("broker_password_secret_arn", optional(text), OWN),
    Field("store_password_secret_arn", optional(text), OWN),
    Field("namespace", text, OWN),
    Field("vpc_id", optional(text), OWN),
    Field("rabbitmq_image", text, OWN),
    Field("redis_image", text, OWN),
)


def _build_ecs(v: dict[str, Any], _path: str) -> EcsConfig:
    """The ECS section, lists as tuples."""
    return EcsConfig(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})


DEPLOY_FIELDS = (
    Field("cpus", optional(number_or_list(lambda x: x > 0, "> 0")), OWN),
    Field("memory_mb", optional(int_or_list(16)), OWN),
)

# top-level keys that Config.replace may change
SCALAR_FIELDS = (
    Field("broker", backend_url(BROKERS), OWN),
    Field("paramstore", backend_url(STORES), OWN),
)

# the sections of a config file
TOP_FIELDS = (
    Field("neural_network", section(NETWORK_FIELDS, _build_network), attr="network"),
    Field("training", section(TRAINING_FIELDS, _build_training), {}),
    Field("ecs", section(ECS_FIELDS, _build_ecs), {}),
    Field("deploy", section(DEPLOY_FIELDS, lambda v, _path: DeployConfig(**v)), {}),
    *SCALAR_FIELDS,
)


