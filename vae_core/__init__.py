"""Latent Explorer's engine: VAEs, their objectives, data and training, with no GUI."""

from .config import ModelConfig, TrainConfig
from .errors import CheckpointError, ConfigError, DatasetError, TrainingError, VAEError

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "VAEError",
    "ConfigError",
    "DatasetError",
    "CheckpointError",
    "TrainingError",
]
