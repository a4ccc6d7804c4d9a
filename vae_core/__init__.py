"""Latent Explorer's engine: VAEs, their objectives, data and training, with no GUI.

``import vae_core`` is cheap: the torch-backed names below are loaded on first
use, so a program can import the package without paying for torch up front.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ModelConfig, TrainConfig
from .errors import CheckpointError, ConfigError, DatasetError, VAEError

_LAZY = {
    "VAE": "model",
    "resolve_device": "model",
    "gaussian_kl": "objectives",
    "gaussian_kl_per_dim": "objectives",
    "elbo": "objectives",
    "ELBOOutput": "objectives",
    "iwae_log_likelihood": "objectives",
    "exact_linear_gaussian_log_likelihood": "objectives",
    "Dataset": "data",
    "DatasetSpec": "data",
    "load_dataset": "data",
    "Trainer": "training",
    "TrainControl": "training",
    "History": "training",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
}

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "VAEError",
    "ConfigError",
    "DatasetError",
    "CheckpointError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vae_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
