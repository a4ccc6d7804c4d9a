"""The training loop as a generator, and a small thread-safe control object.

A GUI runs ``Trainer.run()`` in a worker thread and forwards the events it
yields; another thread steers it through a ``TrainControl`` (pause, resume,
stop, change beta / learning rate / warm-up / free bits).  Everything an event
carries is a Python number or a fresh numpy array, never a live tensor.

Modules: ``control`` (TrainControl, validate_settings), ``events``,
``history`` (History), ``evaluate`` (evaluate_model, encode_dataset) and
``trainer`` (Trainer, ModelSnapshot, seeds and generators).
"""

from __future__ import annotations

from .control import TrainControl, validate_settings
from .evaluate import encode_dataset, evaluate_model, images_tensor
from .events import BatchEvent, ChangeEvent, EpochEvent, StatusEvent
from .history import STEP_FIELDS, History
from .trainer import ModelSnapshot, Trainer, TrainerState, build_model, make_generator

__all__ = [
    "STEP_FIELDS",
    "BatchEvent",
    "ChangeEvent",
    "EpochEvent",
    "History",
    "ModelSnapshot",
    "StatusEvent",
    "TrainControl",
    "Trainer",
    "TrainerState",
    "build_model",
    "encode_dataset",
    "evaluate_model",
    "images_tensor",
    "make_generator",
    "validate_settings",
]
