"""Deployment targets: compose projects, the ECS plan and its AWS calls, and the status of a deployed run."""
