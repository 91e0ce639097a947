"""Deployment targets: the ECS plan and its AWS calls, and the status of a deployed run."""
