"""The training chart and the metrics file tell the truth about the run: its steps, its epochs, its accuracy."""
from __future__ import annotations

import io
import json
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from orchestrator.cli import main
from orchestrator.training.plot import chart, nice_ticks, training_svg
from orchestrator.training.progress import Progress, running_average
from tests.conftest import ROOT

TINY = str(ROOT / "examples" / "tiny.yaml")
SVG = "{http://www.w3.org/2000/svg}"


def _losses(n: int, start: int = 0) -> dict[int, float]:
    return {s: 2.3 / (1 + 0.05 * s) for s in range(start, start + n)}


def _texts(svg: str) -> list[str]:
    return ["".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text")]


def _inside_plot(svg: str) -> None:
    root = ET.fromstring(svg)
    frame = next(r for r in root.iter(f"{SVG}rect") if r.get("fill") == "none")
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    for line in root.iter(f"{SVG}polyline"):
        for point in line.get("points").split():
            x, y = map(float, point.split(","))
            assert x0 - 0.1 <= x <= x1 + 0.1 and y0 - 0.1 <= y <= y1 + 0.1, (point, (x0, y0, x1, y1))
    for dot in root.iter(f"{SVG}circle"):
        assert x0 - 0.1 <= float(dot.get("cx")) <= x1 + 0.1 and y0 - 0.1 <= float(dot.get("cy")) <= y1 + 0.1


def test_a_short_run_is_charted_over_the_steps_it_ran():
    c = chart(_losses(50), {0: 0.81}, steps_per_epoch=938, total_steps=50, title="t")
    assert c.x_range == (0, 50) and c.accuracy == ((50, 0.81),)  # measured after step 50, not 938
    svg = training_svg(c)
    texts = _texts(svg)
    assert not any("938" in t and "of" in t for t in texts)
    assert any("50 steps run" in t for t in texts)
    assert len(list(ET.fromstring(svg).iter(f"{SVG}circle"))) == 1  # a one-epoch run shows its accuracy
    assert "0.8100" in texts
    _inside_plot(svg)


def test_both_axes_have_labelled_ticks_that_cover_the_data():
    c = chart(_losses(3000), {0: 0.90, 1: 0.94, 2: 0.95}, steps_per_epoch=1000, total_steps=3000, title="t")
    texts = _texts(training_svg(c))
    numbers = [t for t in texts if re.fullmatch(r"[\d,.]+", t)]
    assert {"0.0", "0.5", "1.0", "1.5", "2.0", "2.5"} <= set(numbers)  # loss axis up to above 2.3
    assert {"0", "1,000", "2,000", "3,000"} <= set(numbers)  # steps
    assert {"0.80", "0.90", "1.00"} <= set(numbers)  # accuracy
    assert "epoch 2" in texts and "epoch 3" in texts
    _inside_plot(training_svg(c))


def test_a_resumed_run_starts_where_it_resumed():
    c = chart(_losses(100, start=400), {0: 0.9}, steps_per_epoch=500, total_steps=500, title="t")
    assert c.x_range == (400, 500)
    _inside_plot(training_svg(c))


@pytest.mark.parametrize("low, high", [(0, 2.3), (0, 1), (0, 938), (400, 500), (0.8, 1.0), (0, 0.004)])
def test_ticks_are_round_and_cover_the_range(low, high):
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high and 3 <= len(ticks) <= 12
    gaps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(gaps) == 1


def test_png_chart_through_matplotlib(mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    assert main(["train", TINY, "--data", str(mnist_dir), "--max-steps", "20", "--plot", str(path), "--quiet"]) == 0
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_png_without_matplotlib_is_refused_before_training(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["train", TINY, "--data", "/nonexistent", "--plot", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "pip install matplotlib" in err and ".svg needs nothing" in err
    assert main(["train", TINY, "--data", "/nonexistent", "--plot", str(tmp_path / "c.jpg")]) == 2
    assert ".svg or .png" in capsys.readouterr().err


def test_metrics_records_are_consistent_and_documented(mnist_dir, tmp_path, capsys):
    metrics = tmp_path / "m.jsonl"
    args = ["train", TINY, "--data", str(mnist_dir), "--max-steps", "30", "--metrics", str(metrics),
            "--quiet", "--store", f"file://{tmp_path}/store", "--run-id", "m1"]
    assert main(args) == 0
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["start"] + ["step"] * 30 + ["epoch"]
    assert all(x["run"] == "m1" and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", x["time"]) for x in lines)
    steps = [x for x in lines if x["kind"] == "step"]
    assert [x["step"] for x in steps] == list(range(1, 31)) and {x["epoch"] for x in steps} == {1}
    assert lines[-1]["epoch"] == 1 and lines[-1]["step"] == 30
    average = None
    for x in steps:  # loss_avg is the console's running average of the raw losses
        average = running_average(average, x["loss"])
        assert x["loss_avg"] == pytest.approx(average)
    # a new run starts the file afresh instead of appending to another run's records
    assert main([*args[:-2], "--run-id", "m2"]) == 0
    assert {json.loads(x)["run"] for x in metrics.read_text().splitlines()} == {"m2"}


def test_a_resumed_run_appends_to_its_metrics(mnist_dir, tmp_path):
    metrics, store = tmp_path / "m.jsonl", f"file://{tmp_path}/store"
    base = ["train", TINY, "--data", str(mnist_dir), "--metrics", str(metrics), "--quiet", "--store", store,
            "--run-id", "r1"]
    assert main([*base, "--max-steps", "20"]) == 0
    assert main([*base, "--max-steps", "40", "--resume"]) == 0
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    starts = [x for x in lines if x["kind"] == "start"]
    assert [s["resume"] for s in starts] == [False, True]
    assert [x["step"] for x in lines if x["kind"] == "step"][-1] == 40


def test_progress_shows_an_eta():
    stream = io.StringIO()
    progress = Progress(100, 50, stream=stream)
    for step in range(100):
        progress.step(step, 1.0, 10)
    lines = stream.getvalue().splitlines()
    assert any(re.search(r"ETA \d+:\d\d", line) for line in lines[:-1])
    assert "elapsed" in lines[-1] and "epoch 2" in lines[-1] and "loss(avg) 1.0000" in lines[-1]
