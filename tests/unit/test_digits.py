"""Self-describing model files, and pictures of any size and polarity brought to MNIST's form for predict."""
from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.data.digits import mnist_form
from orchestrator.data.model import read_meta, save_model
from tests.conftest import ROOT
from tests.unit.test_data import encode_png, png_from_array

TINY = ROOT / "examples" / "tiny.yaml"


@pytest.fixture(scope="module")
def trained(mnist_dir, tmp_path_factory):
    """(model path, sigmoid model path) trained briefly on tiny.yaml."""
    folder = tmp_path_factory.mktemp("models")
    relu, sigmoid = folder / "relu.npz", folder / "sigmoid.npz"
    assert main(["train", str(TINY), "--data", str(mnist_dir), "--max-steps", "400", "--save-model", str(relu),
                 "--quiet"]) == 0
    text = TINY.read_text().replace("activation: relu", "activation: sigmoid").replace("learning_rate: 0.05",
                                                                                      "learning_rate: 0.5")
    (folder / "sig.yaml").write_text(text)
    assert main(["train", str(folder / "sig.yaml"), "--data", str(mnist_dir), "--max-steps", "400",
                 "--save-model", str(sigmoid), "--quiet"]) == 0
    return relu, sigmoid


def _accuracy(capsys, model, files, labels) -> float:
    assert main(["predict", "--model", str(model), *map(str, files), "--quiet"]) == 0
    digits = np.array(capsys.readouterr().out.split(), dtype=int)
    return float((digits == labels).mean())


def test_model_file_describes_itself_as_json_text(trained):
    relu, sigmoid = trained
    with zipfile.ZipFile(relu) as z:
        assert "meta.npy" in z.namelist()
    with np.load(relu, allow_pickle=False) as npz:  # no pickle needed to read anything in it
        raw = npz["meta"]
    assert raw.dtype.kind == "U"
    meta = json.loads(str(raw))
    assert meta == read_meta(relu)
    assert meta["sizes"] == [784, 32, 16, 10] and meta["activation"] == "relu" and meta["dtype"] == "float32"
    assert meta["classes"] == list(range(10)) and meta["config"]["values"]["training"]["seed"] == 1
    assert meta["steps"] == 400 and 0 < meta["test_accuracy"] <= 1
    assert read_meta(sigmoid)["activation"] == "sigmoid"


def test_no_url_or_run_id_in_the_model_file(tmp_path, mnist_dir):
    model = tmp_path / "m.npz"
    assert main(["train", str(TINY), "--data", str(mnist_dir), "--max-steps", "2", "--save-model", str(model),
                 "--quiet", "--store", f"file://{tmp_path}/s"]) == 0
    meta = read_meta(model)
    assert "paramstore" not in meta["config"]["values"] and "run" not in meta
    assert str(tmp_path / "s") not in json.dumps(meta)
    from orchestrator.cli.commands import _model_meta
    from orchestrator.config import load_config
    config = load_config(TINY).replace(broker="amqp://cf:s3cret@host:5672/%2F", paramstore="redis://:s3cret@h:6379/0")
    assert "s3cret" not in json.dumps(_model_meta(config, str(TINY)))


def test_a_config_that_contradicts_the_model_is_refused(trained, capsys):
    _, sigmoid = trained
    assert main(["evaluate", str(TINY), "--model", str(sigmoid)]) == 2  # tiny.yaml says relu
    assert "trained with sigmoid, not relu" in capsys.readouterr().err
    assert main(["predict", "--model", str(sigmoid), "--activation", "relu", str(TINY)]) == 2
    assert "trained with sigmoid, not relu" in capsys.readouterr().err


def test_evaluate_without_a_config(trained, mnist_dir, capsys):
    relu, sigmoid = trained
    for model in (relu, sigmoid):
        assert main(["evaluate", "--model", str(model), "--data", str(mnist_dir)]) == 0
        assert float(capsys.readouterr().out.split(": ")[1]) > 0.8


def test_sigmoid_model_predicts_as_well_as_it_evaluates(trained, mnist, tmp_path, capsys, mnist_dir):
    _, sigmoid = trained
    _, test = mnist
    np.save(tmp_path / "x.npy", test.images[:500].reshape(-1, 28, 28))
    assert main(["evaluate", "--model", str(sigmoid), "--data", str(mnist_dir)]) == 0
    evaluated = float(capsys.readouterr().out.split(": ")[1])
    assert _accuracy(capsys, sigmoid, [tmp_path / "x.npy"], test.labels[:500]) > evaluated - 0.05


def test_an_old_model_file_asks_for_the_activation(tmp_path, capsys):
    rng = np.random.default_rng(0)
    save_model(tmp_path / "old.npz", [(rng.normal(size=(10, 784)).astype(np.float32), np.zeros(10, np.float32))])
    np.save(tmp_path / "x.npy", np.zeros((28, 28), np.uint8))
    assert main(["predict", "--model", str(tmp_path / "old.npz"), str(tmp_path / "x.npy")]) == 2
    assert "does not record its activation" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "old.npz"), "--activation", "tanh", str(tmp_path / "x.npy")]) == 0


def test_mnist_images_are_used_as_they_are(mnist):
    _, test = mnist
    for image in test.images[:300]:
        out, notes = mnist_form(image.reshape(28, 28))
        np.testing.assert_array_equal(out.reshape(-1), image)
        assert notes == []


def test_inverted_test_images_predict_as_the_originals(trained, mnist, tmp_path, capsys):
    relu, _ = trained
    _, test = mnist
    images, labels = test.images[:1000].reshape(-1, 28, 28), test.labels[:1000]
    np.save(tmp_path / "orig.npy", images)
    np.save(tmp_path / "inv.npy", 255 - images)
    original = _accuracy(capsys, relu, [tmp_path / "orig.npy"], labels)
    assert original > 0.85
    assert _accuracy(capsys, relu, [tmp_path / "inv.npy"], labels) == original


def _drawn(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit as someone might have drawn it: dark on white, larger, off-centre on a canvas not square."""
    factor = int(rng.integers(2, 9))
    big = np.kron(255 - image.reshape(28, 28).astype(float), np.ones((factor, factor)))
    canvas = np.full((big.shape[0] + int(rng.integers(10, 80)), big.shape[1] + int(rng.integers(10, 80))), 255.0)
    top, left = int(rng.integers(0, canvas.shape[0] - big.shape[0])), int(rng.integers(0, canvas.shape[1] - big.shape[1]))
    canvas[top:top + big.shape[0], left:left + big.shape[1]] = big
    return canvas


def test_drawn_pictures_come_back_close_to_mnist_form(mnist):
    _, test = mnist
    rng = np.random.default_rng(5)
    likeness = []
    for image in test.images[:100]:
        out, notes = mnist_form(_drawn(image, rng))
        assert any("inverted" in n for n in notes) and any("centred by mass" in n for n in notes)
        likeness.append(np.corrcoef(out.reshape(-1).astype(float), image.astype(float))[0, 1])
        ys, xs = np.nonzero(out)
        assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 20
    # the same digit, where MNIST put it: nearly always the very image, never far from it
    assert np.median(likeness) > 0.99 and min(likeness) > 0.8


def test_predict_reads_a_large_dark_on_light_png(trained, mnist, tmp_path, capsys):
    relu, _ = trained
    _, test = mnist
    rng = np.random.default_rng(1)
    files, labels = [], []
    for i in range(40):
        canvas = np.clip(np.rint(_drawn(test.images[i], rng)), 0, 255).astype(np.uint8)
        rgb = np.repeat(canvas[..., None], 3, axis=2)
        path = tmp_path / f"d{i}.png"
        path.write_bytes(png_from_array(rgb, 2))
        files.append(path)
        labels.append(test.labels[i])
    assert main(["predict", "--model", str(relu), str(files[0])]) == 0
    out = capsys.readouterr()
    assert "inverted (dark digit on a light background)" in out.err and "fitted into 20x20" in out.err
    assert _accuracy(capsys, relu, files, np.array(labels)) >= 0.8


def test_ink_on_a_transparent_background(mnist):
    _, test = mnist
    image = test.images[0].reshape(28, 28).astype(float)
    alpha = image / 255.0  # black ink whose coverage is the digit, on nothing
    out, notes = mnist_form(np.zeros((28, 28)), alpha)
    assert "transparent pixels shown as white" in notes
    assert np.corrcoef(out.reshape(-1).astype(float), image.reshape(-1))[0, 1] > 0.95


def test_jpeg_through_pillow_and_a_clear_error_without_it(trained, mnist, tmp_path, capsys, monkeypatch):
    image_module = pytest.importorskip("PIL.Image")
    relu, _ = trained
    _, test = mnist
    rgb = np.repeat(np.clip(_drawn(test.images[0], np.random.default_rng(2)), 0, 255).astype(np.uint8)[..., None], 3, 2)
    image_module.fromarray(rgb).save(tmp_path / "seven.jpg", quality=90)
    assert main(["predict", "--model", str(relu), str(tmp_path / "seven.jpg"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(test.labels[0])
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert main(["predict", "--model", str(relu), str(tmp_path / "seven.jpg")]) == 2
    assert "need Pillow: pip install Pillow" in capsys.readouterr().err


def test_blank_and_hostile_pictures(tmp_path, trained, capsys):
    relu, _ = trained
    out, notes = mnist_form(np.full((40, 30), 200.0))
    assert not out.any() and "no digit found" in notes[-1]
    (tmp_path / "huge.png").write_bytes(encode_png([b"\0"], 100_000, 100_000, 8, 0, 1))  # claims 10^10 pixels
    assert main(["predict", "--model", str(relu), str(tmp_path / "huge.png")]) == 2
    assert "image is 100000x100000; at most 16,777,216 pixels are read" in capsys.readouterr().err
