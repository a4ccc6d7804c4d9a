"""Loading and saving: datasets and checkpoints read in the background, checkpoints and codes written.

``Loader`` reads one thing at a time on the task pool: a new request
replaces the one on its way (whose result, should it still arrive, is
dropped), and ``cancel`` drops it outright.  What it hands over is ready to
use: a loaded checkpoint comes with its ``Encoder`` and ``Decoder`` already
built and its dataset already read (or the reason it could not be).

The writers run where they are called and raise ``VAEError`` or ``OSError``
with a message meant for the user.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PySide6 import QtCore

from ..display import shape_text
from .map import PROGRESS_INTERVAL_S, every
from ..worker import Reply, TaskRunner, Task, Tagged

if TYPE_CHECKING:
    from vae_core.checkpoint import Checkpoint
    from vae_core.data import Dataset
    from vae_core.inference import Decoder, Encoder
    from vae_core.training import Trainer

Signal = QtCore.Signal
Slot = QtCore.Slot


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read from ``path``, with its models and (when it could be read) its dataset."""

    path: str
    checkpoint: "Checkpoint"
    encoder: "Encoder"
    decoder: "Decoder"
    dataset: "Dataset | None"
    dataset_error: str  # why ``dataset`` is None; "" when it is not


def read_dataset(spec: dict[str, Any], progress: Callable[[float, str], None] | None = None) -> "Dataset":
    """The dataset a panel's settings describe (None values are left to the engine's defaults).

    ``progress(fraction, text)`` is called from the loading thread while a
    large dataset is decoded, generated or converted.
    """
    from vae_core.data import load_dataset

    return load_dataset({k: v for k, v in spec.items() if v is not None}, progress=progress)


def read_checkpoint(path: str) -> LoadedCheckpoint:
    """A checkpoint, its models and its own dataset, checked to fit the model's image size."""
    from vae_core.checkpoint import load_checkpoint
    from vae_core.data import load_dataset
    from vae_core.errors import DatasetError
    from vae_core.inference import load_models

    ckpt = load_checkpoint(path)
    encoder, decoder = load_models(ckpt)
    ds, error = None, ""
    try:
        ds = load_dataset(ckpt.dataset_spec)
        if tuple(ds.input_shape) != tuple(ckpt.model_config.input_shape):
            error = (f"the dataset {ds.name} now has images of {shape_text(ds.input_shape)}, "
                     f"the model expects {shape_text(ckpt.model_config.input_shape)}")
            ds = None
    except DatasetError as exc:
        error = str(exc)
    return LoadedCheckpoint(path, ckpt, encoder, decoder, ds, error)


def write_checkpoint(trainer: "Trainer", path: str) -> None:
    """Save the trainer's complete state to ``path`` atomically (raises VAEError or OSError)."""
    from vae_core.checkpoint import save_checkpoint

    save_checkpoint(trainer, path)


def copy_checkpoint(source: str, path: str) -> None:
    """Copy the checkpoint file ``source`` to ``path`` atomically (raises OSError); nothing to do when they are one file.

    The copy goes to a temporary file next to ``path`` first: a failed copy
    leaves any file at ``path`` as it was.
    """
    if os.path.exists(path) and os.path.samefile(source, path):
        return
    from vae_core.files import atomic_file

    with atomic_file(path) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


def write_latents(path: str, latents: np.ndarray, logvar: np.ndarray | None, labels: np.ndarray | None,
                  label_names: list[str] | None, xy: np.ndarray | None) -> int:
    """Write one CSV row per example (index, label, mu, sigma, map position); returns the rows written."""
    from vae_core.export import write_latents_csv

    if xy is not None and len(xy) != len(latents):
        xy = None
    if labels is not None and len(labels) != len(latents):
        labels = None
    return write_latents_csv(path, latents, logvar=logvar, labels=labels, label_names=label_names, xy=xy)


class Loader(QtCore.QObject):
    """Reads datasets and checkpoints on the task pool, one request at a time, the newest winning."""

    datasetLoaded = Signal(object, object)  # Dataset, the request's spec
    checkpointLoaded = Signal(object)  # LoadedCheckpoint
    failed = Signal(str)  # the newest request could not be read: why
    progress = Signal(float, str)  # how far the newest dataset request is: fraction, what it is doing

    def __init__(self, tasks: TaskRunner, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._tasks = tasks
        self._token = 0  # identifies the newest request; results of older ones are dropped
        self._task: Task | None = None
        self._spec: dict[str, Any] = {}
        self._kind: str | None = None

    @property
    def busy(self) -> bool:
        """A request is on its way."""
        return self._task is not None

    @property
    def loading(self) -> str | None:
        """What is on its way: "dataset", "checkpoint", or None."""
        return self._kind if self._task is not None else None

    def load_dataset(self, spec: dict[str, Any]) -> None:
        """Read the dataset ``spec`` describes; ``datasetLoaded`` or ``failed`` follows."""
        request = dict(spec)
        self._start(lambda report: read_dataset(request, every(report, PROGRESS_INTERVAL_S)), request, "dataset")

    def load_checkpoint(self, path: str) -> None:
        """Read the checkpoint at ``path``; ``checkpointLoaded`` or ``failed`` follows."""
        self._start(lambda report: read_checkpoint(path), {"source": path}, "checkpoint")

    def cancel(self) -> bool:
        """Drop the request on its way; True when there was one."""
        if self._task is None:
            return False
        self._task.cancel()
        self._task = None
        self._token += 1
        return True

    def _start(self, read: Callable[[Callable[[float, str], None]], Any], spec: dict[str, Any], kind: str) -> None:
        self.cancel()
        self._spec = spec
        self._kind = kind
        self._task = self._tasks.start(Tagged(self._token, lambda progress, cancelled: read(progress)),
                                       self._on_done, self._on_failed, self._on_progress)

    @Slot(float, str)
    def _on_progress(self, fraction: float, text: str) -> None:
        task, sender = self._task, self.sender()
        if task is not None and (sender is None or sender is task.signals):  # not a replaced request's
            self.progress.emit(fraction, text)

    @Slot(object)
    def _on_done(self, reply: Reply) -> None:
        if reply.token != self._token or self._task is None:
            return  # replaced or cancelled meanwhile
        self._task = None
        if reply.error is not None:
            self.failed.emit(reply.error)
        elif isinstance(reply.value, LoadedCheckpoint):
            self.checkpointLoaded.emit(reply.value)
        else:
            self.datasetLoaded.emit(reply.value, self._spec)

    @Slot(str)
    def _on_failed(self, text: str) -> None:
        # A ``Tagged`` job replies with its error; only a failure outside the job ends up here.
        self._task = None
        self.failed.emit(text)
