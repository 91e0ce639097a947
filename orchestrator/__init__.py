"""Orchestrator: config, plan, deploy targets, training driver and CLI."""

__version__ = "0.1.0"  # the distribution's version: setup.cfg reads it from here
