"""The CLI as a user runs it: plan, train, resume, evaluate, predict, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.data.model import load_model, save_model
from tests.conftest import ROOT

TINY = str(ROOT / "examples" / "tiny.yaml")


def test_plan_lists_every_neuron(capsys):
    assert main(["plan", TINY]) == 0
    out = capsys.readouterr().out
    assert out.count("cf.plan.L") == 7  # shards [3, 2, 2]
    assert "L1.2" in out and "22-32" in out and "784" in out
    assert "7 neurons" in out


def test_seed_config_plans_unchanged(capsys):
    assert main(["plan", str(ROOT / "examples" / "seed.yaml")]) == 0
    assert "784-5-5-5-10" in capsys.readouterr().out


@pytest.mark.parametrize("text, where", [
    ("neural_network: {num_of_hidden_layers: 1, num_nodes_per_layer: 4, num_classes: 10}\ntraining: {learnig_rate: 0.1}\n",
     "training.learnig_rate: unknown key (did you mean 'learning_rate'?)"),
    ("neural_network: {num_of_hidden_layers: 1, num_nodes_per_layer: 4, num_classes: 10, shards_per_layer: 9}\n",
     "neural_network.shards_per_layer"),
    ("neural_network: [1, 2\n", "bad.yaml:2: invalid YAML"),
])
def test_bad_config_exits_2_with_the_path(tmp_path, capsys, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", str(path), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orchestrator: config error: ") and where in err and "Traceback" not in err


def test_missing_config_exits_2(capsys):
    assert main(["plan", "/nonexistent/x.yaml"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_train_save_evaluate_predict(mnist_dir, tmp_path, capsys):
    model, metrics = tmp_path / "m.npz", tmp_path / "m.jsonl"
    assert main(["train", TINY, "--data", str(mnist_dir), "--max-steps", "60", "--save-model", str(model),
                 "--metrics", str(metrics), "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("test accuracy: ")
    trained = float(out[-1].split(": ")[1])
    assert trained > 0.5
    params = load_model(model)
    assert [w.shape for w, _ in params] == [(32, 784), (16, 32), (10, 16)]
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert sum("loss" in x for x in lines) == 60 and lines[-1]["test_accuracy"] == trained
    assert main(["evaluate", TINY, "--model", str(model), "--data", str(mnist_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"test accuracy: {trained:.4f}"
    from orchestrator.data.mnist import load_mnist

    test = load_mnist("test", mnist_dir)
    np.save(tmp_path / "x.npy", test.images[:5].reshape(5, 28, 28))
    assert main(["predict", "--model", str(model), str(tmp_path / "x.npy")]) == 0
    digits = [int(d) for d in capsys.readouterr().out.split()]
    assert len(digits) == 5 and all(0 <= d <= 9 for d in digits)


def test_init_and_resume_through_the_cli(mnist_dir, tmp_path, capsys):
    store = f"file://{tmp_path}/store"
    init = tmp_path / "init.npz"
    rng = np.random.default_rng(0)
    save_model(init, [(rng.normal(0, 0.05, (32, 784)), np.zeros(32)), (rng.normal(0, 0.2, (16, 32)), np.zeros(16)),
                      (rng.normal(0, 0.2, (10, 16)), np.zeros(10))])
    base = [TINY, "--data", str(mnist_dir), "--quiet", "--store", store]
    common = [*base, "--init", str(init)]
    assert main(["train", *common, "--max-steps", "30", "--run-id", "a", "--save-model", str(tmp_path / "a.npz")]) == 0
    assert main(["train", *common, "--max-steps", "13", "--run-id", "b"]) == 0
    assert main(["train", *common, "--max-steps", "30", "--run-id", "b", "--resume"]) == 2
    assert main(["train", *base, "--max-steps", "30", "--run-id", "b", "--resume",
                 "--save-model", str(tmp_path / "b.npz")]) == 0
    for (wa, ba), (wb, bb) in zip(load_model(tmp_path / "a.npz"), load_model(tmp_path / "b.npz")):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)
    capsys.readouterr()
    assert main(["train", *common, "--max-steps", "30", "--run-id", "a"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["train", *base, "--run-id", "nope", "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", *base, "--max-steps", "30", "--run-id", "b", "--resume"]) == 1
    assert "already at step 30" in capsys.readouterr().err
    assert main(["train", TINY, "--resume"]) == 2


@pytest.mark.parametrize("extra, where", [
    (["--run-id", "a/b"], "--run-id"),
    (["--save-model", "/nonexistent/dir/m.npz"], "--save-model"),
    (["--metrics", "/nonexistent/dir/m.jsonl"], "--metrics"),
    (["--broker", "kafka://x"], "--broker: unknown URL scheme"),
    (["--store", "s3://bucket"], "--store: unknown URL scheme"),
])
def test_bad_train_arguments_exit_2_before_training(capsys, extra, where):
    assert main(["train", TINY, "--data", "/nonexistent", *extra]) == 2
    assert f"config error: {where}" in capsys.readouterr().err


def test_bad_model_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, W1=np.zeros((3, 4)))
    assert main(["predict", "--model", str(bad), str(bad)]) == 2
    assert "missing W1 or b1" in capsys.readouterr().err or "b1" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["train", TINY, "--data", str(tmp_path), "--max-steps", "1"]) == 2
    assert "train-images" in capsys.readouterr().err
