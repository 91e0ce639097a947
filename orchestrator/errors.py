"""Error tree of the orchestrator package."""

from __future__ import annotations

__all__ = [
    "OrchestratorError",
    "ConfigError",
    "DataError",
    "TrainingError",
    "NeuronLost",
    "ModelFileError",
]


class OrchestratorError(Exception):
    """Base of every orchestrator error."""


class ConfigError(OrchestratorError):
    """A network description is unreadable or invalid at a dotted YAML path."""

    def __init__(self, path: str, reason: str) -> None:
        """Record where (dotted YAML path, or "<file>") and why the config is wrong."""
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        """Render as "path: reason", the form users see on the command line."""
        return f"{self.path}: {self.reason}"


class DataError(OrchestratorError):
    """A dataset is missing or corrupt."""


class TrainingError(OrchestratorError):
    """A training run failed (a neuron died, a step timed out)."""


class NeuronLost(TrainingError):
    """A neuron died, restarted or went silent; the driver recovers by replaying from the last checkpoint."""


class ModelFileError(OrchestratorError):
    """A saved .npz model file is missing, malformed or mismatched."""
