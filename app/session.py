"""The program's single source of truth.

``Session`` owns the dataset, the trainer, the training history as the GUI sees
it, the latest latent codes, the projection that puts them on the map and a
frozen copy of the model used for decoding.  Widgets never see any of this
directly: the main window forwards their signals to the session's slots and the
session answers with signals carrying numpy arrays and plain values.

Everything here runs in the GUI thread.  Training runs in a ``TrainThread`` and
one-shot jobs (loading data, UMAP, checkpoints) in the ``TaskRunner``; their
results arrive as queued signals on the slots below.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6 import QtCore

from vae_core.config import ModelConfig, TrainConfig
from vae_core.errors import ConfigError, VAEError

from .worker import TaskRunner, TrainThread

Signal = QtCore.Signal
Slot = QtCore.Slot

#: From this many codes on, two-dims and PCA maps are fitted on a pool thread.
LARGE_MAP = 20_000
#: While training, a newer epoch replaces a running UMAP fit, unless the map
#: has waited this long for a layout: then the fit finishes first.
UMAP_MAX_WAIT_S = 3.0
#: When the new points are already shown, their background fit waits this long.
FIT_AFTER_PAINT_S = 0.06
#: Seconds between two progress reports of a background projection.
PROGRESS_INTERVAL_S = 0.1

# States a user can see.
EMPTY = "empty"  # no dataset yet
LOADING = "busy"  # loading a dataset or a checkpoint
IDLE = "idle"  # a dataset, no model
TRAINING = "training"
PAUSED = "paused"
TRAINED = "trained"  # a model exists, nothing running


def images_for_display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) for one channel, (N, H, W, 3) for colour (views where possible)."""
    if images.ndim != 4:
        return images
    c = images.shape[1]
    if c == 1:
        return images[:, 0]
    if c == 3:
        return images.transpose(0, 2, 3, 1)
    return images[:, :3].transpose(0, 2, 3, 1)


def image_for_display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3), clipped to [0, 1]."""
    return np.clip(images_for_display(image[None])[0], 0.0, 1.0)


@dataclass
class LossBuffers:
    """Per-step values as received from the trainer (kept complete)."""

    step: list[np.ndarray] = field(default_factory=list)
    recon: list[np.ndarray] = field(default_factory=list)
    kl: list[np.ndarray] = field(default_factory=list)
    loss: list[np.ndarray] = field(default_factory=list)


class Session(QtCore.QObject):
    stateChanged = Signal(str)
    message = Signal(str, str)  # level ("info" | "warning" | "error"), text
    datasetLoaded = Signal(object)  # Dataset
    batchesArrived = Signal(object)  # dict of numpy arrays: step, recon, kl, loss
    trainProgress = Signal(object)  # dict: epoch, n_epochs, batch, n_batches, samples_per_s, eta_s
    epochArrived = Signal(object)  # EpochEvent (numbers and numpy arrays only)
    markerAdded = Signal(int, str)
    historyReplaced = Signal(object)  # dict for LossPlot.set_history
    mapReady = Signal(object)  # dict: xy, labels, label_names, x_label, y_label, autorange
    mapCleared = Signal(str)
    decoded = Signal(object, float, float, bool)  # image, x, y, far from data
    exampleSelected = Signal(int, object, object)  # index, original, reconstruction
    projectionProgress = Signal(float, str)
    modelLoaded = Signal(object, object, object)  # model settings dict, train settings dict, dataset dict
    checkpointSaved = Signal(str)  # path of a checkpoint the user saved
    modelForgotten = Signal()  # emitted just before the model (and its trainer) is dropped

    def __init__(self, parent: QtCore.QObject | None = None, num_threads: int | None = None):
        super().__init__(parent)
        self.tasks = TaskRunner(self)
        self.num_threads = num_threads or max(1, (os.cpu_count() or 2) - 1)
        self.state = EMPTY
        self.dataset: Any = None
        self.trainer: Any = None
        self.checkpoint: Any = None  # a loaded checkpoint not yet turned into a trainer
        self.control: Any = None
        self.thread: TrainThread | None = None
        self.model_config: ModelConfig | None = None
        self.train_config: TrainConfig | None = None
        self.latents: np.ndarray | None = None
        self.latent_logvar: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.label_names: list[str] | None = None
        self.last_epoch: Any = None
        self.decoder: Any = None  # eval-mode VAE built from the latest snapshot
        self.snapshot_step = -1
        self.projection_mode = "dims"  # "dims" | "pca" | "umap"
        self.projection_dims = (0, 1)
        self.projection: Any = None
        self.xy: np.ndarray | None = None
        self.selected: int | None = None
        self._umap_task: Any = None
        self._umap_dirty = False
        self._prev_umap: np.ndarray | None = None
        self._umap_token = 0  # identifies the newest UMAP fit; older results are dropped
        self._umap_cancelled: Any = None  # the last cancelled fit, perhaps still finishing an epoch
        self._umap_waiting_since = 0.0  # when the map last got a UMAP layout or UMAP was chosen
        self._umap_warm: str | None = None
        self._map_token = 0  # identifies the newest map request; background fits check it
        self._map_task: Any = None
        self._map_timer = QtCore.QTimer(self)
        self._map_timer.setSingleShot(True)
        self._map_timer.timeout.connect(self._refresh_map)
        self._last_map_time = 0.0
        #: While the user drags on the map, new epochs' maps wait (points do not move under the cursor).
        self._map_on_hold = False
        self._map_held_back = False
        self._pending_save: str | None = None
        self._stop_requested = False
        self._epochs_target = 0
        self._run_start_epoch = 0
        self._last_xy_query: tuple[float, float] | None = None
        self._dataset_request: dict | None = None
        self.buffers = LossBuffers()
        self.markers: list[tuple[int, str]] = []
        self.epoch_points: list[tuple[int, float, float, float]] = []
        self.checkpoint_path: str | None = None
        # Called by the training thread between batches and after epochs (see
        # Trainer.boundary_hook); the recovery autosave plugs in here.
        self.boundary_hook: Any = None

    # ------------------------------------------------------------------ state
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.stateChanged.emit(state)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    @property
    def has_model(self) -> bool:
        return self.trainer is not None or self.checkpoint is not None

    # ---------------------------------------------------------------- dataset
    def load_dataset(self, spec: dict) -> None:
        """Load a dataset in the background; the current model and history stay until it arrives."""
        if self.running:
            self.message.emit("warning", "Stop training before changing the dataset.")
            return
        self._dataset_request = dict(spec)
        previous = self.state
        self._state_before_load = previous
        self._set_state(LOADING)
        self.message.emit("info", f"Loading {spec.get('source')}…")

        def job(progress, cancelled):
            from vae_core.data import load_dataset

            return load_dataset({k: v for k, v in spec.items() if v is not None})

        if getattr(self, "_dataset_task", None) is not None:
            self._dataset_task.cancel()  # only the latest request counts
        self._dataset_task = self.tasks.start(job, self._on_dataset_loaded, self._on_dataset_failed)

    def _stale_dataset(self) -> bool:
        """True for the result of a dataset load that a newer request has replaced."""
        sender = self.sender()
        task = getattr(self, "_dataset_task", None)
        return sender is not None and task is not None and sender is not task.signals

    @Slot(object)
    def _on_dataset_loaded(self, ds: Any) -> None:
        if self._stale_dataset():
            return
        self._dataset_task = None
        keep_model = self.has_model and self.model_config is not None and tuple(self.model_config.input_shape) == tuple(ds.input_shape)
        if self.has_model and not keep_model:
            # Never drop a model for a dataset it cannot use: keep both as they were.
            where = (self._dataset_request or {}).get("source") or ds.name
            self.message.emit("warning", f"{where}: its images are {_shape_text(ds.input_shape)}, the current model takes "
                                         f"{_shape_text(self.model_config.input_shape)}. Save the model (Ctrl+S) and reset it "
                                         "(Training ▸ Reset model) to train on this dataset.")
            self._set_state(TRAINED)
            return
        self.dataset = ds
        notes = f" ({'; '.join(ds.notes)})" if getattr(ds, "notes", None) else ""
        self.message.emit("info", f"Loaded {ds.name}: {ds.n:,} images of {_shape_text(ds.input_shape)}{notes}.")
        self.datasetLoaded.emit(ds)
        if keep_model and self.latents is not None:
            # The stored codes belong to other examples: encode this dataset with the current model.
            self.latents = None
            self.mapCleared.emit("Encoding the new dataset…")
            self.encode_dataset()
        self._set_state(TRAINED if self.has_model else IDLE)

    @Slot(str)
    def _on_dataset_failed(self, text: str) -> None:
        if self._stale_dataset():
            return
        self._dataset_task = None
        self.message.emit("error", text)
        self._set_state(self._state_before_load if self._state_before_load != LOADING else (IDLE if self.dataset is not None else EMPTY))
        if self.dataset is None and self.state == EMPTY:
            self.mapCleared.emit("Choose a dataset to begin")

    def encode_dataset(self) -> None:
        """Encode every example with the current decoder snapshot's model (in the background)."""
        if self.decoder is None or self.dataset is None:
            return
        model = self.decoder
        images = self.dataset.images

        def job(progress, cancelled):
            import torch

            mus, lvs = [], []
            with torch.no_grad():
                for s in range(0, len(images), 2048):
                    mu, lv = model.encode(torch.from_numpy(images[s:s + 2048]))
                    mus.append(mu.numpy())
                    lvs.append(lv.numpy())
            return np.concatenate(mus), np.concatenate(lvs)

        self.tasks.start(job, self._on_encoded, self._on_task_failed)

    @Slot(object)
    def _on_encoded(self, result: Any) -> None:
        self.latents, self.latent_logvar = result
        self.labels = self.dataset.labels if self.dataset is not None else None
        self.label_names = self.dataset.label_names if self.dataset is not None else None
        self._refresh_map(force_autorange=True)

    @Slot(str)
    def _on_task_failed(self, text: str) -> None:
        self.message.emit("error", text)

    # ---------------------------------------------------------------- training
    def train(self, model_settings: dict, train_settings: dict) -> None:
        """Start a new model, or continue the current one, for ``epochs`` more epochs."""
        if self.running:
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
        if self.trainer is None and self.checkpoint is None:
            try:
                mcfg = ModelConfig(input_shape=tuple(self.dataset.input_shape), **model_settings)
            except (ConfigError, TypeError) as exc:
                self.message.emit("error", f"Model settings: {exc}")
                return
            self.model_config, self.train_config = mcfg, tcfg
            dataset = self.dataset
            from vae_core.training import TrainControl

            self.control = TrainControl()
            control = self.control

            def factory():
                from vae_core.training import Trainer

                return Trainer(mcfg, tcfg, dataset, control=control)

            self._reset_history_view()
        elif self.trainer is None:
            ckpt, dataset = self.checkpoint, self.dataset
            from vae_core.training import TrainControl

            self.control = TrainControl()
            control = self.control

            def factory():
                from vae_core.training import Trainer

                return Trainer.from_checkpoint(ckpt, dataset, control=control)
        else:
            trainer = self.trainer
            self.control = trainer.control

            def factory():
                return trainer

            self.control.reset()  # a finished or stopped run leaves its stop flag set
        if self.boundary_hook is not None:
            make, hook = factory, self.boundary_hook

            def factory():
                trainer = make()
                trainer.boundary_hook = hook
                return trainer

        # Apply the live settings the panel shows now (they may differ from the model's last run).
        self._epochs_target = epochs
        self._run_start_epoch = self.trainer.epoch if self.trainer is not None else (self.checkpoint.epoch if self.checkpoint is not None else 0)
        self._stop_requested = False
        self.thread = TrainThread(factory, epochs=epochs, num_threads=self.num_threads, parent=self)
        self.thread.trainerReady.connect(self._on_trainer_ready)
        self.thread.batches.connect(self._on_batches)
        self.thread.epochEnded.connect(self._on_epoch)
        self.thread.statusChanged.connect(self._on_status)
        self.thread.settingChanged.connect(self._on_change)
        self.thread.failed.connect(self._on_train_failed)
        self.thread.finished.connect(self._on_thread_finished)
        if self.trainer is not None:
            self._push_live_settings(train_settings)
        self._set_state(TRAINING)
        self.thread.start()

    def _push_live_settings(self, s: dict) -> None:
        if self.control is None or self.trainer is None:
            return
        cur = self.trainer.settings
        changes = {k: s[k] for k in ("beta", "lr", "warmup", "warmup_epochs", "free_bits") if k in s and cur.get(k) != s[k]}
        if changes:
            try:
                self.control.set(**changes)
            except VAEError as exc:
                self.message.emit("error", str(exc))

    def _stale(self) -> bool:
        """True when the signal being handled comes from the run of a model that was reset since.

        A thread's queued signals may still be on their way after ``reset`` has
        waited for it; they must not bring the forgotten model back.
        """
        return bool(getattr(self.sender(), "forgotten", False))

    @Slot(object)
    def _on_trainer_ready(self, trainer: Any) -> None:
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
        if self.running and self.control is not None:
            self._stop_requested = True
            self.control.stop()

    def reset(self) -> None:
        """Forget the model and its history (the dataset stays)."""
        if self.running:
            self.stop()
            self.thread.wait(3000)
        self._forget_model()
        if self.state != LOADING:  # a dataset on its way sets the state when it arrives
            self._set_state(IDLE if self.dataset is not None else EMPTY)

    def _forget_model(self) -> None:
        self.modelForgotten.emit()
        if self.thread is not None:
            self.thread.forgotten = True
        self.trainer = None
        self.checkpoint = None
        self.checkpoint_path = None
        self.control = None
        self.model_config = None
        self.decoder = None
        self.latents = None
        self.latent_logvar = None
        self.xy = None
        self.projection = None
        self._prev_umap = None
        self._cancel_umap()  # a layout of the forgotten model's codes must not land on the map
        self.selected = None
        self.last_epoch = None
        self._reset_history_view()
        self.mapCleared.emit("Train a model to see its latent map")

    def _reset_history_view(self) -> None:
        self.buffers = LossBuffers()
        self.markers = []
        self.epoch_points = []
        self.historyReplaced.emit({"steps": np.zeros(0), "recon": np.zeros(0), "kl": np.zeros(0), "loss": np.zeros(0), "epochs": [], "markers": []})

    @Slot(object)
    def _on_batches(self, events: list) -> None:
        if self._stale():
            return
        n = len(events)
        step = np.fromiter((e.step for e in events), dtype=np.float64, count=n)
        recon = np.fromiter((e.recon for e in events), dtype=np.float64, count=n)
        kl = np.fromiter((e.kl for e in events), dtype=np.float64, count=n)
        loss = np.fromiter((e.loss for e in events), dtype=np.float64, count=n)
        self.buffers.step.append(step)
        self.buffers.recon.append(recon)
        self.buffers.kl.append(kl)
        self.buffers.loss.append(loss)
        self.batchesArrived.emit({"step": step, "recon": recon, "kl": kl, "loss": loss})
        last = events[-1]
        done_epochs = last.epoch - self._run_start_epoch
        remaining = (self._epochs_target - done_epochs) * last.n_batches - (last.batch + 1)
        batch_size = self.train_config.batch_size if self.train_config else 128
        eta = remaining * batch_size / last.samples_per_s if last.samples_per_s > 0 else float("nan")
        self.trainProgress.emit({
            "epoch": done_epochs + 1, "n_epochs": self._epochs_target, "batch": last.batch + 1,
            "n_batches": last.n_batches, "samples_per_s": last.samples_per_s, "eta_s": eta,
        })

    @Slot(object, object)
    def _on_epoch(self, ev: Any, snapshot: Any) -> None:
        if self._stale():
            return
        self.last_epoch = ev
        self.latents = ev.latents
        self.latent_logvar = ev.latent_logvar
        if self.dataset is not None:
            self.labels = self.dataset.labels
            self.label_names = self.dataset.label_names
        self._install_snapshot(snapshot)
        self.epoch_points.append((ev.step, ev.test_recon, ev.test_kl, -ev.test_elbo))
        self.epochArrived.emit(ev)
        self._schedule_map()

    def _schedule_map(self) -> None:
        if self._map_on_hold:
            self._map_held_back = True
            return
        # The map is redrawn at most twice a second however fast epochs come.
        wait_ms = max(0, int(500 - 1000 * (time.monotonic() - self._last_map_time)))
        if not self._map_timer.isActive():
            self._map_timer.start(wait_ms)

    def hold_map(self, on: bool) -> None:
        """Keep the map as it is while ``on`` (a drag on it); then show the newest epoch's codes."""
        self._map_on_hold = bool(on)
        if on:
            if self._map_timer.isActive():
                self._map_timer.stop()
                self._map_held_back = True
        elif self._map_held_back:
            self._map_held_back = False
            self._schedule_map()

    def _install_snapshot(self, snapshot: Any) -> None:
        import torch

        torch.set_num_threads(1)  # per thread: decoding on the GUI thread must not fight the trainer
        torch.set_flush_denormal(True)  # as in the training thread: subnormals slow the CPU down
        self.decoder = _decoder_from(snapshot)
        self.snapshot_step = snapshot.step
        if self.selected is not None:
            self.select_example(self.selected)
        if self._last_xy_query is not None:
            self.decode_at(*self._last_xy_query)

    @Slot(object)
    def _on_status(self, ev: Any) -> None:
        if self._stale():
            return
        if ev.status == "paused":
            self._set_state(PAUSED)
            if self._pending_save:
                path, self._pending_save = self._pending_save, None
                self._save_now(path)
                self.control.resume()
        elif ev.status == "resumed":
            self._set_state(TRAINING)
        elif ev.status == "diverged":
            self._set_state(PAUSED)
            if self.trainer is not None:
                # Decode with the rolled-back weights (the last snapshot may predate them, or not exist yet).
                self._install_snapshot(self.trainer.snapshot())
            self.message.emit("error", f"Training paused: {ev.message}")
            self.markers.append((ev.step, "diverged: rolled back"))
            self.markerAdded.emit(ev.step, "diverged: rolled back")

    @Slot(object)
    def _on_change(self, ev: Any) -> None:
        if self._stale():
            return
        text = f"{_NAMES.get(ev.name, ev.name)} {_fmt(ev.old)} → {_fmt(ev.new)}"
        self.markers.append((ev.step, text))
        self.markerAdded.emit(ev.step, text)

    @Slot(str)
    def _on_train_failed(self, text: str) -> None:
        self.message.emit("error", text)

    @Slot()
    def _on_thread_finished(self) -> None:
        ended = self.sender()
        if ended is not None:
            ended.deleteLater()  # its queued signals have all been delivered before this one
            if ended is not self.thread:
                return  # a run that ended after the next one had already started
        self.thread = None
        if self._pending_save and self.trainer is not None:
            path, self._pending_save = self._pending_save, None
            self._save_now(path)
        self._set_state(TRAINED if self.has_model else (IDLE if self.dataset is not None else EMPTY))

    def shutdown(self, timeout_ms: int = 2000) -> bool:
        """Stop training and background jobs; True when everything ended in time."""
        ok = True
        self.tasks.cancel_all()
        if self._umap_task is not None:
            self._umap_task.cancel()
        if self.thread is not None and self.thread.isRunning():
            if self.control is not None:
                self.control.stop()
            ok = self.thread.wait(timeout_ms)
        if ok and self._pending_save and self.trainer is not None:
            # A save asked for while training ran must not be lost by closing.
            path, self._pending_save = self._pending_save, None
            self._save_now(path)
        ok = self.tasks.wait(max(100, timeout_ms // 2)) and ok
        return ok

    # ------------------------------------------------------------- projection
    def set_projection(self, mode: str, dims: tuple[int, int] | None = None) -> None:
        if mode not in ("dims", "pca", "umap"):
            raise ValueError(mode)
        if mode != "umap":
            self._cancel_umap()
        elif self.projection_mode != "umap":
            self._umap_waiting_since = time.monotonic()
        self.projection_mode = mode
        if dims is not None:
            self.projection_dims = (int(dims[0]), int(dims[1]))
        # The last UMAP layout is kept across modes: coming back starts from it.
        self._refresh_map(force_autorange=True)

    @Slot()
    def _refresh_map(self, force_autorange: bool = False) -> None:
        if self.latents is None:
            return
        self._last_map_time = time.monotonic()
        from vae_core import projection as P

        codes = self.latents
        d = codes.shape[1]
        mode = self.projection_mode if d > 2 else "dims"
        autorange = force_autorange or self.xy is None
        self._map_token += 1  # results of earlier background fits are stale now
        if mode == "umap":
            self._start_umap(codes)
            return
        if mode == "dims":
            i, j = self.projection_dims if d > 2 else (0, 1)
            i, j = min(i, d - 1), min(j, d - 1 if d > 1 else 1)  # d = 1: y = 0 (see RawDims)
            if i == j:
                j = (i + 1) % d
            proj = P.RawDims(i, j)
        else:
            proj = P.PCAProjection()
        if len(codes) >= LARGE_MAP:
            self._fit_in_background(proj, codes, autorange)
            return
        xy = proj.fit(codes)
        self._install_projection(proj, xy, _axis_labels(proj), autorange)

    def _fit_in_background(self, proj: Any, codes: np.ndarray, autorange: bool) -> None:
        """Fit a two-dims or PCA map of many codes on a pool thread.

        The fit's index of the layout (for "far from data") takes about 0.1 s
        at 70,000 codes; the GUI thread only draws.  Meanwhile the current
        projection of the same kind places the new codes at once (for two
        latent dims exactly where the new fit puts them, for PCA on the
        previous axes until the new ones arrive).
        """
        token = self._map_token
        cur = self.projection
        quick = None
        if type(cur) is type(proj) and getattr(cur, "is_fitted", False) and cur.dim == codes.shape[1] \
                and getattr(cur, "i", None) == getattr(proj, "i", None) and getattr(cur, "j", None) == getattr(proj, "j", None):
            quick = cur.transform(codes)
            self._show_xy(quick, _axis_labels(cur), autorange)
        exact_quick = quick is not None and isinstance(proj, type(cur)) and hasattr(proj, "i")

        def job(progress, cancelled):
            if quick is not None:
                # Let the GUI thread draw the new points first, without sharing the cores.
                time.sleep(FIT_AFTER_PAINT_S)
            xy = proj.fit(codes, cancel=cancelled)
            return token, proj, xy, autorange and quick is None, exact_quick

        if self._map_task is not None:
            self._map_task.cancel()
        self._map_task = self.tasks.start(job, self._on_map_fitted, self._on_task_failed)

    @Slot(object)
    def _on_map_fitted(self, result: Any) -> None:
        token, proj, xy, autorange, already_shown = result
        if token != self._map_token or self.latents is None or len(self.latents) != len(xy):
            return  # newer codes or another map were asked for meanwhile
        self._map_task = None
        if already_shown and self.xy is not None and len(self.xy) == len(xy):
            # Two latent dims: the points on screen are these already; only the inverse changes.
            self.projection = proj
            self._update_raw_base()
            return
        self._install_projection(proj, xy, _axis_labels(proj), autorange)

    def _show_xy(self, xy: np.ndarray, axis_labels: tuple[str, str], autorange: bool) -> None:
        self.xy = np.asarray(xy, dtype=np.float32)
        self.mapReady.emit({
            "xy": self.xy, "labels": self.labels if self.labels is not None and len(self.labels) == len(self.xy) else None,
            "label_names": self.label_names, "x_label": axis_labels[0], "y_label": axis_labels[1], "autorange": autorange,
        })

    def _install_projection(self, proj: Any, xy: np.ndarray, axis_labels: tuple[str, str], autorange: bool) -> None:
        self.projection = proj
        if hasattr(proj, "base"):
            self._update_raw_base()
        self._show_xy(xy, axis_labels, autorange)

    def _update_raw_base(self) -> None:
        if self.latents is None or not hasattr(self.projection, "base"):
            return
        d = self.latents.shape[1]
        base = np.zeros(d, dtype=np.float32)
        if self.selected is not None and self.selected < len(self.latents):
            base = self.latents[self.selected].astype(np.float32).copy()
        self.projection.base = base

    # ------------------------------------------------------------------- UMAP
    @Slot()
    def warm_umap(self) -> None:
        """Import umap and compile its layout code in the background, once per process.

        Started by the program a moment after its window shows, so that a
        user's first UMAP map does not wait for it.  Nothing is shown unless
        it fails.
        """
        if self._umap_warm is not None:
            return
        self._umap_warm = "warming"

        def job(progress, cancelled):
            from vae_core.projection import warm_umap

            return warm_umap()

        self.tasks.start(job, self._on_umap_warm, self._on_umap_warm_failed)

    @property
    def umap_warm_state(self) -> str | None:
        """None (not started), "warming", "ready" or "failed"."""
        return self._umap_warm

    @Slot(object)
    def _on_umap_warm(self, seconds: Any) -> None:
        self._umap_warm = "ready"

    @Slot(str)
    def _on_umap_warm_failed(self, text: str) -> None:
        # The UMAP map will report the problem if the user asks for one.
        self._umap_warm = "failed"

    def _cancel_umap(self) -> None:
        """Stop the running UMAP fit (between two of its epochs) and hide its progress."""
        if self._umap_task is None:
            return
        self._umap_task.cancel()
        self._umap_cancelled = self._umap_task
        self._umap_task = None
        self._umap_dirty = False
        self._umap_token += 1
        self.projectionProgress.emit(1.0, "")

    def _start_umap(self, codes: np.ndarray) -> None:
        if self._umap_task is not None:
            # Newest codes first: drop the running fit, unless the map has
            # already waited so long for a layout that it had better finish.
            if time.monotonic() - self._umap_waiting_since < UMAP_MAX_WAIT_S:
                self._cancel_umap()
            else:
                self._umap_dirty = True
                return
        from vae_core import projection as P

        # Start from the previous layout of the same examples, so the map
        # moves only as much as the codes did (the fit aligns its result to it).
        init = self._prev_umap if self._prev_umap is not None and len(self._prev_umap) == len(codes) else None
        codes = codes.copy()
        self._umap_dirty = False
        self._umap_token += 1
        token = self._umap_token
        previous = self._umap_cancelled

        def job(progress, cancelled):
            if previous is not None:
                # A cancelled fit stops within one of its epochs: wait for it
                # rather than run two fits at once on the same cores.
                while not previous.finished_event.wait(0.05):
                    if cancelled():
                        raise P.ProjectionCancelled("the projection was cancelled")
            proj = P.UMAPProjection(init=init, random_state=0)
            xy = proj.fit(codes, progress=_every(progress, PROGRESS_INTERVAL_S), cancel=cancelled)
            return token, proj, xy, init is None

        self.projectionProgress.emit(0.0, "UMAP: starting")
        self._umap_task = self.tasks.start(job, self._on_umap_done, self._on_umap_failed, self._on_umap_progress)

    @Slot(float, str)
    def _on_umap_progress(self, fraction: float, text: str) -> None:
        if self._umap_task is not None and self.sender() is self._umap_task.signals:
            self.projectionProgress.emit(fraction, text)

    @Slot(object)
    def _on_umap_done(self, result: Any) -> None:
        token, proj, xy = result[:3]
        first = result[3] if len(result) > 3 else True
        if token != self._umap_token:
            return  # a fit that was cancelled after it had finished
        self._umap_task = None
        self._umap_cancelled = None
        self.projectionProgress.emit(1.0, "")
        if self.projection_mode == "umap" and self.latents is not None and len(xy) == len(self.latents):
            self._prev_umap = np.asarray(xy)
            self._umap_waiting_since = time.monotonic()
            self._map_token += 1
            self._install_projection(proj, xy, ("UMAP 1", "UMAP 2"), autorange=first)
        if self._umap_dirty and self.projection_mode == "umap" and self.latents is not None:
            self._start_umap(self.latents)

    @Slot(str)
    def _on_umap_failed(self, text: str) -> None:
        if self._umap_task is not None and self.sender() is not self._umap_task.signals:
            return  # a cancelled fit's late failure
        self._umap_task = None
        self._umap_dirty = False
        self.projectionProgress.emit(1.0, "")
        self.message.emit("error", f"UMAP failed: {text}")

    # --------------------------------------------------------------- decoding
    def decode_at(self, x: float, y: float) -> None:
        """Turn a map point into a latent code and decode it (GUI thread; about a millisecond)."""
        self._last_xy_query = (x, y)
        if self.decoder is None or self.projection is None:
            return
        import torch

        codes, dist = self.projection.inverse(np.array([[x, y]], dtype=np.float32))
        far = bool(dist[0] > getattr(self.projection, "far_threshold", 3.0))
        with torch.no_grad():
            img = self.decoder.decode(torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32)))[0].numpy()
        self.last_code = codes[0]
        self.decoded.emit(image_for_display(img), float(x), float(y), far)

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Decode (M, d) codes to display images (M, H, W[, 3])."""
        import torch

        with torch.no_grad():
            imgs = self.decoder.decode(torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))).numpy()
        return np.clip(images_for_display(imgs), 0.0, 1.0)

    def select_example(self, index: int) -> None:
        """Show example ``index`` next to its reconstruction (decoded from its mean code)."""
        if self.dataset is None or not (0 <= index < self.dataset.n):
            return
        self.selected = index
        original = image_for_display(self.dataset.images[index])
        recon = None
        if self.decoder is not None:
            import torch

            with torch.no_grad():
                mu, _ = self.decoder.encode(torch.from_numpy(self.dataset.images[index:index + 1]))
                recon = image_for_display(self.decoder.decode(mu)[0].numpy())
        self._update_raw_base()
        self.exampleSelected.emit(index, original, recon)

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str) -> None:
        if self.trainer is None:
            self.message.emit("warning", "There is no trained model to save yet.")
            return
        if self.running and self.control is not None and not self.control.paused:
            # Pause at the next batch boundary, save, then carry on.
            self._pending_save = path
            self.control.pause()
            return
        self._save_now(path)

    def _save_now(self, path: str) -> None:
        from vae_core.checkpoint import save_checkpoint

        try:
            save_checkpoint(self.trainer, path)
        except (VAEError, OSError) as exc:
            self.message.emit("error", f"Could not save {path}: {exc}")
            return
        self.checkpoint_path = path
        self.message.emit("info", f"Saved {path}")
        self.checkpointSaved.emit(path)

    def load_checkpoint(self, path: str) -> None:
        if self.running:
            self.message.emit("warning", "Stop training before opening a checkpoint.")
            return
        self._state_before_load = self.state
        self._set_state(LOADING)

        def job(progress, cancelled):
            from vae_core.checkpoint import load_checkpoint
            from vae_core.data import load_dataset
            from vae_core.errors import DatasetError

            ckpt = load_checkpoint(path)
            model = ckpt.build_model()
            ds, ds_error = None, None
            try:
                ds = load_dataset(ckpt.dataset_spec)
                if tuple(ds.input_shape) != tuple(ckpt.model_config.input_shape):
                    ds_error = (f"the dataset {ds.name} now has images of {_shape_text(ds.input_shape)}, "
                                f"the model expects {_shape_text(ckpt.model_config.input_shape)}")
                    ds = None
            except DatasetError as exc:
                ds_error = str(exc)
            return path, ckpt, model, ds, ds_error

        self.tasks.start(job, self._on_checkpoint_loaded, self._on_checkpoint_failed)

    @Slot(object)
    def _on_checkpoint_loaded(self, result: Any) -> None:
        import torch

        path, ckpt, model, ds, ds_error = result
        shape = tuple(ckpt.model_config.input_shape)
        if ds is None and self.trainer is not None and self.dataset is not None and tuple(self.dataset.input_shape) != shape:
            # It could be neither trained nor shown with its data here: keep the current model rather than drop it.
            self.message.emit("error", f"Cannot open {path}: it is a model of {_shape_text(shape)} images, the loaded "
                                       f"dataset {self.dataset.name} has {_shape_text(self.dataset.input_shape)} images and "
                                       f"the checkpoint's own dataset could not be loaded ({ds_error}). The current model is kept.")
            self._on_checkpoint_failed_state()
            return
        torch.set_num_threads(1)
        self.trainer = None
        self.checkpoint = ckpt
        self.checkpoint_path = path
        self.control = None
        self.model_config = ckpt.model_config
        self.train_config = ckpt.train_config
        self.decoder = model
        self.latents = ckpt.latents
        self.latent_logvar = ckpt.latent_logvar
        self.labels = ckpt.labels
        self.label_names = ckpt.label_names
        self.selected = None
        self._prev_umap = None
        self._cancel_umap()
        if ds is not None:
            self.dataset = ds
            self.datasetLoaded.emit(ds)
        self.buffers = LossBuffers()
        self.markers = []
        self.epoch_points = []
        h = ckpt.history
        arr = h.arrays()
        steps = np.asarray(arr.get("step", np.zeros(0)), dtype=np.float64)
        self.buffers.step.append(steps)
        self.buffers.recon.append(np.asarray(arr.get("recon", np.zeros(0)), dtype=np.float64))
        self.buffers.kl.append(np.asarray(arr.get("kl", np.zeros(0)), dtype=np.float64))
        self.buffers.loss.append(np.asarray(arr.get("loss", np.zeros(0)), dtype=np.float64))
        for e in h.epochs:
            self.epoch_points.append((e["step"], e["test_recon"], e["test_kl"], -e["test_elbo"]))
        for c in h.changes:
            if "name" in c and "old" in c:
                self.markers.append((c["step"], f"{_NAMES.get(c['name'], c['name'])} {_fmt(c['old'])} → {_fmt(c['new'])}"))
            elif "text" in c:
                self.markers.append((c["step"], str(c["text"])))
        self.historyReplaced.emit({
            "steps": self.buffers.step[0], "recon": self.buffers.recon[0], "kl": self.buffers.kl[0],
            "loss": self.buffers.loss[0], "epochs": list(self.epoch_points), "markers": list(self.markers),
        })
        self.modelLoaded.emit(self.model_config.to_dict(), self.train_config.to_dict(), ckpt.dataset_spec)
        self.xy = None
        self._refresh_map(force_autorange=True)
        name = os.path.basename(path)
        msg = f"Opened {name}: {ckpt.epoch} epochs, step {ckpt.step}."
        if ds is None:
            msg += f" Its dataset could not be loaded ({ds_error}); the map shows the stored codes. Open a dataset of the same image size to train further."
            self.message.emit("warning", msg)
        else:
            self.message.emit("info", msg)
        self._set_state(TRAINED)

    @Slot(str)
    def _on_checkpoint_failed(self, text: str) -> None:
        self.message.emit("error", text)
        self._on_checkpoint_failed_state()

    def _on_checkpoint_failed_state(self) -> None:
        prev = getattr(self, "_state_before_load", EMPTY)
        self._set_state(prev if prev != LOADING else (TRAINED if self.has_model else IDLE if self.dataset is not None else EMPTY))

    # ----------------------------------------------------------------- export
    def export_latents_csv(self, path: str) -> None:
        if self.latents is None:
            self.message.emit("warning", "There are no latent codes to export yet.")
            return
        import csv

        d = self.latents.shape[1]
        sigma = np.exp(0.5 * self.latent_logvar) if self.latent_logvar is not None else None
        header = ["index", "label"] + [f"mu_{j + 1}" for j in range(d)]
        if sigma is not None:
            header += [f"sigma_{j + 1}" for j in range(d)]
        xy = self.xy if self.xy is not None and len(self.xy) == len(self.latents) else None
        if xy is not None:
            header += ["map_x", "map_y"]
        tmp = path + ".part"
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                names = self.label_names
                for i in range(len(self.latents)):
                    lab = ""
                    if self.labels is not None and i < len(self.labels):
                        lab = names[self.labels[i]] if names and 0 <= self.labels[i] < len(names) else int(self.labels[i])
                    row = [i, lab] + [f"{v:.6g}" for v in self.latents[i]]
                    if sigma is not None:
                        row += [f"{v:.6g}" for v in sigma[i]]
                    if xy is not None:
                        row += [f"{xy[i, 0]:.6g}", f"{xy[i, 1]:.6g}"]
                    w.writerow(row)
            os.replace(tmp, path)
        except OSError as exc:
            if os.path.exists(tmp):
                os.remove(tmp)
            self.message.emit("error", f"Could not write {path}: {exc}")
            return
        self.message.emit("info", f"Wrote {len(self.latents):,} latent codes to {path}")

    def loss_history(self) -> dict[str, np.ndarray]:
        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0)

        return {"step": cat(self.buffers.step), "recon": cat(self.buffers.recon), "kl": cat(self.buffers.kl), "loss": cat(self.buffers.loss)}


def _decoder_from(snapshot: Any) -> Any:
    """An eval-mode VAE holding the snapshot's weights, built in the GUI thread once per epoch.

    ``snapshot.build_model()`` first draws random initial weights and then
    overwrites them: about 8 ms for the default MLP, repeated every epoch on the
    GUI thread.  Built on the meta device, the modules allocate nothing and
    take the snapshot's tensors as they are (the snapshot is a private copy
    that nobody changes), in about 2 ms and without touching the global RNG.
    """
    import itertools

    import torch

    from vae_core.model import VAE

    with torch.device("meta"):
        model = VAE(snapshot.model_config)
    model.load_state_dict(snapshot.state, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        return snapshot.build_model()  # a tensor the state does not carry: build it the slow way
    return model.eval()


_NAMES = {"beta": "β", "lr": "lr", "warmup": "warm-up", "warmup_epochs": "warm-up epochs", "free_bits": "free bits"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
            return f"{v:.0e}"
        return f"{v:g}"
    return str(v)


def _every(progress: Any, interval_s: float) -> Any:
    """``progress`` called at most once per ``interval_s`` (the first call always goes through).

    A UMAP fit reports after each of its epochs, a few milliseconds apart on
    small maps; every report is a queued signal whose handling in the GUI
    thread waits for the interpreter lock, so unthrottled they crowd out
    everything else the GUI thread has to do.
    """
    last = [-math.inf]

    def report(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - last[0] >= interval_s:
            last[0] = now
            progress(fraction, message)

    return report


def _axis_labels(proj: Any) -> tuple[str, str]:
    """Axis titles of a two-dims or PCA map, 1-based as the program names dims (z1, z2, ...)."""
    if hasattr(proj, "i"):
        return (f"z{proj.i + 1}", f"z{proj.j + 1}")
    evr = getattr(proj, "explained_variance_ratio", None)
    if evr is not None and len(evr) >= 2:
        return (f"PC1 ({100 * evr[0]:.0f}% of variance)", f"PC2 ({100 * evr[1]:.0f}%)")
    return ("PC1", "PC2")


def _shape_text(shape: Any) -> str:
    c, h, w = shape
    kind = "grey" if c == 1 else ("RGB" if c == 3 else f"{c}-channel")
    return f"{h}x{w} {kind}"


def fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
