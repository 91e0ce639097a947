"""The YAML config: parsing and validation into frozen dataclasses, and the plan it splits into."""
from orchestrator.config.loader import config_from_mapping, load_config, parse_config
from orchestrator.config.schema import (
    ACTIVATIONS,
    DTYPES,
    OPTIMIZERS,
    Config,
    DeployConfig,
    EcsConfig,
    NetworkConfig,
    TrainingConfig,
)

__all__ = [
    "DTYPES", "ACTIVATIONS", "OPTIMIZERS", "NetworkConfig", "TrainingConfig", "EcsConfig", "DeployConfig",
    "Config", "load_config", "parse_config", "config_from_mapping",
]
