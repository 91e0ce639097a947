"""The progress bar and the metrics file of a training run."""
from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class Progress:
    """Prints a one-line bar (loss, samples/s) to a terminal, or a line every few percent elsewhere."""

    def __init__(self, total_steps: int, start: int, steps_per_epoch: int, *, quiet: bool = False,
                 stream: TextIO | None = None, metrics: TextIO | None = None) -> None:
        self.total, self.start, self.per_epoch = total_steps, start, steps_per_epoch
        self.quiet, self.metrics = quiet, metrics
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.samples = 0
        self.loss: float | None = None
        self._last_draw = 0.0
        self._last_pct = -1

    def step(self, step: int, loss: float, samples: int) -> None:
        """Record the loss of global step `step`."""
        self.samples += samples
        self.loss = loss if self.loss is None else 0.9 * self.loss + 0.1 * loss
        rate = self.samples / max(time.monotonic() - self.t0, 1e-9)
        if self.metrics is not None:
            self.metrics.write(json.dumps({"step": step + 1, "epoch": step // self.per_epoch, "loss": loss,
                                           "samples_per_s": round(rate, 1)}) + "\n")
        if self.quiet:
            return
        done = step + 1 - self.start
        span = max(self.total - self.start, 1)
        now = time.monotonic()
        pct = int(100 * done / span)
        if self.tty and (now - self._last_draw > 0.1 or done == span):
            filled = int(30 * done / span)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] step {step + 1}/{self.total} "
                              f"epoch {step // self.per_epoch + 1} loss {self.loss:.4f} {rate:,.0f} samples/s ")
            self.stream.flush()
            self._last_draw = now
        elif not self.tty and pct // 10 != self._last_pct // 10:
            self.stream.write(f"step {step + 1}/{self.total} loss {self.loss:.4f} {rate:,.0f} samples/s\n")
            self._last_pct = pct

    def epoch(self, epoch: int, accuracy: float) -> None:
        """Record the test accuracy after `epoch`."""
        if self.metrics is not None:
            self.metrics.write(json.dumps({"epoch": epoch + 1, "test_accuracy": accuracy}) + "\n")
            self.metrics.flush()
        if not self.quiet:
            prefix = "\n" if self.tty else ""
            self.stream.write(f"{prefix}epoch {epoch + 1}: test accuracy {accuracy:.4f}\n")
            self.stream.flush()
