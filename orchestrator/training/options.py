"""The driver's knobs that are not part of the network's mathematics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from orchestrator.config.schema import MAX_NEURONS


@dataclass
class DriverOptions:
    """Knobs of the driver that are not part of the network's mathematics."""

    checkpoint_every: int = 100
    window: int = 2  # training steps in flight ahead of the last loss received
    stall_timeout: float = 120.0  # seconds without any message before the run is declared stuck
    max_recoveries: int = 50  # new generations after lost neurons before the run gives up
    keep_checkpoints: int = 2
    max_neurons: int = MAX_NEURONS  # a scale request for more neurons than this in all is refused
    on_step: Callable[[int, float, int], None] | None = None  # (step, loss, samples)
    on_epoch: Callable[[int, float], None] | None = None  # (epoch, test accuracy)
