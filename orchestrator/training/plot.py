"""A loss and accuracy chart of a training run as a self-contained SVG file (no plotting library needed)."""
from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 720, 360, 48


def _polyline(points: list[tuple[float, float]], xmax: float, ymin: float, ymax: float, colour: str) -> str:
    span = (ymax - ymin) or 1.0
    coords = " ".join(f"{PAD + (WIDTH - 2 * PAD) * x / max(xmax, 1):.1f},"
                      f"{HEIGHT - PAD - (HEIGHT - 2 * PAD) * (y - ymin) / span:.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'


def training_svg(losses: dict[int, float], accuracies: dict[int, float], steps_per_epoch: int, title: str) -> str:
    """SVG text: per-step loss (blue, left scale) and per-epoch test accuracy (orange, right scale 0-1)."""
    steps = sorted(losses)
    xmax = max([steps[-1] + 1 if steps else 1] + [(e + 1) * steps_per_epoch for e in accuracies])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{PAD}" y="20" font-size="14">{escape(title)}</text>',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="black"/>',
             f'<text x="{WIDTH // 2}" y="{HEIGHT - 12}" text-anchor="middle">step (of {xmax})</text>']
    if steps:
        top = max(losses.values())
        parts.append(_polyline([(s + 1, losses[s]) for s in steps], xmax, 0.0, top, "#1f77b4"))
        parts.append(f'<text x="{PAD}" y="{PAD - 6}" fill="#1f77b4">loss (0 to {top:.3g})</text>')
    if accuracies:
        pts = [((e + 1) * steps_per_epoch, a) for e, a in sorted(accuracies.items())]
        parts.append(_polyline(pts, xmax, 0.0, 1.0, "#ff7f0e"))
        last = pts[-1][1]
        parts.append(f'<text x="{WIDTH - PAD}" y="{PAD - 6}" fill="#ff7f0e" text-anchor="end">'
                     f'test accuracy (0 to 1; last {last:.4f})</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
