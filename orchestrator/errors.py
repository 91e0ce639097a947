"""Error tree of the orchestrator package."""

from __future__ import annotations

__all__ = [
    "OrchestratorError",
    "ConfigError",
    "ConfigErrors",
    "DataError",
    "TrainingError",
    "NeuronLost",
    "ModelFileError",
]


class OrchestratorError(Exception):
    """Base of every orchestrator error."""


class ConfigError(OrchestratorError):
    """A network description is unreadable or invalid at a dotted YAML path (or a command-line flag)."""

    def __init__(self, path: str, reason: str, *, file: str | None = None, line: int | None = None) -> None:
        """Record where (dotted YAML path, a --flag, or "" for the whole file) and why the config is wrong."""
        super().__init__(path, reason)
        self.path = path
        self.reason = reason
        self.file, self.line = file, line

    @property
    def problems(self) -> list[ConfigError]:
        """Every problem this error reports: just itself."""
        return [self]

    def where(self) -> str:
        """"FILE:LINE: " (or "FILE: "), when the config file is known."""
        if not self.file:
            return ""
        return f"{self.file}:{self.line}: " if self.line else f"{self.file}: "

    def __str__(self) -> str:
        """Render as "FILE:LINE: path: reason", the form users see on the command line."""
        return self.where() + (f"{self.path}: {self.reason}" if self.path else self.reason)


class ConfigErrors(ConfigError):
    """Several problems of one config, reported together (in the order of their lines)."""

    def __init__(self, problems: list[ConfigError]) -> None:
        """Collect `problems` (nested collections are flattened)."""
        flat = [p for problem in problems for p in problem.problems]
        super().__init__(flat[0].path, flat[0].reason, file=flat[0].file, line=flat[0].line)
        self._problems = flat

    @property
    def problems(self) -> list[ConfigError]:
        """Every problem, in order of their lines where known."""
        return sorted(self._problems, key=lambda p: (p.line is None, p.line or 0))

    def __str__(self) -> str:
        """A count, then one problem a line."""
        files = {p.file for p in self._problems if p.file}
        head = f"{files.pop()}: " if len(files) == 1 else ""
        return f"{head}{len(self._problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)


def raise_all(problems: list[ConfigError]) -> None:
    """Raise the problems found, if any: one as itself, several as ConfigErrors."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)


class DataError(OrchestratorError):
    """A dataset is missing or corrupt."""


class TrainingError(OrchestratorError):
    """A training run failed (a neuron died, a step timed out)."""


class NeuronLost(TrainingError):
    """A neuron died, restarted or went silent; the driver recovers by replaying from the last checkpoint."""


class ModelFileError(OrchestratorError):
    """A saved .npz model file is missing, malformed or mismatched."""
