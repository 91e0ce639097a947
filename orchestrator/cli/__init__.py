"""The command line `python -m orchestrator`: train, plan, evaluate, predict, deploy, teardown, status, scale."""
from orchestrator.cli.commands import main

__all__ = ["main"]
