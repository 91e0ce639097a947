"""The progress bar and the metrics file of a training run.

The metrics file is JSON Lines, one record a line, each with `kind`, `run` and `time` (UTC, ISO 8601):
- `start`: the run's sizes, total steps and steps per epoch, and whether it resumes;
- `step`: `step` (1-based count of steps done), `epoch` (1-based), `loss` (this step's mean loss),
  `loss_avg` (the running average the console shows), `samples_per_s`;
- `epoch`: `epoch` (1-based), `step` (when it was measured), `test_accuracy`.
Steps and epochs are counted from 1 everywhere, as the console shows them.
"""
from __future__ import annotations

import datetime
import json
import sys
import time
from typing import TextIO

SMOOTHING = 0.9  # weight of the past in the running average of the loss


def running_average(previous: float | None, loss: float) -> float:
    """The next value of the loss's exponential running average (the console's and the chart's)."""
    return loss if previous is None else SMOOTHING * previous + (1 - SMOOTHING) * loss


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Prints a one-line bar (loss, samples/s, ETA) to a terminal, or a line every tenth elsewhere."""

    def __init__(self, total_steps: int, steps_per_epoch: int, *, run_id: str = "", quiet: bool = False,
                 stream: TextIO | None = None, metrics: TextIO | None = None) -> None:
        self.total, self.per_epoch, self.run_id = total_steps, steps_per_epoch, run_id
        self.quiet, self.metrics = quiet, metrics
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start: int | None = None  # the first step this process saw: a resumed run starts mid-way
        self.t0 = time.monotonic()
        self.t_first = self.t0  # when that first step was reported: the pace for the ETA is taken after it
        self.samples = 0
        self.loss: float | None = None
        self._last_draw = 0.0
        self._last_tenth = -1

    def _record(self, kind: str, **fields) -> None:
        if self.metrics is not None:
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
            self.metrics.write(json.dumps({"kind": kind, "run": self.run_id, "time": now, **fields}) + "\n")

    def begin(self, **fields) -> None:
        """Write the run's `start` record (`fields`: what describes it)."""
        self._record("start", total_steps=self.total, steps_per_epoch=self.per_epoch, **fields)
        if self.metrics is not None:
            self.metrics.flush()

    def eta(self, step: int) -> float | None:
        """Seconds left after 0-based step `step` at the pace since the first step, or None before a pace is known."""
        paced = step - (self.start if self.start is not None else step)  # steps since the first one
        elapsed = time.monotonic() - self.t_first
        return None if paced <= 0 or elapsed <= 0 else elapsed / paced * (self.total - step - 1)

    def step(self, step: int, loss: float, samples: int) -> None:
        """Record the loss of 0-based global step `step`."""
        if self.start is None:
            self.start, self.t_first = step, time.monotonic()
        self.samples += samples
        self.loss = running_average(self.loss, loss)
        rate = self.samples / max(time.monotonic() - self.t0, 1e-9)
        epoch = step // self.per_epoch + 1
        self._record("step", step=step + 1, epoch=epoch, loss=loss, loss_avg=self.loss, samples_per_s=round(rate, 1))
        if self.quiet:
            return
        span = max(self.total - self.start, 1)
        done = step + 1 - self.start
        now = time.monotonic()
        eta = self.eta(step)
        left = f"ETA {_clock(eta)}" if eta is not None and done < span else f"{_clock(now - self.t0)} elapsed"
        line = (f"step {step + 1}/{self.total} epoch {epoch} loss(avg) {self.loss:.4f} "
                f"{rate:,.0f} samples/s {left}")
        if self.tty and (now - self._last_draw > 0.1 or done == span):
            filled = int(30 * done / span)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {line} ")
            self.stream.flush()
            self._last_draw = now
        elif not self.tty and (10 * done // span) != self._last_tenth:
            self.stream.write(line + "\n")
            self._last_tenth = 10 * done // span

    def epoch(self, epoch: int, accuracy: float) -> None:
        """Record the test accuracy measured after 0-based `epoch` (or after the last step, if sooner)."""
        step = min((epoch + 1) * self.per_epoch, self.total)
        self._record("epoch", epoch=epoch + 1, step=step, test_accuracy=accuracy)
        if self.metrics is not None:
            self.metrics.flush()
        if not self.quiet:
            prefix = "\n" if self.tty else ""
            self.stream.write(f"{prefix}epoch {epoch + 1}: test accuracy {accuracy:.4f} (after step {step})\n")
            self.stream.flush()
