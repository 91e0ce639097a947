"""Unit tests for orchestrator.config: parsing, defaults and error reporting."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.config import (
    ACTIVATIONS,
    DTYPES,
    OPTIMIZERS,
    Config,
    EcsConfig,
    NetworkConfig,
    TrainingConfig,
    config_from_mapping,
    load_config,
    parse_config,
)
from orchestrator.errors import ConfigError, OrchestratorError

SEED_YAML = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"

MINIMAL = {
    "neural_network": {"num_of_hidden_layers": 2, "num_nodes_per_layer": 4, "num_classes": 3},
}


def with_section(section: str, **values: object) -> dict:
    """MINIMAL with extra keys merged into one section."""
    data = {k: dict(v) for k, v in MINIMAL.items()}
    data.setdefault(section, {}).update(values)
    return data


def error_of(data: object) -> ConfigError:
    """The ConfigError raised for a mapping."""
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    return info.value


def text_error(text: str) -> ConfigError:
    """The ConfigError raised for YAML text."""
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text))
    return info.value


# --------------------------------------------------------------------- seed


def test_seed_yaml_loads_unchanged():
    cfg = load_config(SEED_YAML)
    assert cfg.source == str(SEED_YAML)
    assert cfg.network == NetworkConfig(
        num_inputs=784, hidden=(5, 5, 5), num_classes=10, activation="relu", shards=(1, 1, 1, 1)
    )
    assert cfg.network.sizes == (784, 5, 5, 5, 10)
    assert cfg.training == TrainingConfig(
        epochs=300,
        batch_size=100,
        num_parameter_servers=2,
        learning_rate=0.1,
        optimizer="sgd",
        momentum=0.9,
        micro_batches=1,
        shuffle=True,
        seed=0,
        dtype="float32",
        checkpoint_every=100,
    )
    assert cfg.ecs == EcsConfig(
        task_definition="cuttlefish-task-dev2:7",
        cluster="cuttlefish-dev",
        auto_scaling_group_resource_id="EC2-Cuttlefish",
    )
    assert cfg.broker == "memory://"
    assert cfg.paramstore == "memory://"


def test_seed_yaml_is_the_papers_file_verbatim():
    assert yaml.safe_load(SEED_YAML.read_text()) == {
        "neural_network": {"num_of_hidden_layers": 3, "num_nodes_per_layer": 5, "num_classes": 10},
        "training": {"epochs": 300, "data_batch_size": 100, "num_parameter_servers": 2},
        "ecs": {
            "task_definition": "cuttlefish-task-dev2:7",
            "cluster": "cuttlefish-dev",
            "auto_scaling_group_resource_id": "EC2-Cuttlefish",
        },
    }


def test_load_config_accepts_pathlike_and_str(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(path) == load_config(str(path)).replace(source=str(path))
    assert load_config(path).source == str(path)


def test_parse_config_default_source():
    assert parse_config(yaml.safe_dump(MINIMAL)).source == "<string>"
    assert parse_config(yaml.safe_dump(MINIMAL), source="x.yaml").source == "x.yaml"


# ---------------------------------------------------------------- defaults


def test_defaults_for_optional_sections_and_keys():
    cfg = config_from_mapping(MINIMAL)
    assert cfg.network.num_inputs == 784
    assert cfg.network.activation == "relu"
    assert cfg.network.shards == (1, 1, 1)
    assert cfg.training == TrainingConfig(
        epochs=1, batch_size=100, num_parameter_servers=None, learning_rate=0.1,
        optimizer="sgd", momentum=0.9, micro_batches=1, shuffle=True, seed=0,
        dtype="float32", checkpoint_every=100,
    )
    assert cfg.ecs == EcsConfig()
    assert (cfg.broker, cfg.paramstore) == ("memory://", "memory://")


def test_empty_sections_mean_defaults():
    cfg = parse_config(
        """
        neural_network: {num_of_hidden_layers: 0, num_nodes_per_layer: 1, num_classes: 2}
        training:
        ecs:
        """
    )
    assert cfg.training.epochs == 1
    assert cfg.ecs == EcsConfig()
    assert cfg.network.hidden == ()
    assert cfg.network.shards == (1,)
    assert cfg.network.sizes == (784, 2)


def test_every_key_set_explicitly():
    cfg = parse_config(
        textwrap.dedent(
            """
            neural_network:
              num_of_hidden_layers: 2
              num_nodes_per_layer: [8, 6]
              num_classes: 4
              num_inputs: 16
              activation: tanh
              shards_per_layer: [4, 3, 2]
            training:
              epochs: 3
              data_batch_size: 32
              num_parameter_servers: 0
              learning_rate: 1
              optimizer: adam
              momentum: 0
              micro_batches: 32
              shuffle: false
              seed: 7
              dtype: float64
              checkpoint_every: 1
            broker: amqp://guest@localhost:5672/
            paramstore: redis://localhost:6379/0
            """
        )
    )
    assert cfg.network == NetworkConfig(16, (8, 6), 4, "tanh", (4, 3, 2))
    assert cfg.network.sizes == (16, 8, 6, 4)
    t = cfg.training
    assert (t.epochs, t.batch_size, t.num_parameter_servers) == (3, 32, 0)
    assert t.learning_rate == 1.0 and isinstance(t.learning_rate, float)
    assert (t.optimizer, t.momentum, t.micro_batches) == ("adam", 0.0, 32)
    assert (t.shuffle, t.seed, t.dtype, t.checkpoint_every) == (False, 7, "float64", 1)
    assert cfg.broker == "amqp://guest@localhost:5672/"
    assert cfg.paramstore == "redis://localhost:6379/0"


def test_shards_int_applies_to_every_layer():
    cfg = config_from_mapping(with_section("neural_network", shards_per_layer=3))
    assert cfg.network.shards == (3, 3, 3)


def test_exponent_without_dot_is_a_float():
    # PyYAML alone would read 1e-3 as the string '1e-3'.
    cfg = parse_config(yaml.safe_dump(MINIMAL) + "training: {learning_rate: 1e-3}\n")
    assert cfg.training.learning_rate == pytest.approx(1e-3)


def test_constants():
    assert DTYPES == ("float32", "float64")
    assert ACTIVATIONS == ("relu", "tanh", "sigmoid")
    assert OPTIMIZERS == ("sgd", "momentum", "adam")


# ----------------------------------------------------------- immutability


def test_config_is_frozen():
    cfg = config_from_mapping(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.broker = "amqp://x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.epochs = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.network.hidden = (1,)  # type: ignore[misc]
    assert hash(cfg) == hash(config_from_mapping(MINIMAL))


def test_replace_and_with_training():
    cfg = config_from_mapping(MINIMAL)
    changed = cfg.replace(broker="amqp://h", paramstore="redis://h")
    assert (changed.broker, changed.paramstore) == ("amqp://h", "redis://h")
    assert cfg.broker == "memory://"
    trained = cfg.with_training(epochs=5, batch_size=10, micro_batches=10)
    assert (trained.training.epochs, trained.training.batch_size) == (5, 10)
    assert trained.network is cfg.network
    assert cfg.training.epochs == 1


def test_overrides_are_validated():
    cfg = config_from_mapping(MINIMAL)
    with pytest.raises(ConfigError, match=r"^training\.epochs: must be an integer >= 1 \(got 0\)$"):
        cfg.with_training(epochs=0)
    with pytest.raises(ConfigError, match=r"^training\.micro_batches: "):
        cfg.with_training(batch_size=4, micro_batches=5)
    with pytest.raises(ConfigError, match=r"^broker: must be a URL"):
        cfg.replace(broker="localhost")
    with pytest.raises(TypeError):
        cfg.with_training(nonsense=1)


# ------------------------------------------------------------------ errors


def test_config_error_shape():
    err = ConfigError("training.epochs", "bad")
    assert isinstance(err, OrchestratorError)
    assert (err.path, err.reason, str(err)) == ("training.epochs", "bad", "training.epochs: bad")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.path == "" and info.value.file == str(missing)
    assert str(info.value) == f"{missing}: cannot read it: No such file or directory"


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path}: cannot read it: "):
        load_config(tmp_path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"bin.yaml: cannot read it: not UTF-8"):
        load_config(path)


def test_yaml_syntax_error_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("neural_network:\n  num_classes: 10\n   bad: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # the real file and the line, like a compiler's message
    assert info.value.file == str(path) and info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: invalid YAML (column ")


def test_duplicate_key_is_an_error():
    err = text_error(
        """\
        neural_network:
          num_classes: 10
          num_classes: 3
        """
    )
    assert str(err) == "<string>:3: invalid YAML (column 3): duplicate key 'num_classes'"


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty_document(text):
    err = text_error(text)
    assert err.path == "" and err.file == "<string>"
    assert "empty" in err.reason


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(text):
    err = text_error(text)
    assert err.path == "" and err.file == "<string>"
    assert err.reason.startswith("top level must be a mapping")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            with_section("training", learnig_rate=0.1),
            "training.learnig_rate: unknown key (did you mean 'learning_rate'?)",
        ),
        (
            with_section("neural_network", num_nodes_per_layr=4),
            "neural_network.num_nodes_per_layr: unknown key (did you mean 'num_nodes_per_layer'?)",
        ),
        (
            {**MINIMAL, "trainig": {}},
            "trainig: unknown key (did you mean 'training'?)",
        ),
        (
            with_section("ecs", clustr="c"),
            "ecs.clustr: unknown key (did you mean 'cluster'?)",
        ),
        (
            with_section("ecs", zzz="c"),
            "ecs.zzz: unknown key (allowed: task_definition, cluster, "
            "auto_scaling_group_resource_id, region, launch_type, subnets, security_groups, "
            "assign_public_ip, execution_role_arn, task_role_arn, log_group, image, broker_secret_arn, "
            "store_secret_arn, store_url, self_hosted, broker_password_secret_arn, store_password_secret_arn, "
            "namespace, vpc_id, rabbitmq_image, redis_image)",
        ),
    ],
)
def test_unknown_keys(data, expected):
    assert str(error_of(data)) == expected


def test_unknown_key_without_match_lists_allowed_keys():
    err = error_of(with_section("training", qqq=1))
    assert err.path == "training.qqq"
    assert err.reason.startswith("unknown key (allowed: epochs, data_batch_size, ")


@pytest.mark.parametrize("key", ["num_of_hidden_layers", "num_nodes_per_layer", "num_classes"])
def test_required_key_missing(key):
    data = {"neural_network": dict(MINIMAL["neural_network"])}
    del data["neural_network"][key]
    assert str(error_of(data)) == f"neural_network.{key}: required key missing"


def test_missing_network_section():
    assert str(error_of({"training": {}})) == "neural_network: required key missing"


@pytest.mark.parametrize("value", [3, "x", [1]])
def test_section_not_a_mapping(value):
    err = error_of({**MINIMAL, "training": value})
    assert err.path == "training"
    assert err.reason.startswith("must be a mapping")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("training", "epochs", True),
        ("training", "data_batch_size", False),
        ("training", "seed", True),
        ("training", "num_parameter_servers", True),
        ("neural_network", "num_classes", True),
        ("neural_network", "num_nodes_per_layer", True),
    ],
)
def test_bool_is_not_an_int(section, key, value):
    err = error_of(with_section(section, **{key: value}))
    assert err.path == f"{section}.{key}"
    assert "integer" in err.reason
    assert err.reason.endswith(f"(got {'true' if value else 'false'})")


def test_bool_in_width_list_names_the_index():
    err = error_of(with_section("neural_network", num_nodes_per_layer=[4, True]))
    assert str(err) == "neural_network.num_nodes_per_layer[1]: must be an integer >= 1 (got true)"


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("training", "epochs", 0, "must be an integer >= 1 (got 0)"),
        ("training", "epochs", 2.0, "must be an integer >= 1 (got 2.0)"),
        ("training", "epochs", "3", "must be an integer >= 1 (got '3')"),
        ("training", "data_batch_size", 0, "must be an integer >= 1 (got 0)"),
        ("training", "learning_rate", 0, "must be a finite number > 0 (got 0)"),
        ("training", "learning_rate", -0.5, "must be a finite number > 0 (got -0.5)"),
        ("training", "learning_rate", float("inf"), "must be a finite number > 0 (got inf)"),
        ("training", "learning_rate", float("nan"), "must be a finite number > 0 (got nan)"),
        ("training", "learning_rate", 10**400, "must be a finite number > 0 (got 1000000000"),
        ("training", "learning_rate", "0.1", "must be a finite number > 0 (got '0.1')"),
        ("training", "learning_rate", True, "must be a finite number > 0 (got true)"),
        ("training", "momentum", 1, "must be a finite number >= 0 and < 1 (got 1)"),
        ("training", "momentum", -0.1, "must be a finite number >= 0 and < 1 (got -0.1)"),
        ("training", "micro_batches", 0, "must be an integer >= 1 (got 0)"),
        ("training", "seed", -1, "must be an integer >= 0 (got -1)"),
        ("training", "checkpoint_every", 0, "must be an integer >= 1 (got 0)"),
        ("training", "num_parameter_servers", -1, "must be an integer >= 0 (got -1)"),
        ("training", "shuffle", "yes please", "must be true or false (got 'yes please')"),
        ("training", "shuffle", 1, "must be true or false (got 1)"),
        ("training", "optimizer", "SGD", "must be one of sgd, momentum, adam (got 'SGD')"),
        ("training", "dtype", "float16", "must be one of float32, float64 (got 'float16')"),
        ("neural_network", "activation", "relu6",
         "must be one of relu, tanh, sigmoid (got 'relu6')"),
        ("neural_network", "activation", None, "must be one of relu, tanh, sigmoid (got null)"),
        ("neural_network", "num_classes", 1, "must be an integer >= 2 (got 1)"),
        ("neural_network", "num_inputs", 0, "must be an integer >= 1 (got 0)"),
        ("neural_network", "num_of_hidden_layers", -1, "must be an integer >= 0 (got -1)"),
        ("neural_network", "num_nodes_per_layer", 0, "must be an integer >= 1 (got 0)"),
        ("neural_network", "num_nodes_per_layer", "5",
         "must be an integer >= 1 or a list of them (got '5')"),
        ("neural_network", "shards_per_layer", 0, "must be an integer >= 1 (got 0)"),
        ("ecs", "cluster", 7, "must be a non-empty string (got 7)"),
        ("ecs", "task_definition", "", "must be a non-empty string (got '')"),
    ],
)
def test_bad_values(section, key, value, expected):
    err = error_of(with_section(section, **{key: value}))
    assert err.path == f"{section}.{key}"
    assert err.reason.startswith(expected)


def test_ints_accepted_where_floats_expected():
    cfg = config_from_mapping(with_section("training", learning_rate=2, momentum=0))
    assert cfg.training.learning_rate == 2.0 and isinstance(cfg.training.learning_rate, float)
    assert cfg.training.momentum == 0.0 and isinstance(cfg.training.momentum, float)


def test_null_parameter_servers_and_ecs_fields_allowed():
    cfg = config_from_mapping(
        {**with_section("training", num_parameter_servers=None), "ecs": {"cluster": None}}
    )
    assert cfg.training.num_parameter_servers is None
    assert cfg.ecs.cluster is None


def test_micro_batches_bounded_by_batch_size():
    err = error_of(with_section("training", data_batch_size=8, micro_batches=9))
    assert err.path == "training.micro_batches"
    assert "data_batch_size (8)" in err.reason
    assert err.reason.endswith("(got 9)")


@pytest.mark.parametrize("key", ["broker", "paramstore"])
@pytest.mark.parametrize("value", ["localhost:5672", 5, None])
def test_bad_urls(key, value):
    err = error_of({**MINIMAL, key: value})
    assert err.path == key
    assert err.reason.startswith("must be a URL")


def test_width_list_element_error_names_index():
    err = error_of(with_section("neural_network", num_nodes_per_layer=[4, -3]))
    assert str(err) == "neural_network.num_nodes_per_layer[1]: must be an integer >= 1 (got -3)"


@pytest.mark.parametrize("widths", [[4], [4, 4, 4], []])
def test_width_list_length_mismatch(widths):
    err = error_of(with_section("neural_network", num_nodes_per_layer=widths))
    assert err.path == "neural_network.num_nodes_per_layer"
    assert f"has {len(widths)} " in err.reason
    assert "num_of_hidden_layers is 2" in err.reason


def test_shard_list_length_mismatch():
    err = error_of(with_section("neural_network", shards_per_layer=[1, 1]))
    assert err.path == "neural_network.shards_per_layer"
    assert err.reason.startswith("has 2 entries but needs 3")


def test_shard_list_element_exceeding_width_names_index_and_layer():
    data = with_section("neural_network", num_nodes_per_layer=[4, 2], shards_per_layer=[4, 3, 1])
    err = error_of(data)
    assert err.path == "neural_network.shards_per_layer[1]"
    assert err.reason == "3 shards exceed the width of layer 2 (2 neurons)"  # numbered as plan numbers it


def test_shard_list_element_below_one():
    err = error_of(with_section("neural_network", shards_per_layer=[1, 0, 1]))
    assert str(err) == "neural_network.shards_per_layer[1]: must be an integer >= 1 (got 0)"


def test_shard_int_too_large_names_the_layer():
    # width 4 hidden layers but only 3 classes: the output layer is the narrow one.
    err = error_of(with_section("neural_network", shards_per_layer=4))
    assert err.path == "neural_network.shards_per_layer"
    assert err.reason == "4 shards exceed the width of layer 3 (the output layer) (3 neurons)"


def test_shard_int_too_large_for_hidden_layer():
    data = with_section("neural_network", num_nodes_per_layer=[8, 2], num_classes=10,
                        shards_per_layer=3)
    err = error_of(data)
    assert err.reason == "3 shards exceed the width of layer 2 (2 neurons)"


def test_non_string_key_reported():
    err = error_of({**MINIMAL, 1: "x"})
    assert err.path == "1"
    assert err.reason.startswith("unknown key")


_yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 500), st.floats(allow_nan=True),
    st.text(max_size=8),
)
_yaml_values = st.recursive(
    _yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from([
    "neural_network", "training", "ecs", "broker", "paramstore", "num_of_hidden_layers",
    "num_nodes_per_layer", "num_classes", "shards_per_layer", "epochs", "learning_rate",
    "micro_batches", "data_batch_size", "cluster", "x",
])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _yaml_values | st.dictionaries(_keys, _yaml_values), max_size=5))
def test_arbitrary_mappings_only_raise_config_error(data):
    try:
        cfg = config_from_mapping(data)
    except ConfigError as err:
        assert all(p.path and p.reason for p in err.problems)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_only_raises_config_error(text):
    try:
        parse_config(text)
    except ConfigError as err:  # every problem names the file and what is wrong
        assert all(p.file == "<string>" and p.reason for p in err.problems)


def test_neurons_per_run_are_bounded_with_a_clear_error():
    text = """
neural_network:
  num_of_hidden_layers: 1
  num_nodes_per_layer: 10000
  num_classes: 10
  shards_per_layer: [5000, 1]
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert str(exc.value).startswith("<string>:6: neural_network.shards_per_layer: 5001 neurons exceed the limit of 256")
    raised = parse_config(text.replace("neural_network:\n", "neural_network:\n  max_neurons: 6000\n"))
    assert sum(raised.network.shards) == 5001


def test_stall_timeout_is_set_in_the_config():
    text = "neural_network: {num_of_hidden_layers: 1, num_nodes_per_layer: 4, num_classes: 2}\n"
    assert parse_config(text).training.stall_timeout == 120
    assert parse_config(text + "training: {stall_timeout: 15}\n").training.stall_timeout == 15
    with pytest.raises(ConfigError, match="training.stall_timeout"):
        parse_config(text + "training: {stall_timeout: 0}\n")
