"""The program's single source of truth: its state, the model, training, and what the views show.

``Session`` owns the dataset, the trainer (or a loaded checkpoint not yet
trained on), the latest latent codes, the ``Encoder`` and ``Decoder`` of the
latest weights and the latent map (``LatentMap``).  Widgets never see any of
this directly: the main window forwards their signals to the session's
methods and the session answers with signals carrying numpy arrays and plain
values.  Every transition (a new dataset, a new, restored or reset model, a
stop, a change of map) reaches every view through these signals.

Everything here runs in the GUI thread and does no torch work.  Training runs
in a ``TrainThread``; loading, encoding and map fits in the ``TaskRunner``;
decoding the point under the cursor and encoding the selected example in a
``LatestWins`` worker.  Their results arrive as queued signals on the slots
below.  All three are injected, so the session can be tested without threads.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PySide6 import QtCore

from vae_core.config import LIVE_SETTINGS, ModelConfig, TrainConfig
from vae_core.errors import ConfigError, VAEError

from ..display import (ROLLBACK_MARKER, active_dims, change_marker, decoded_for_display, example_title,
                       history_view, image_for_display, shape_text)
from ..run_folders import LATEST_CHECKPOINT, new_run_dir
from ..worker import LatestWins, Reply, TaskRunner, TrainThread, Tagged
from .io import LoadedCheckpoint, Loader, copy_checkpoint, write_checkpoint, write_latents
from .map import MAP_INTERVAL_S, LatentMap

if TYPE_CHECKING:
    from vae_core.checkpoint import Checkpoint
    from vae_core.data import Dataset
    from vae_core.inference import Decoder, Encoder
    from vae_core.projection import Projection
    from vae_core.training import BatchEvent, ChangeEvent, EpochEvent, History, StatusEvent, TrainControl, Trainer

Signal = QtCore.Signal
Slot = QtCore.Slot

# States a user can see.
EMPTY = "empty"  # no dataset yet
LOADING = "loading"  # loading a dataset or a checkpoint
IDLE = "idle"  # a dataset, no model
TRAINING = "training"
PAUSED = "paused"
TRAINED = "trained"  # a model exists, nothing running

#: The views of a new epoch (KL bars, status line, tools, the decoded point) are refreshed at most this often.
EPOCH_VIEW_INTERVAL_S = MAP_INTERVAL_S

TrainThreadFactory = Callable[..., TrainThread]

#: Samples per second and the time left are shown once this many batches,
#: taking this many seconds in all, have been timed (the first batches of a run
#: are slow: the model warms up).
RATE_MIN_BATCHES = 3
RATE_MIN_SPAN_S = 0.5
#: The rate is measured over the batches of about the last this many seconds.
RATE_WINDOW_S = 3.0


def trained_text(epochs: int, steps: int) -> str:
    """The progress read-out of a model that is not training: how far it has trained."""
    return f"Trained for {epochs:,} epoch{'s' if epochs != 1 else ''} ({steps:,} steps)"


class Throughput:
    """A run's speed from the wall times of its batches, once it means something.

    The time between two batches of the same epoch is a batch's time; the
    gap across an epoch's end is the held-out evaluation (and encoding) plus
    a batch.  A pause breaks the chain: the gap around it is not timed.
    """

    def __init__(self) -> None:
        self._dts: deque[float] = deque()  # batch times of about the last RATE_WINDOW_S seconds
        self._span = 0.0  # their sum
        self._last: tuple[int, float] | None = None  # (epoch, wall time) of the last batch
        self._epoch_end_s = 0.0  # the last epoch end's time beyond one batch

    def reset(self) -> None:
        self._dts.clear()
        self._span = 0.0
        self._last = None
        self._epoch_end_s = 0.0

    def interrupt(self) -> None:
        """The run paused: the next gap is not a batch's time."""
        self._last = None

    def add(self, epoch: int, wall_s: float) -> None:
        if not math.isfinite(wall_s):
            return
        last, self._last = self._last, (epoch, wall_s)
        if last is None:
            return
        dt = wall_s - last[1]
        if epoch == last[0]:
            if dt > 0:
                self._dts.append(dt)
                self._span += dt
                while len(self._dts) > RATE_MIN_BATCHES and self._span - self._dts[0] >= RATE_WINDOW_S:
                    self._span -= self._dts.popleft()
        elif self._dts:
            self._epoch_end_s = max(0.0, dt - self.batch_s())

    def meaningful(self) -> bool:
        return len(self._dts) >= RATE_MIN_BATCHES and self._span >= RATE_MIN_SPAN_S

    def batch_s(self) -> float:
        """Seconds per batch over the recent batches (NaN before any)."""
        return self._span / len(self._dts) if self._dts else math.nan

    def eta_s(self, batches_left: int, epoch_ends_left: int) -> float:
        return batches_left * self.batch_s() + epoch_ends_left * self._epoch_end_s


@dataclass(frozen=True)
class EpochSummary:
    """The held-out figures of the latest epoch, from a run or a loaded checkpoint (nats per example)."""

    epoch: int
    step: int
    test_elbo: float
    test_recon: float
    test_kl: float
    kl_per_dim: np.ndarray
    active: np.ndarray  # (d,) bool: the active latent dimensions (``display.active_dims``)

    @property
    def active_units(self) -> int:
        """How many latent dimensions are active: the one count every view shows."""
        return int(np.count_nonzero(self.active))

    @classmethod
    def of_event(cls, ev: EpochEvent) -> "EpochSummary":
        kl = np.asarray(ev.kl_per_dim, dtype=np.float64)
        return cls(int(ev.epoch), int(ev.step), float(ev.test_elbo), float(ev.test_recon), float(ev.test_kl),
                   kl, active_dims(kl, ev.latents))

    @classmethod
    def of_record(cls, r: dict, mean_codes: np.ndarray | None = None) -> "EpochSummary | None":
        """From a ``History.epochs`` entry (and the codes saved with it); None when it lacks the KL per dimension."""
        kl = r.get("kl_per_dim")
        if kl is None:
            return None
        kl = np.asarray(kl, dtype=np.float64)
        return cls(int(r.get("epoch", 1)), int(r.get("step", 0)), float(r.get("test_elbo", math.nan)),
                   float(r.get("test_recon", math.nan)), float(r.get("test_kl", kl.sum())), kl,
                   active_dims(kl, mean_codes))


class Session(QtCore.QObject):
    stateChanged = Signal(str)
    message = Signal(str, str)  # level ("info" | "warning" | "error"), text
    datasetLoaded = Signal(object)  # Dataset
    batchesArrived = Signal(object)  # dict of numpy arrays: step, recon, kl, loss
    trainProgress = Signal(object)  # dict: epoch, n_epochs, batch, n_batches, samples_per_s, eta_s
    epochArrived = Signal(object)  # EpochEvent, every epoch (numbers and numpy arrays only)
    epochShown = Signal(object)  # EpochSummary of the newest epoch, at most every EPOCH_VIEW_INTERVAL_S
    markerAdded = Signal(int, str)
    historyReplaced = Signal(object)  # HistoryView
    mapReady = Signal(object)  # MapView
    mapCleared = Signal(str)  # the text the empty map shows
    decoded = Signal(object, object, float, float, bool)  # image, code, x, y, far from data
    exampleSelected = Signal(int, str, object, object)  # index, title, original, reconstruction (or None)
    projectionProgress = Signal(float, str)
    modelLoaded = Signal(object, object, object)  # model settings dict, train settings dict, dataset dict
    checkpointSaved = Signal(str)  # path of a checkpoint the user saved
    modelForgotten = Signal()  # emitted just before the model (and its trainer) is dropped
    progressText = Signal(str)  # the progress read-out when no batch progress applies ("Starting…", "Trained …")
    noticeWithdrawn = Signal(str)  # a warning or error sent through ``message`` no longer holds
    decodedCleared = Signal()  # no decoded map point any more (the map's projection changed)
    selectionCleared = Signal()  # no selected example any more
    datasetMismatch = Signal(str)  # a dataset was loaded that the model cannot take: replace the model with it?

    def __init__(self, parent: QtCore.QObject | None = None, num_threads: int | None = None, *,
                 tasks: TaskRunner | None = None, decoding: LatestWins | None = None,
                 train_thread: TrainThreadFactory = TrainThread):
        super().__init__(parent)
        self.tasks = tasks if tasks is not None else TaskRunner(self)
        self.decoding = decoding if decoding is not None else LatestWins(self)
        self._new_train_thread = train_thread
        self.num_threads = num_threads or max(1, (os.cpu_count() or 2) - 1)
        self.state = EMPTY
        self.dataset: Dataset | None = None
        self.trainer: Trainer | None = None
        self.checkpoint: Checkpoint | None = None  # a loaded checkpoint not yet turned into a trainer
        self.checkpoint_path: str | None = None
        self.control: TrainControl | None = None
        self.thread: TrainThread | None = None
        self.model_config: ModelConfig | None = None
        self.train_config: TrainConfig | None = None
        self.encoder: Encoder | None = None  # q(z|x) of the latest weights
        self.decoder: Decoder | None = None  # p(x|z) of the latest weights
        self.latents: np.ndarray | None = None
        self.latent_logvar: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.label_names: list[str] | None = None
        self.last_epoch: EpochSummary | None = None
        self.selected: int | None = None
        self.last_code: np.ndarray | None = None  # the code of the last decoded map point
        #: Called by the training thread between batches and after epochs (see
        #: Trainer.boundary_hook); the recovery autosave plugs in here.
        self.boundary_hook: Callable[[Trainer, bool], None] | None = None
        #: Where runs trained here write their run folders (``app.run_folders``); None: they write none.
        self.runs_root: str | None = None
        self.run_dir: str | None = None  # the run folder of the model's training here
        self.map = LatentMap(self.tasks, self)
        self.loader = Loader(self.tasks, self)
        self._model_gen = 0  # counts forgotten models: requests made for an earlier one are dropped
        self._run_forgotten = False  # the running thread's model was reset: its signals are stale
        self._encode_token = 0
        self._last_query: tuple[float, float] | None = None
        self._point_token = 0  # counts clearings of the decoded point: decodes asked for before one are dropped
        self._pending_save: str | None = None
        self._epochs_target = 0
        self._run_start_epoch = 0
        #: (epoch, step, changes) of the model as last saved or opened from a file of its own; None: never saved.
        self._saved_mark: tuple[int, int, int] | None = None
        self._checkpoint_file: str | None = None  # a file that holds the loaded checkpoint as it is
        self._train_request: tuple[dict, dict] | None = None  # Train was pressed while the dataset loads
        self._offered: tuple[Dataset, dict] | None = None  # a loaded dataset that the model cannot take
        self._mismatch_text = ""  # the warning about it, while it holds
        self._diverged_text = ""  # the divergence report, until an epoch completes after the resume
        self._resumed_after_divergence = False
        self._throughput = Throughput()
        self._epoch_timer = QtCore.QTimer(self)
        self._epoch_timer.setSingleShot(True)
        self._epoch_timer.timeout.connect(self._show_epoch)
        self._last_epoch_shown = -math.inf
        self.map.ready.connect(self.mapReady)
        self.map.progress.connect(self.projectionProgress)
        self.map.message.connect(self.message)
        self.loader.datasetLoaded.connect(self._on_dataset_loaded)
        self.loader.progress.connect(self._on_load_progress)
        self.loader.checkpointLoaded.connect(self._on_checkpoint_loaded)
        self.loader.failed.connect(self._on_load_failed)
        self.decoding.done.connect(self._on_decoded)
        self.decoding.failed.connect(self._on_decode_failed)

    # ------------------------------------------------------------------ state
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.stateChanged.emit(state)

    def _resting_state(self) -> str:
        """The state when nothing runs or loads."""
        return TRAINED if self.has_model else (IDLE if self.dataset is not None else EMPTY)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    @property
    def has_model(self) -> bool:
        return self.trainer is not None or self.checkpoint is not None

    @staticmethod
    def _mark(model: Trainer | Checkpoint) -> tuple[int, int, int]:
        return (int(model.epoch), int(model.step), len(model.history.changes))

    @property
    def unsaved(self) -> bool:
        """A model exists that was trained or changed since it was last saved or opened from its own file.

        A freshly opened checkpoint is saved; a restored recovery copy is not
        (see ``forget_file``), nor is any model trained since.
        """
        model = self.trainer if self.trainer is not None else self.checkpoint
        return model is not None and self._mark(model) != self._saved_mark

    def forget_file(self) -> None:
        """The model has no file of its own (a restored recovery copy): Save asks where to put it, and it is unsaved."""
        self.checkpoint_path = None
        self._saved_mark = None

    @property
    def loading_dataset(self) -> bool:
        """A dataset (not a checkpoint) is being loaded."""
        return self.state == LOADING and self.loader.loading == "dataset"

    @property
    def history(self) -> History | None:
        """The record of the model's run: the trainer's, or the loaded checkpoint's."""
        if self.trainer is not None:
            return self.trainer.history
        if self.checkpoint is not None:
            return self.checkpoint.history
        return None

    @property
    def projection(self) -> Projection | None:
        return self.map.projection

    @property
    def xy(self) -> np.ndarray | None:
        """Where the map shows each example (None before the first layout)."""
        return self.map.xy

    # ---------------------------------------------------------------- dataset
    def load_dataset(self, spec: dict) -> None:
        """Load a dataset in the background; the current model and history stay until it arrives."""
        if self.running:
            self.message.emit("warning", "Stop training before changing the dataset.")
            return
        self.loader.load_dataset(spec)
        self._set_state(LOADING)
        self.message.emit("info", f"Loading {spec.get('source')}…")

    @Slot(float, str)
    def _on_load_progress(self, fraction: float, text: str) -> None:
        """A large dataset on its way: how far it is, in the progress read-out while there is no model to describe."""
        if not self.has_model:
            self.progressText.emit(f"Loading: {text} ({100 * fraction:.0f}%)" if text else f"Loading: {100 * fraction:.0f}%")

    @Slot(object, object)
    def _on_dataset_loaded(self, ds: Dataset, spec: dict) -> None:
        mcfg = self.model_config
        keep_model = self.has_model and mcfg is not None and tuple(mcfg.input_shape) == tuple(ds.input_shape)
        if self.has_model and not keep_model:
            # Never drop a model for a dataset it cannot use without asking: keep both as
            # they are, and offer the dataset (see take_offered_dataset).
            where = spec.get("source") or ds.name
            self._train_request = None
            self._withdraw_mismatch()
            self._offered = (ds, spec)
            self._mismatch_text = (f"{where}: its images are {shape_text(ds.input_shape)}, the current model takes "
                                   f"{shape_text(mcfg.input_shape)}. Save the model (Ctrl+S) and reset it "
                                   "(Training ▸ Reset model) to train on this dataset.")
            self.message.emit("warning", self._mismatch_text)
            self._set_state(self._resting_state())
            self.datasetMismatch.emit(self._mismatch_text)
            return
        self._take_dataset(ds, keep_model)

    def take_offered_dataset(self) -> bool:
        """Forget the model and use the dataset it could not take (the last one loaded); False when there is none."""
        offered, self._offered = self._offered, None
        if offered is None or self.running:
            return False
        ds = offered[0]
        self._forget_model("Press Train to see the latent map")
        self._set_state(self._resting_state())
        self._take_dataset(ds, keep_model=False)
        return True

    def _withdraw_mismatch(self) -> None:
        self._offered = None
        if self._mismatch_text:
            self.noticeWithdrawn.emit(self._mismatch_text)
            self._mismatch_text = ""

    def _take_dataset(self, ds: Dataset, keep_model: bool) -> None:
        self._withdraw_mismatch()
        self.dataset = ds
        self.selected = None
        self.map.select(None)
        notes = f" ({'; '.join(ds.notes)})" if ds.notes else ""
        self.message.emit("info", f"Loaded {ds.name}: {ds.n:,} images of {shape_text(ds.input_shape)}{notes}.")
        if keep_model and self.latents is not None:
            # The stored codes belong to other examples: encode this dataset with the current model.
            self.latents = self.latent_logvar = None
            self._last_query = None
            self.map.clear()
            self.mapCleared.emit("Encoding the new dataset…")
            self.encode_dataset()
        # Loading is over before anyone hears of the dataset: a listener may start training at once.
        self._set_state(self._resting_state())
        self.datasetLoaded.emit(ds)
        request, self._train_request = self._train_request, None
        if request is not None and not self.running:
            self.train(*request)

    @Slot(str)
    def _on_load_failed(self, text: str) -> None:
        self.message.emit("error", text)
        if self._train_request is not None:
            self._train_request = None
            self.progressText.emit("Not trained: the data could not be loaded")
        self._set_state(self._resting_state())
        if self.state == EMPTY:
            self.mapCleared.emit("Choose a dataset to begin")

    def encode_dataset(self) -> None:
        """Encode every example with the current encoder (in the background); the map follows."""
        if self.encoder is None or self.dataset is None:
            return
        encoder, images, gen = self.encoder, self.dataset.images, self._model_gen

        def job(progress: Any, cancelled: Callable[[], bool]) -> tuple[int, np.ndarray, np.ndarray]:
            mu, lv = encoder.encode_all(images, progress=progress, cancelled=cancelled)
            return gen, mu, lv

        self._encode_token += 1
        self.tasks.start(Tagged(self._encode_token, job), self._on_encoded, self._on_task_failed)

    @Slot(object)
    def _on_encoded(self, reply: Reply) -> None:
        if reply.token != self._encode_token:
            return
        if reply.error is not None:
            self.message.emit("error", f"Could not encode the dataset: {reply.error}")
            return
        gen, mu, lv = reply.value
        if gen != self._model_gen or self.dataset is None or len(mu) != self.dataset.n:
            return  # the model or the dataset changed meanwhile
        self.latents, self.latent_logvar = mu, lv
        self.labels, self.label_names = self.dataset.labels, self.dataset.label_names
        self.map.set_codes(mu, self.labels, self.label_names, now=True)

    @Slot(str)
    def _on_task_failed(self, text: str) -> None:
        self.message.emit("error", text)

    # ---------------------------------------------------------------- training
    def train(self, model_settings: dict, train_settings: dict) -> None:
        """Start a new model, or continue the current one, for ``epochs`` more epochs."""
        if self.running:
            return
        if self.loading_dataset:
            # Training starts as soon as the data is there.
            self._train_request = (dict(model_settings), dict(train_settings))
            self.progressText.emit("Training starts as soon as the data is loaded…")
            return
        if self.state == LOADING:
            self.message.emit("warning", "Wait until loading has finished, then train.")
            return
        if self.dataset is None:
            self.message.emit("warning", "Choose a dataset first.")
            return
        epochs = int(train_settings.get("epochs", 10))
        try:
            tcfg = TrainConfig(**{**train_settings, "num_threads": self.num_threads})
        except (ConfigError, TypeError) as exc:
            self.message.emit("error", f"Training settings: {exc}")
            return
        dataset = self.dataset
        factory: Callable[[], Trainer]
        if self.trainer is not None:
            trainer = self.trainer
            self.control = trainer.control
            self.control.reset()  # a finished or stopped run leaves its stop flag set

            def factory() -> Trainer:
                return trainer
            start_epoch = trainer.epoch
        else:
            from vae_core.training import TrainControl

            control = self.control = TrainControl()
            if self.checkpoint is not None:
                ckpt = self.checkpoint

                def factory() -> Trainer:
                    from vae_core.checkpoint import restore_trainer

                    return restore_trainer(ckpt, dataset, control=control)
                start_epoch = ckpt.epoch
            else:
                try:
                    mcfg = ModelConfig(input_shape=tuple(dataset.input_shape), **model_settings)
                except (ConfigError, TypeError) as exc:
                    self.message.emit("error", f"Model settings: {exc}")
                    self.control = None
                    return
                self.model_config, self.train_config = mcfg, tcfg
                self._saved_mark = None

                def factory() -> Trainer:
                    from vae_core.training import Trainer

                    return Trainer(mcfg, tcfg, dataset, control=control)
                start_epoch = 0
        hook = self.boundary_hook
        if hook is not None:
            make = factory

            def factory() -> Trainer:
                trainer = make()
                trainer.boundary_hook = hook
                return trainer

        self._epochs_target = epochs
        self._run_start_epoch = start_epoch
        self._run_forgotten = False
        self._throughput.reset()
        thread = self.thread = self._new_train_thread(factory, epochs=epochs, num_threads=self.num_threads, parent=self)
        thread.trainerReady.connect(self._on_trainer_ready)
        thread.batches.connect(self._on_batches)
        thread.modelsReady.connect(self._on_models)
        thread.epochEnded.connect(self._on_epoch)
        thread.statusChanged.connect(self._on_status)
        thread.settingChanged.connect(self._on_change)
        thread.failed.connect(self._on_train_failed)
        thread.finished.connect(self._on_thread_finished)
        if self.runs_root is not None:
            # A new or restored model gets a run folder of its own; training it further continues that folder.
            if self.trainer is None or self.run_dir is None:
                self.run_dir, resumed = new_run_dir(self.runs_root, dataset.name), self.checkpoint_path
            else:
                resumed = os.path.join(self.run_dir, LATEST_CHECKPOINT)
            thread.record_to(self.run_dir, resumed_from=resumed)
        if self.trainer is not None:
            # The live settings the panel shows now apply (they may differ from the model's last run).
            self._push_live_settings(train_settings)
        self._set_state(TRAINING)
        self.progressText.emit("Starting: preparing the model and the data…")
        self.map.set_training(True)
        thread.start()

    def _push_live_settings(self, s: dict) -> None:
        if self.control is None or self.trainer is None:
            return
        cur = self.trainer.settings
        changes = {k: s[k] for k in LIVE_SETTINGS if k in s and cur.get(k) != s[k]}
        if changes:
            try:
                self.control.set(**changes)
            except VAEError as exc:
                self.message.emit("error", str(exc))

    def _stale(self) -> bool:
        """True when the signal being handled comes from a run that is not the current one.

        A thread's queued signals may still be on their way after ``reset`` has
        waited for it; they must not bring the forgotten model back.
        """
        return self._run_forgotten or self.sender() is not self.thread

    @Slot(object)
    def _on_trainer_ready(self, trainer: Trainer) -> None:
        if self._stale():
            return
        self.trainer = trainer
        self.checkpoint = None
        self.model_config = trainer.model_config
        self.train_config = trainer.train_config

    def set_live(self, name: str, value: Any) -> None:
        """Change beta, learning rate, warm-up or free bits; applied at the next batch."""
        if self.control is None:
            return
        try:
            self.control.set(**{name: value})
        except VAEError as exc:
            self.message.emit("error", str(exc))

    def toggle_pause(self) -> None:
        if not self.running or self.control is None:
            return
        if self.control.paused:
            self.control.resume()
            self._set_state(TRAINING)
        else:
            self.control.pause()
            self._set_state(PAUSED)

    def stop(self) -> None:
        """Stop training at the next batch, or drop the dataset or checkpoint being loaded."""
        if self.running and self.control is not None:
            self.control.stop()
        elif self.state == LOADING and self.loader.cancel():
            self.message.emit("info", "Stopped loading.")
            if self._train_request is not None:
                self._train_request = None
                self.progressText.emit("Not trained yet")
            self._set_state(self._resting_state())

    def reset(self) -> None:
        """Forget the model and its history; the dataset stays, or the one the model could not take comes in."""
        if self.running and self.thread is not None:
            self.stop()
            self.thread.wait(3000)
        offered = self._offered
        self._forget_model("Train a model to see its latent map")
        if self.state != LOADING:  # a dataset on its way sets the state when it arrives
            self._set_state(self._resting_state())
            if offered is not None:
                self._take_dataset(offered[0], keep_model=False)

    def _forget_model(self, map_text: str) -> None:
        """Drop the model and everything made with it; every view clears."""
        if self.has_model or self.thread is not None:
            self.modelForgotten.emit()
        if self.thread is not None:
            self._run_forgotten = True
            self.map.set_training(False)
        self._model_gen += 1
        self._point_token += 1
        self.decoding.discard()
        self.trainer = None
        self.checkpoint = None
        self.checkpoint_path = None
        self.run_dir = None
        self.control = None
        self.model_config = None
        self.train_config = None
        self.encoder = self.decoder = None
        self.latents = self.latent_logvar = None
        self.selected = None
        self.last_code = None
        self.last_epoch = None
        self._last_query = None
        self._epoch_timer.stop()
        self._pending_save = None
        self._saved_mark = None
        self._checkpoint_file = None
        self._throughput.reset()
        self._withdraw_mismatch()
        self._withdraw_divergence()
        self.map.clear()  # a layout of the forgotten model's codes must not land on the map
        self.historyReplaced.emit(history_view(None))
        self.mapCleared.emit(map_text)
        self.progressText.emit("Not trained yet")

    def _withdraw_divergence(self) -> None:
        self._resumed_after_divergence = False
        if self._diverged_text:
            self.noticeWithdrawn.emit(self._diverged_text)
            self._diverged_text = ""

    @Slot(object)
    def _on_batches(self, events: list[BatchEvent]) -> None:
        if self._stale():
            return
        n = len(events)
        step = np.fromiter((e.step for e in events), dtype=np.float64, count=n)
        recon = np.fromiter((e.recon for e in events), dtype=np.float64, count=n)
        kl = np.fromiter((e.kl for e in events), dtype=np.float64, count=n)
        loss = np.fromiter((e.loss for e in events), dtype=np.float64, count=n)
        wall = np.fromiter((e.wall_s for e in events), dtype=np.float64, count=n)
        self.batchesArrived.emit({"step": step, "recon": recon, "kl": kl, "loss": loss, "wall_s": wall})
        rate = self._throughput
        for e in events:
            rate.add(e.epoch, e.wall_s)
        last = events[-1]
        done_epochs = last.epoch - self._run_start_epoch
        batches_left = (self._epochs_target - done_epochs) * last.n_batches - (last.batch + 1)
        samples_per_s = eta = None
        if rate.meaningful():
            batch_size = self.train_config.batch_size if self.train_config is not None else 128
            samples_per_s = batch_size / rate.batch_s()
            eta = rate.eta_s(batches_left, self._epochs_target - done_epochs)
        self.trainProgress.emit({
            "epoch": done_epochs + 1, "n_epochs": self._epochs_target, "batch": last.batch + 1,
            "n_batches": last.n_batches, "samples_per_s": samples_per_s, "eta_s": eta,
        })

    @Slot(object)
    def _on_models(self, models: tuple[Encoder, Decoder]) -> None:
        if self._stale():
            return
        self.encoder, self.decoder = models
        if self.state == PAUSED:
            # Rolled back after a divergence: what is shown now comes from the restored weights.
            self._refresh_decoded()

    @Slot(object)
    def _on_epoch(self, ev: EpochEvent) -> None:
        if self._stale():
            return
        self.last_epoch = EpochSummary.of_event(ev)
        if self._resumed_after_divergence:
            self._withdraw_divergence()  # an epoch completed after the resume: training recovered
        self.latents, self.latent_logvar = ev.latents, ev.latent_logvar
        if self.dataset is not None:
            self.labels, self.label_names = self.dataset.labels, self.dataset.label_names
        self.map.set_codes(ev.latents, self.labels, self.label_names, epoch_s=float(ev.seconds))
        self.epochArrived.emit(ev)
        if not self._epoch_timer.isActive():
            wait = max(0.0, EPOCH_VIEW_INTERVAL_S - (time.monotonic() - self._last_epoch_shown))
            self._epoch_timer.start(int(1000 * wait))

    @Slot()
    def _show_epoch(self) -> None:
        """The newest epoch reaches the views that draw it (coalesced: at most every EPOCH_VIEW_INTERVAL_S)."""
        self._epoch_timer.stop()
        self._last_epoch_shown = time.monotonic()
        if self.last_epoch is not None:
            self.epochShown.emit(self.last_epoch)
        self._refresh_decoded()

    def _refresh_decoded(self) -> None:
        """Decode the last map point and the selected example again, with the current weights."""
        if self._last_query is not None:
            self.decode_at(*self._last_query)
        if self.selected is not None:
            self.select_example(self.selected)

    @Slot(object)
    def _on_status(self, ev: StatusEvent) -> None:
        if self._stale():
            return
        if ev.status == "paused":
            self._throughput.interrupt()
            self._set_state(PAUSED)
            if self._pending_save and self.control is not None:
                path, self._pending_save = self._pending_save, None
                self._save_now(path)
                self.control.resume()
        elif ev.status == "resumed":
            self._throughput.interrupt()
            if self._diverged_text:
                self._resumed_after_divergence = True
            self._set_state(TRAINING)
        elif ev.status == "diverged":
            self._throughput.interrupt()
            self._set_state(PAUSED)
            self._withdraw_divergence()
            self._diverged_text = f"Training paused: {ev.message}"
            self.message.emit("error", self._diverged_text)
            self.markerAdded.emit(ev.step, ROLLBACK_MARKER)
            if self.decoder is not None:
                self._refresh_decoded()  # with the rolled-back weights, which arrived just before

    @Slot(object)
    def _on_change(self, ev: ChangeEvent) -> None:
        if self._stale() or ev.name == "rollback":
            return  # a rollback is shown with its divergence
        self.markerAdded.emit(ev.step, change_marker(ev.name, ev.old, ev.new))

    @Slot(str)
    def _on_train_failed(self, text: str) -> None:
        if not self._stale():
            self.message.emit("error", text)

    @Slot()
    def _on_thread_finished(self) -> None:
        ended = self.sender()
        if ended is not None:
            ended.deleteLater()  # its queued signals have all been delivered before this one
            if ended is not self.thread:
                return  # a run that ended after the next one had already started
        self.thread = None
        forgotten, self._run_forgotten = self._run_forgotten, False
        if not forgotten and self._epoch_timer.isActive():
            self._show_epoch()  # the run's last epoch is shown before the state says it ended
        if self._pending_save and self.trainer is not None:
            path, self._pending_save = self._pending_save, None
            self._save_now(path)
        self._set_state(self._resting_state())
        if not forgotten:
            trainer = self.trainer
            stopped_within_epoch = trainer is not None and (self.decoder is None or self.decoder.step != trainer.step)
            # A map that kept its layout while training is laid out anew now, unless newer codes are on their way.
            self.map.set_training(False, refit=not stopped_within_epoch)
            if stopped_within_epoch:
                # The map and the decoder show the weights as they are now, as after an epoch.
                self._encode_stopped(trainer)

    def _encode_stopped(self, trainer: Trainer) -> None:
        """Build the models of ``trainer``'s weights and encode every example with them (in the background)."""
        if self.dataset is None:
            return
        images, gen = self.dataset.images, self._model_gen

        def job(progress: Any, cancelled: Callable[[], bool]) -> tuple[int, tuple[Encoder, Decoder], np.ndarray, np.ndarray]:
            from vae_core.inference import load_models

            encoder, decoder = load_models(trainer.snapshot())
            mu, lv = encoder.encode_all(images, progress=progress, cancelled=cancelled)
            return gen, (encoder, decoder), mu, lv

        self._encode_token += 1
        self.tasks.start(Tagged(self._encode_token, job), self._on_stopped_encoded, self._on_task_failed)

    @Slot(object)
    def _on_stopped_encoded(self, reply: Reply) -> None:
        if reply.token != self._encode_token:
            return
        if reply.error is not None:
            self.message.emit("error", f"Could not encode the dataset: {reply.error}")
            return
        gen, models, mu, lv = reply.value
        if gen != self._model_gen or self.running or self.dataset is None or len(mu) != self.dataset.n:
            return  # the model changed, trains again, or the dataset changed meanwhile
        self.encoder, self.decoder = models
        self.latents, self.latent_logvar = mu, lv
        self.labels, self.label_names = self.dataset.labels, self.dataset.label_names
        self.map.set_codes(mu, self.labels, self.label_names, now=self.map.xy is None)
        self._refresh_decoded()

    def shutdown(self, timeout_ms: int = 2000) -> bool:
        """Stop training and background jobs; True when everything ended in time."""
        ok = True
        self.tasks.cancel_all()
        self.loader.cancel()
        decoding_done = self.decoding.close(max(100, timeout_ms // 4))
        if self.thread is not None and self.thread.isRunning():
            if self.control is not None:
                self.control.stop()
            ok = self.thread.wait(timeout_ms)
        if ok and self._pending_save and self.trainer is not None:
            # A save asked for while training ran must not be lost by closing.
            path, self._pending_save = self._pending_save, None
            self._save_now(path)
        ok = self.tasks.wait(max(100, timeout_ms // 2)) and ok and decoding_done
        return ok

    # ------------------------------------------------------------- map
    def set_projection(self, mode: str, dims: tuple[int, int] | None = None) -> None:
        """Show the codes as two latent dims ("raw"), their PCA plane or a UMAP layout.

        A map point means another code under another projection: the decoded
        point goes (the selected example stays: it is an example, not a place).
        """
        before = (self.map.mode, self.map.dims)
        self.map.set_mode(mode, dims)
        if (self.map.mode, self.map.dims) != before:
            self.clear_decoded()

    def clear_decoded(self) -> None:
        """No decoded map point: the crosshair and the decoded image go (``decodedCleared``)."""
        self._last_query = None
        self.last_code = None
        self._point_token += 1
        self.decoding.discard("point")
        self.decodedCleared.emit()

    def clear_selection(self) -> None:
        """No selected example (``selectionCleared``)."""
        self.selected = None
        self.map.select(None)
        self.decoding.discard("example")
        self.selectionCleared.emit()

    def restore_pick(self, point: tuple[float, float] | None, example: int | None) -> None:
        """Put the decoded point and the selected example back as they were (a double click undoes its first click)."""
        if point is None:
            self.clear_decoded()
        else:
            self.decode_at(*point)
        if example is None:
            if self.selected is not None:
                self.clear_selection()
        elif example != self.selected:
            self.select_example(example)

    def hold_map(self, on: bool) -> None:
        """Keep the map as it is while ``on`` (a drag on it); then show the newest epoch's codes."""
        self.map.hold(on)

    # --------------------------------------------------------------- decoding
    def decode_at(self, x: float, y: float) -> None:
        """Decode the code under map point (x, y) on the decoding thread; ``decoded`` follows."""
        self._last_query = (float(x), float(y))
        proj, decoder = self.map.projection, self.decoder
        if decoder is None or proj is None:
            return
        gen, token = self._model_gen, self._point_token

        def job() -> tuple[int, int, float, float, np.ndarray, np.ndarray, bool]:
            codes, dist = proj.inverse(np.array([[x, y]], dtype=np.float32))
            image = decoded_for_display(decoder.decode(codes))[0]
            return gen, token, float(x), float(y), codes[0], image, bool(dist[0] > proj.far_threshold)

        self.decoding.submit("point", job)

    def select_example(self, index: int) -> None:
        """Show example ``index`` next to its reconstruction (decoded from its mean code)."""
        ds = self.dataset
        if ds is None or not (0 <= index < ds.n):
            return
        self.selected = index
        self.map.select(index)
        title = example_title(index, ds.labels, ds.label_names)
        image = ds.images[index]
        encoder, decoder, gen = self.encoder, self.decoder, self._model_gen
        if encoder is None or decoder is None:
            self.exampleSelected.emit(index, title, image_for_display(image), None)
            return

        def job() -> tuple[int, int, str, np.ndarray, np.ndarray]:
            mu, _ = encoder.encode(image[None])
            return gen, index, title, image_for_display(image), decoded_for_display(decoder.decode(mu))[0]

        self.decoding.submit("example", job)

    @Slot(str, object)
    def _on_decoded(self, kind: str, result: tuple) -> None:
        if result[0] != self._model_gen:
            return  # made with a model that is gone
        if kind == "point":
            _, token, x, y, code, image, far = result
            if token != self._point_token:
                return  # the decoded point was cleared meanwhile
            self.last_code = code
            self.decoded.emit(image, code, x, y, far)
        elif kind == "example":
            _, index, title, original, recon = result
            if index == self.selected:
                self.exampleSelected.emit(index, title, original, recon)

    @Slot(str, str)
    def _on_decode_failed(self, kind: str, text: str) -> None:
        what = "the map point" if kind == "point" else "the selected example"
        self.message.emit("error", f"Could not decode {what}: {text}")

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str) -> None:
        """Save the model to ``path``: at the next batch while training runs, else now."""
        if self.trainer is None:
            if self.checkpoint is not None:
                self._save_now(path)
            else:
                self.message.emit("warning", "There is no trained model to save yet.")
            return
        if self.running and self.control is not None and not self.control.paused:
            # Pause at the next batch boundary, save, then carry on.
            self._pending_save = path
            self.control.pause()
            return
        self._save_now(path)

    def save_and_stop(self, path: str, timeout_ms: int = 10000) -> bool:
        """Stop training (waiting for it) and save the model to ``path`` now; True when it was saved.

        For saving before the model is dropped or the window closes.
        """
        if not self.stop_and_wait(timeout_ms):
            self.message.emit("error", f"Could not save {path}: training did not stop in time.")
            return False
        self._pending_save = None
        return self._save_now(path)

    def stop_and_wait(self, timeout_ms: int = 10000) -> bool:
        """Stop training and wait until its thread has ended; True when nothing runs any more.

        The run's last signals still arrive afterwards, as after ``stop``.
        """
        if self.running and self.thread is not None:
            if self.control is not None:
                self.control.stop()
            return self.thread.wait(timeout_ms)
        return True

    def _save_now(self, path: str) -> bool:
        """Write the trainer's state, or copy the loaded checkpoint's file, to ``path``; True when saved."""
        model: Trainer | Checkpoint | None = self.trainer if self.trainer is not None else self.checkpoint
        if model is None:
            return False
        try:
            if self.trainer is not None:
                write_checkpoint(self.trainer, path)
            elif self._checkpoint_file is None:
                raise OSError("the file the model was opened from is not known")
            else:
                copy_checkpoint(self._checkpoint_file, path)
                self._checkpoint_file = path
        except (VAEError, OSError) as exc:
            self.message.emit("error", f"Could not save {path}: {exc}")
            return False
        self.checkpoint_path = path
        self._saved_mark = self._mark(model)
        self.message.emit("info", f"Saved {path}")
        self.checkpointSaved.emit(path)
        return True

    def load_checkpoint(self, path: str) -> None:
        if self.running:
            self.message.emit("warning", "Stop training before opening a checkpoint.")
            return
        self._set_state(LOADING)
        self.loader.load_checkpoint(path)

    @Slot(object)
    def _on_checkpoint_loaded(self, loaded: LoadedCheckpoint) -> None:
        ckpt, ds = loaded.checkpoint, loaded.dataset
        shape = tuple(ckpt.model_config.input_shape)
        if ds is None and self.trainer is not None and self.dataset is not None and tuple(self.dataset.input_shape) != shape:
            # It could be neither trained nor shown with its data here: keep the current model rather than drop it.
            self.message.emit("error", f"Cannot open {loaded.path}: it is a model of {shape_text(shape)} images, the loaded "
                                       f"dataset {self.dataset.name} has {shape_text(self.dataset.input_shape)} images and "
                                       f"the checkpoint's own dataset could not be loaded ({loaded.dataset_error}). "
                                       "The current model is kept.")
            self._set_state(self._resting_state())
            return
        self._forget_model("Opening the checkpoint…")
        self.checkpoint = ckpt
        self.checkpoint_path = loaded.path
        self._checkpoint_file = loaded.path
        self._saved_mark = self._mark(ckpt)
        self.model_config, self.train_config = ckpt.model_config, ckpt.train_config
        self.encoder, self.decoder = loaded.encoder, loaded.decoder
        if ds is not None:
            self.dataset = ds
        self.latents, self.latent_logvar = ckpt.latents, ckpt.latent_logvar
        self.labels, self.label_names = ckpt.labels, ckpt.label_names
        records = ckpt.history.epochs
        self.last_epoch = EpochSummary.of_record(records[-1], ckpt.latents) if records else None
        self.historyReplaced.emit(history_view(ckpt.history))
        self.modelLoaded.emit(self.model_config.to_dict(), self.train_config.to_dict(), ckpt.dataset_spec)
        if self.last_epoch is not None:
            self.epochShown.emit(self.last_epoch)
        if self.latents is not None:
            self.map.set_codes(self.latents, self.labels, self.label_names, now=True)
        msg = f"Opened {os.path.basename(loaded.path)}: {ckpt.epoch} epochs, step {ckpt.step}."
        if ds is None:
            msg += (f" Its dataset could not be loaded ({loaded.dataset_error}); the map shows the stored codes. "
                    "Open a dataset of the same image size to train further.")
            self.message.emit("warning", msg)
        else:
            self.message.emit("info", msg)
        self._set_state(TRAINED)
        self.progressText.emit(trained_text(ckpt.epoch, ckpt.step))
        if ds is not None:
            self.datasetLoaded.emit(ds)

    def show_run_checkpoint(self, loaded: LoadedCheckpoint) -> bool:
        """Show the newest checkpoint of a followed run; True when it replaced the model as File ▸ Open does.

        A newer checkpoint of the model on screen (the same model settings and
        examples) comes in as a training epoch does: the map moves to its
        codes, the decoder, the tools and the decoded point follow it, and the
        selection stays.  Anything else is opened as File ▸ Open opens it.
        """
        ckpt, codes = loaded.checkpoint, loaded.checkpoint.latents
        if (self.running or self.trainer is not None or self.checkpoint is None or codes is None
                or ckpt.model_config != self.model_config or self.latents is None or len(codes) != len(self.latents)
                or (loaded.dataset is not None and loaded.dataset is not self.dataset)):
            self._on_checkpoint_loaded(loaded)
            return True
        self.checkpoint, self.checkpoint_path = ckpt, loaded.path
        self._checkpoint_file, self._saved_mark = loaded.path, self._mark(ckpt)  # the run's file holds it
        self._checkpoint_file, self._saved_mark = loaded.path, self._mark(ckpt)  # it is in its file: nothing unsaved
        self.train_config = ckpt.train_config
        self.encoder, self.decoder = loaded.encoder, loaded.decoder
        self.latents, self.latent_logvar = codes, ckpt.latent_logvar
        records = ckpt.history.epochs
        self.last_epoch = EpochSummary.of_record(records[-1], codes) if records else None
        self.map.set_codes(codes, self.labels, self.label_names)
        self._show_epoch()
        return False

    # ----------------------------------------------------------------- export
    def export_latents_csv(self, path: str) -> None:
        if self.latents is None:
            self.message.emit("warning", "There are no latent codes to export yet.")
            return
        try:
            n = write_latents(path, self.latents, self.latent_logvar, self.labels, self.label_names, self.map.xy)
        except (VAEError, OSError) as exc:
            self.message.emit("error", f"Could not write {path}: {exc}")
            return
        self.message.emit("info", f"Wrote {n:,} latent codes to {path}")
