"""The loss and accuracy chart of a training run: a self-contained SVG, or a PNG through matplotlib (optional).

Both draw the same `Chart`: the per-step loss (raw, and the running average the console shows) on the
left axis, the test accuracy measured after each epoch on the right one, epoch boundaries, and an x axis
that spans the steps actually run.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from html import escape

from orchestrator.errors import ConfigError
from orchestrator.training.progress import running_average

WIDTH, HEIGHT = 800, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 70, 56, 60
LOSS, AVERAGE, ACCURACY = "#9ecae1", "#1f5f9e", "#e6550d"
FORMATS = (".svg", ".png")


@dataclass(frozen=True)
class Chart:
    """What the chart shows, in data units: x is the number of steps done."""

    title: str
    loss: tuple[tuple[int, float], ...]  # (steps done, loss of that step)
    average: tuple[tuple[int, float], ...]  # (steps done, running average)
    accuracy: tuple[tuple[int, float], ...]  # (steps done when measured, test accuracy)
    epochs: tuple[int, ...]  # steps done at each epoch boundary inside the range
    x_range: tuple[int, int]
    loss_range: tuple[float, float]
    accuracy_range: tuple[float, float]
    steps_per_epoch: int
    total_steps: int


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) from at most `low` to at least `high`."""
    if high <= low:
        high = low + 1
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _labels(ticks: list[float]) -> list[str]:
    """Tick labels with as many decimals as the spacing needs, the same for all."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return [f"{t:,.{decimals}f}" for t in ticks]


def chart(losses: dict[int, float], accuracies: dict[int, float], steps_per_epoch: int, total_steps: int,
          title: str) -> Chart:
    """The chart of a run from its per-step losses (0-based step -> loss) and per-epoch accuracies (0-based)."""
    steps = sorted(losses)
    loss = tuple((s + 1, losses[s]) for s in steps)
    average, avg = [], None
    for x, value in loss:
        avg = running_average(avg, value)
        average.append((x, avg))
    accuracy = tuple((min((e + 1) * steps_per_epoch, total_steps), a) for e, a in sorted(accuracies.items()))
    xs = [x for x, _ in loss] + [x for x, _ in accuracy]
    low = (steps[0] if steps else 0)
    high = max(xs) if xs else 1
    high = max(high, low + 1)
    epochs = tuple(e * steps_per_epoch for e in range(1, high // steps_per_epoch + 1) if low < e * steps_per_epoch < high)
    top = max((v for _, v in loss), default=1.0)
    loss_ticks = nice_ticks(0.0, top if top > 0 else 1.0)
    lowest = min((a for _, a in accuracy), default=0.0)
    # accuracy near 1 would be a flat line on a 0-1 axis: start the axis a tenth below the lowest point
    acc_low = max(0.0, math.floor(lowest * 10 - 1) / 10) if accuracy else 0.0
    return Chart(title, loss, tuple(average), accuracy, epochs, (low, high), (0.0, loss_ticks[-1]),
                 (acc_low, 1.0), steps_per_epoch, total_steps)


def training_svg(c: Chart) -> str:
    """The chart as SVG text."""
    (x0, x1), (l0, l1), (a0, a1) = c.x_range, c.loss_range, c.accuracy_range
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * (x - x0) / (x1 - x0)

    def py(y: float, low: float, high: float) -> float:
        return TOP + plot_h * (1 - (y - low) / ((high - low) or 1.0))

    def line(points, low, high, colour, width) -> str:
        coords = " ".join(f"{px(x):.1f},{py(y, low, high):.1f}" for x, y in points)
        return f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{coords}"/>'

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{escape(c.title)}</text>']
    for x in c.epochs:  # epoch boundaries, each labelled with the epoch that starts there
        out.append(f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_h}" stroke="#bbb" '
                   f'stroke-dasharray="4 3"/>')
        if len(c.epochs) <= 20:
            out.append(f'<text x="{px(x) + 4:.1f}" y="{TOP + 14}" fill="#888" font-size="11">'
                       f'epoch {x // c.steps_per_epoch + 1}</text>')
    ticks = nice_ticks(l0, l1)
    for t, text in zip(ticks, _labels(ticks)):  # loss axis (left) with a light grid
        y = py(t, l0, l1)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<line x1="{LEFT - 5}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" stroke="black"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{AVERAGE}">{text}</text>')
    ticks = nice_ticks(x0, x1, 8)
    for t, text in zip(ticks, _labels(ticks)):  # step axis
        if x0 <= t <= x1:
            x = px(t)
            out.append(f'<line x1="{x:.1f}" y1="{TOP + plot_h}" x2="{x:.1f}" y2="{TOP + plot_h + 5}" stroke="black"/>')
            out.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{text}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>')
    epochs = f", {c.steps_per_epoch} per epoch" if c.steps_per_epoch < c.total_steps else ""
    out.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 16}" text-anchor="middle">'
               f'step ({x1 - x0} steps run{epochs})</text>')
    out.append(f'<text transform="translate(18 {TOP + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle" '
               f'fill="{AVERAGE}">training loss (cross-entropy)</text>')
    if c.loss:
        if len(c.loss) > 1:
            out.append(line(c.loss, l0, l1, LOSS, 1))
            out.append(line(c.average, l0, l1, AVERAGE, 2))
        else:
            x, y = c.loss[0]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y, l0, l1):.1f}" r="4" fill="{AVERAGE}"/>')
    if c.accuracy:
        ticks = nice_ticks(a0, a1, 6)
        for t, text in zip(ticks, _labels(ticks)):  # accuracy axis (right)
            if a0 <= t <= a1:
                y = py(t, a0, a1)
                out.append(f'<line x1="{LEFT + plot_w}" y1="{y:.1f}" x2="{LEFT + plot_w + 5}" y2="{y:.1f}" stroke="black"/>')
                out.append(f'<text x="{LEFT + plot_w + 8}" y="{y + 4:.1f}" fill="{ACCURACY}">{text}</text>')
        out.append(f'<text transform="translate({WIDTH - 16} {TOP + plot_h / 2:.0f}) rotate(90)" '
                   f'text-anchor="middle" fill="{ACCURACY}">test accuracy</text>')
        if len(c.accuracy) > 1:
            out.append(line(c.accuracy, a0, a1, ACCURACY, 2))
        for x, a in c.accuracy:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(a, a0, a1):.1f}" r="4" fill="{ACCURACY}"/>')
        x, a = c.accuracy[-1]
        out.append(f'<text x="{px(x) - 6:.1f}" y="{py(a, a0, a1) - 8:.1f}" text-anchor="end" fill="{ACCURACY}" '
                   f'font-weight="bold" stroke="white" stroke-width="3" paint-order="stroke">{a:.4f}</text>')
    legend = [(LOSS, "loss of each step"), (AVERAGE, "running average"), (ACCURACY, "test accuracy after each epoch")]
    for i, (colour, text) in enumerate(legend[:2] + (legend[2:] if c.accuracy else [])):
        x = LEFT + 200 * i
        out.append(f'<rect x="{x}" y="34" width="14" height="4" fill="{colour}"/>')
        out.append(f'<text x="{x + 20}" y="40">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def training_png(c: Chart, path: str) -> None:
    """Write the chart as a PNG through matplotlib (the `plot` extra)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot

    fig, left = pyplot.subplots(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    try:
        left.set_title(c.title, loc="left", fontsize=11, fontweight="bold")
        for x in c.epochs:
            left.axvline(x, color="#bbb", linestyle="--", linewidth=0.8)
            if len(c.epochs) <= 20:
                left.annotate(f"epoch {x // c.steps_per_epoch + 1}", (x, 1), xycoords=("data", "axes fraction"),
                              xytext=(4, -14), textcoords="offset points", color="#888", fontsize=8)
        if c.loss:
            left.plot(*zip(*c.loss), color=LOSS, linewidth=1, label="loss of each step")
            left.plot(*zip(*c.average), color=AVERAGE, linewidth=2, label="running average",
                      marker="o" if len(c.loss) == 1 else None)
        left.set_xlim(*c.x_range)
        left.set_ylim(*c.loss_range)
        epochs = f", {c.steps_per_epoch} per epoch" if c.steps_per_epoch < c.total_steps else ""
        left.set_xlabel(f"step ({c.x_range[1] - c.x_range[0]} steps run{epochs})")
        left.set_ylabel("training loss (cross-entropy)", color=AVERAGE)
        left.grid(axis="y", color="#eee")
        handles, labels = left.get_legend_handles_labels()
        if c.accuracy:
            right = left.twinx()
            right.plot(*zip(*c.accuracy), color=ACCURACY, linewidth=2, marker="o", label="test accuracy after each epoch")
            right.set_ylim(*c.accuracy_range)
            right.set_ylabel("test accuracy", color=ACCURACY)
            x, a = c.accuracy[-1]
            right.annotate(f"{a:.4f}", (x, a), textcoords="offset points", xytext=(-6, 6), ha="right",
                           color=ACCURACY, fontweight="bold")
            more, names = right.get_legend_handles_labels()
            handles, labels = handles + more, labels + names
        left.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=9,
                    frameon=False)
        fig.tight_layout()
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        pyplot.close(fig)


def check_plot_path(path: str) -> None:
    """ConfigError unless `path` names a chart this module can write (.svg, or .png with matplotlib)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ConfigError("--plot", f"{path}: the chart is written as .svg or .png, not {ext or 'a file without extension'}")
    if ext == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot", "a .png chart needs matplotlib: pip install matplotlib (or, in the "
                                        "Cuttlefish checkout, pip install -e '.[plot]'); .svg needs nothing") from None


def write_chart(c: Chart, path: str) -> None:
    """Write the chart to `path`, as PNG or SVG by its extension."""
    if path.lower().endswith(".png"):
        training_png(c, path)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(training_svg(c))
