"""Orchestrator: config, plan, deploy targets, training driver and CLI."""
