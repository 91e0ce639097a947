"""Bad input is found before anything starts, all of it at once, with the file, the line and the numbers."""
from __future__ import annotations

import dataclasses
import time

from orchestrator.cli import main
from tests.conftest import ROOT

TINY = ROOT / "examples" / "tiny.yaml"


def _variant(tmp_path, old: str, new: str, name: str = "net.yaml"):
    text = TINY.read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def test_too_few_classes_for_the_labels_fails_at_once(tmp_path, mnist_dir, capsys):
    path = _variant(tmp_path, "num_classes: 10\n  activation: relu\n  shards_per_layer: [3, 2, 2]",
                    "num_classes: 5\n  activation: relu\n  shards_per_layer: [3, 2, 2]")
    started = time.monotonic()
    assert main(["train", str(path), "--data", str(mnist_dir)]) == 2
    assert time.monotonic() - started < 60  # it used to hang for two 120 s stall timeouts
    err = capsys.readouterr().err
    assert f"{path}:5: neural_network.num_classes: is 5, but the training set's labels go up to 9" in err
    assert "10 classes are needed" in err and "run " not in err  # no neuron was started


def test_inputs_that_do_not_match_the_pixels_fail_at_once(tmp_path, mnist_dir, capsys):
    path = _variant(tmp_path, "num_classes: 10\n", "num_classes: 10\n  num_inputs: 100\n")
    assert main(["train", str(path), "--data", str(mnist_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:6: neural_network.num_inputs: is 100, but the training set's images have 784 pixels" in err


def test_the_runner_checks_the_data_too(mnist):
    from orchestrator.config import load_config
    from orchestrator.errors import ConfigError
    from orchestrator.training.runner import train_run

    train, test = mnist
    config = load_config(TINY)
    config = config.replace(network=dataclasses.replace(config.network, num_classes=5, shards=(3, 2, 1)))
    try:
        train_run(config, train, test, run_id="fits")
    except ConfigError as exc:
        assert exc.path == "neural_network.num_classes" and "up to 9" in exc.reason
    else:
        raise AssertionError("train_run accepted 5 classes for labels 0-9")


def test_unwritable_outputs_fail_before_training(tmp_path, capsys):
    # /proc takes no new files, even for root (whom permission bits do not stop)
    assert main(["train", str(TINY), "--data", "/nonexistent", "--save-model", "/proc/model.npz",
                 "--metrics", str(tmp_path), "--plot", str(tmp_path / "missing" / "c.svg")]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err
    assert "--save-model: cannot write /proc/model.npz" in err
    assert f"--metrics: {tmp_path} is a folder" in err
    assert "--plot: folder" in err and "does not exist" in err
    assert not (tmp_path / "missing").exists()


def test_writable_probe_leaves_nothing_behind(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", str(TINY), "--data", str(tmp_path / "no-data"), "--save-model", str(model)]) == 2
    assert "cannot write" not in capsys.readouterr().err  # the data is missing: it stops there
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the probe of m.npz left no file


def test_plan_refuses_what_train_refuses(tmp_path, capsys):
    path = tmp_path / "net.yaml"
    path.write_text(TINY.read_text() + "broker: kafka://user:secret@host\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "broker: unknown URL scheme in 'kafka://user:***@host'" in err and "secret" not in err
    assert main(["train", str(path), "--data", "/nonexistent"]) == 2
    assert "broker: unknown URL scheme" in capsys.readouterr().err


def test_every_config_error_at_once_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "neural_network:\n"
        "  num_of_hidden_layers: 2\n"
        "  num_nodes_per_layer: [32, 16]\n"
        "  num_classes: 10\n"
        "  shards_per_layer: [40, 2, 20]\n"
        "  activaton: relu\n"
        "training:\n"
        "  learnig_rate: 0.1\n"
        "  epochs: 0\n"
        "deploy:\n"
        "  cpus: -1\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orchestrator: config error: {path}: 6 problems:\n")
    for line in (f"{path}:5: neural_network.shards_per_layer[0]: 40 shards exceed the width of layer 1 (32 neurons)",
                 f"{path}:5: neural_network.shards_per_layer[2]: 20 shards exceed the width of layer 3 "
                 "(the output layer) (10 neurons)",
                 f"{path}:6: neural_network.activaton: unknown key (did you mean 'activation'?)",
                 f"{path}:8: training.learnig_rate: unknown key (did you mean 'learning_rate'?)",
                 f"{path}:9: training.epochs: must be an integer >= 1 (got 0)",
                 f"{path}:11: deploy.cpus: must be a finite number > 0 (got -1)"):
        assert f"  {line}\n" in err


def test_a_yaml_syntax_error_names_the_real_file(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("neural_network:\n  num_classes: 10\n   bad: [1, 2\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3: invalid YAML" in err and "<file>" not in err


def test_a_missing_key_points_at_its_section(tmp_path, capsys):
    path = tmp_path / "net.yaml"
    path.write_text("training:\n  epochs: 1\nneural_network:\n  num_classes: 10\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3: neural_network.num_of_hidden_layers: required key missing" in err
    assert f"{path}:3: neural_network.num_nodes_per_layer: required key missing" in err


def test_layer_numbers_agree_between_errors_plan_and_scale(tmp_path, capsys):
    path = _variant(tmp_path, "shards_per_layer: [3, 2, 2]", "shards_per_layer: [3, 20, 2]")
    assert main(["plan", str(path)]) == 2
    assert "20 shards exceed the width of layer 2 (16 neurons)" in capsys.readouterr().err
    assert main(["plan", str(TINY)]) == 0
    out = capsys.readouterr().out
    assert "L2." in out  # plan calls the 16-wide layer layer 2 too
