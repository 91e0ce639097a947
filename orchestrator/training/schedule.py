"""Which samples each global step trains on: a pure function of the data size, batch size, seed and epoch."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.data.mnist import epoch_order


@dataclass(frozen=True)
class Schedule:
    """Global step t is step t % steps_per_epoch of epoch t // steps_per_epoch (the last batch may be partial)."""

    samples: int
    batch_size: int
    epochs: int
    seed: int = 0
    shuffle: bool = True
    max_steps: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch, counting a final partial one."""
        return math.ceil(self.samples / self.batch_size)

    @property
    def total_steps(self) -> int:
        """Steps of the whole run (capped by max_steps)."""
        total = self.epochs * self.steps_per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    def epoch_of(self, step: int) -> int:
        """The epoch that global step `step` belongs to."""
        return step // self.steps_per_epoch

    def ends_epoch(self, step: int) -> bool:
        """Whether global step `step` is the last of its epoch."""
        return (step + 1) % self.steps_per_epoch == 0

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of `epoch`."""
        return epoch_order(self.samples, epoch, self.seed, self.shuffle)

    def indices(self, step: int, order: np.ndarray) -> np.ndarray:
        """Sample indices of global step `step`, given its epoch's `order`."""
        start = (step % self.steps_per_epoch) * self.batch_size
        return order[start:start + self.batch_size]
