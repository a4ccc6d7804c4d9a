"""Following a run folder that another process, perhaps on another machine, is writing.

A run folder (``vae_core.runs``) holds ``config.json``, ``events.jsonl`` and
``latest.ckpt``.  ``FollowedRun`` polls one every ``POLL_INTERVAL_MS`` on a
worker thread of its own (the reads are small, but on NFS, sshfs or a synced
folder any of them may block): the events appended since the last poll
become points of the loss curves, held-out epochs and markers
(``RunCurves``, on the worker), and the run's progress (``RunStatus``).  When
``latest.ckpt`` is replaced, the new checkpoint is loaded there too (with its
``Encoder`` and ``Decoder``, and its dataset unless the session already has
it) and handed to ``Session.show_run_checkpoint``, which installs the first
one as File ▸ Open does and shows each newer one as a training epoch is
shown: the map, the decoder and every tool follow it.

The folder is only read.  A folder that cannot be read (gone, unreachable,
events that cannot be opened) is reported once, naming it, and polled on:
the model and the curves stay as they were until it can be read again.
Following ends with ``stop``, or by itself when the model on screen is
replaced by anything else (another checkpoint opened, a reset, training
started here); the last checkpoint stays on screen.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6 import QtCore

from vae_core.errors import VAEError

from ..display import ROLLBACK_MARKER, change_marker
from ..run_folders import RUN_FILES
from ..worker import LatestWins
from .io import LoadedCheckpoint
from .session import PAUSED, TRAINING

if TYPE_CHECKING:
    from vae_core.checkpoint import Checkpoint
    from vae_core.data import Dataset
    from vae_core.runs import RunFollower

    from .session import Session

Signal = QtCore.Signal
Slot = QtCore.Slot

#: The run folder is polled this often.
POLL_INTERVAL_MS = 500


def _number(value: Any) -> float:
    """A JSON number as a float (NaN for null, a string or anything else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _attempt(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or the text of the error it raised (jobs of the worker report their failures as values)."""
    try:
        return fn(*args)
    except (VAEError, OSError) as exc:
        return str(exc)
    except Exception as exc:  # a bug or an unforeseen file: still a message, never a dead follower
        return f"{type(exc).__name__}: {exc}"


def _step(ev: dict[str, Any]) -> int | None:
    value = ev.get("step")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


@dataclass(frozen=True)
class CurvePoints:
    """Points of a followed run's curves, nats per example: batch summaries, held-out epochs and markers."""

    steps: np.ndarray
    recon: np.ndarray
    kl: np.ndarray
    loss: np.ndarray
    wall_s: np.ndarray  # seconds since the run's first event, one per step
    epochs: tuple[tuple[float, float, float, float], ...]  # step, recon, KL, -ELBO (held out)
    markers: tuple[tuple[int, str], ...]

    @classmethod
    def empty(cls) -> "CurvePoints":
        z = np.zeros(0)
        return cls(z, z, z, z, z, (), ())

    @property
    def is_empty(self) -> bool:
        return len(self.steps) == 0 and not self.epochs and not self.markers

    def __add__(self, more: "CurvePoints") -> "CurvePoints":
        """These points followed by ``more``."""
        if self.is_empty:
            return more
        if more.is_empty:
            return self
        cat = np.concatenate
        return CurvePoints(cat([self.steps, more.steps]), cat([self.recon, more.recon]), cat([self.kl, more.kl]),
                           cat([self.loss, more.loss]), cat([self.wall_s, more.wall_s]),
                           self.epochs + more.epochs, self.markers + more.markers)


@dataclass(frozen=True)
class RunStatus:
    """Where a followed run is, from its newest events."""

    status: str | None  # "started", "paused", "resumed", "stopped", "finished", "diverged"; None before any
    message: str
    step: int
    epoch: int  # epochs completed
    batch: int | None  # batches done in the epoch under way, None before the first
    n_batches: int | None
    samples_per_s: float
    newest_time: float | None  # Unix time of the newest event
    world_size: int
    hosts: tuple[str, ...]  # the host of every process of the run

    def describe(self) -> str:
        """"epoch 3, batch 120/469, 2,300 samples/s" or "finished after 10 epochs"."""
        if self.status in ("finished", "stopped", "diverged"):
            return f"{self.status} after {self.epoch} epoch{'s' if self.epoch != 1 else ''}"
        parts = []
        if self.batch is not None and self.n_batches:
            parts.append(f"epoch {self.epoch + 1}, batch {self.batch}/{self.n_batches}")
        else:
            parts.append(f"{self.epoch} epoch{'s' if self.epoch != 1 else ''} done")
        if self.status == "paused":
            parts.append("paused")
        elif math.isfinite(self.samples_per_s) and self.samples_per_s > 0:
            parts.append(f"{self.samples_per_s:,.0f} samples/s")
        return ", ".join(parts)

    def where(self) -> str:
        """"on gpu-node-3, 4 processes" (empty before the run said where it runs)."""
        hosts = sorted(set(self.hosts))
        if not hosts:
            return ""
        on = hosts[0] if len(hosts) == 1 else f"{len(hosts)} machines"
        return f"on {on}, {self.world_size} process{'es' if self.world_size != 1 else ''}"


class RunCurves:
    """A run's curves and status, built from its events as they are read (by one thread at a time).

    ``add(events)`` returns ``(replace, points)``: the points the events
    added, or, when the run went back (its processes were restarted and
    continued from an earlier checkpoint, or the events file was begun
    anew), every point still valid, to be shown in place of what is shown.
    A "started" event at step S marks what was recorded after S as lost.
    """

    def __init__(self) -> None:
        self._t0: float | None = None
        self._cols: list[list[float]] = [[], [], [], [], []]  # steps, recon, KL, loss, wall seconds
        self._epochs: list[tuple[float, float, float, float]] = []
        self._markers: list[tuple[int, str]] = []
        self._status: str | None = None
        self._message = ""
        self._step = 0
        self._epoch = 0
        self._batch: int | None = None
        self._n_batches: int | None = None
        self._rate = math.nan
        self._newest: float | None = None
        self._world_size = 1
        self._hosts: tuple[str, ...] = ()

    @property
    def status(self) -> RunStatus:
        return RunStatus(self._status, self._message, self._step, self._epoch, self._batch, self._n_batches,
                         self._rate, self._newest, self._world_size, self._hosts)

    def all_points(self) -> CurvePoints:
        return self._points(0, 0, 0)

    def _points(self, i: int, e: int, m: int) -> CurvePoints:
        cols = [np.asarray(c[i:], dtype=np.float64) for c in self._cols]
        return CurvePoints(*cols, tuple(self._epochs[e:]), tuple(self._markers[m:]))

    def _drop_after(self, step: int) -> bool:
        """Forget what was recorded after ``step`` (everything for a negative step); True when anything went."""
        steps = self._cols[0]
        keep = len(steps)
        while keep and steps[keep - 1] > step:
            keep -= 1
        epochs = [e for e in self._epochs if e[0] <= step]
        markers = [m for m in self._markers if m[0] <= step]
        dropped = keep < len(steps) or len(epochs) < len(self._epochs) or len(markers) < len(self._markers)
        for col in self._cols:
            del col[keep:]
        self._epochs, self._markers = epochs, markers
        return dropped

    def add(self, events: list[dict[str, Any]]) -> tuple[bool, CurvePoints]:
        start = (len(self._cols[0]), len(self._epochs), len(self._markers))
        replace = False
        for ev in events:
            t = _number(ev.get("time"))
            if math.isfinite(t):
                if self._t0 is None:
                    self._t0 = t
                self._newest = t if self._newest is None else max(self._newest, t)
            step = _step(ev)
            kind = ev.get("kind")
            if kind == "status":
                status = str(ev.get("status", ""))
                if status == "started" and step is not None:
                    # A run that starts from scratch drops everything; one that continues, what followed its checkpoint.
                    replace = self._drop_after(step if step > 0 else -1) or replace
                    self._step = step
                    if isinstance(ev.get("epoch"), int):
                        self._epoch = ev["epoch"]
                    self._batch = self._n_batches = None
                    ranks = ev.get("ranks")
                    if isinstance(ranks, list):
                        self._hosts = tuple(str(r.get("host", "")) for r in ranks if isinstance(r, dict))
                        self._world_size = max(1, len(ranks))
                    restart = ev.get("restart")
                    if isinstance(restart, int) and restart > 0:
                        self._markers.append((step, f"restarted ({restart})"))
                elif status == "diverged" and step is not None:
                    self._markers.append((step, ROLLBACK_MARKER))
                self._status = status or self._status
                self._message = str(ev.get("message") or "")
            elif step is None:
                continue
            elif kind == "batch":
                wall = _number(ev.get("wall_s"))
                if not math.isfinite(wall) and math.isfinite(t) and self._t0 is not None:
                    wall = t - self._t0
                for col, value in zip(self._cols, (step, _number(ev.get("recon")), _number(ev.get("kl")),
                                                   _number(ev.get("loss")), wall)):
                    col.append(float(value))
                self._step = max(self._step, step)
                epoch, batch, n = ev.get("epoch"), ev.get("batch"), ev.get("n_batches")
                if isinstance(epoch, int) and isinstance(batch, int) and isinstance(n, int):
                    self._epoch, self._batch, self._n_batches = epoch, batch + 1, n
                self._rate = _number(ev.get("samples_per_s"))
            elif kind == "epoch":
                self._epochs.append((float(step), _number(ev.get("test_recon")), _number(ev.get("test_kl")),
                                     -_number(ev.get("test_elbo"))))
                epoch = ev.get("epoch")
                if isinstance(epoch, int):
                    self._epoch = epoch
                self._batch = self._n_batches = None
                self._step = max(self._step, step)
            elif kind == "change" and ev.get("name") != "rollback":  # a rollback is shown with its divergence
                self._markers.append((step, change_marker(str(ev.get("name")), ev.get("old"), ev.get("new"))))
        if replace:
            return True, self.all_points()
        return False, self._points(*start)


@dataclass(frozen=True)
class PollResult:
    """What one poll of a run folder found."""

    replace: bool  # ``points`` are every point of the run, to be shown in place of the curves
    points: CurvePoints
    status: RunStatus
    events: int  # events read by this poll
    checkpoint: str | None  # the path of a new latest.ckpt, None when it did not change
    skipped_lines: int  # complete lines of events.jsonl so far that were not JSON objects
    error: str | None = None  # why the folder could not be read; nothing else is set then
    not_a_run: bool = False  # the folder is missing or is no run folder: following it ends


class RunReader:
    """Reads one run folder, poll after poll; every call runs on the follower's worker thread, one at a time."""

    def __init__(self, directory: str) -> None:
        self.directory: str = directory
        self.curves: RunCurves = RunCurves()
        self._follower: RunFollower | None = None

    def _fail(self, text: str, not_a_run: bool = False) -> PollResult:
        return PollResult(False, CurvePoints.empty(), self.curves.status, 0, None, 0, text, not_a_run)

    def poll(self) -> PollResult:
        """The events appended since the last poll, as curve points, and a new checkpoint's path."""
        from vae_core.runs import RunFollower

        d = self.directory
        if not os.path.isdir(d):
            if self._follower is None:
                return self._fail(f"{d} cannot be followed: there is no such folder.", not_a_run=True)
            return self._fail(f"The run folder {d} cannot be found: it was removed or renamed, or the drive "
                              "it is on cannot be reached.")
        if self._follower is None:
            if not any(os.path.isfile(os.path.join(d, name)) for name in RUN_FILES):
                return self._fail(f"{d} is not a run folder: it has neither config.json nor events.jsonl. A run "
                                  "folder is what `vae-explorer train --run-dir DIR` (or training in this "
                                  "window) writes.", not_a_run=True)
            self._follower = RunFollower(d)
        events_path = os.path.join(d, RUN_FILES[1])
        try:
            with open(events_path, "rb"):
                pass  # RunFollower reads nothing from a file it cannot open: say why here
        except FileNotFoundError:
            pass  # not written yet
        except OSError as exc:
            return self._fail(f"Cannot read {events_path}: {exc.strerror or exc}.")
        events, checkpoint = self._follower.poll()
        replace, points = self.curves.add(events)
        return PollResult(replace, points, self.curves.status, len(events),
                          None if checkpoint is None else str(checkpoint), self._follower.skipped_lines)

    def load(self, dataset: "Dataset | None") -> LoadedCheckpoint:
        """Load ``latest.ckpt`` with its models; ``dataset`` is used when the checkpoint was trained on it.

        Raises VAEError or OSError with a message for the user.
        """
        from vae_core.data import load_dataset
        from vae_core.errors import DatasetError
        from vae_core.inference import load_models

        if self._follower is None:
            raise OSError(f"{self.directory} has not been read yet")
        ckpt = self._follower.load_latest()
        encoder, decoder = load_models(ckpt)
        shape = tuple(ckpt.model_config.input_shape)
        ds, error = None, ""
        if dataset is not None and _trained_on(ckpt, dataset):
            ds = dataset
        else:
            try:
                ds = load_dataset(ckpt.dataset_spec)
                if tuple(ds.input_shape) != shape:
                    error = (f"the dataset {ds.name} here has images of another size than the run's model "
                             f"({tuple(ds.input_shape)} against {shape})")
                    ds = None
            except DatasetError as exc:
                error = str(exc)
        return LoadedCheckpoint(str(self._follower.latest_path), ckpt, encoder, decoder, ds, error)


def _trained_on(ckpt: "Checkpoint", dataset: "Dataset") -> bool:
    """The checkpoint was trained on ``dataset``: the same spec, image size and number of examples."""
    spec = dataset.spec.to_dict() if hasattr(dataset.spec, "to_dict") else dict(dataset.spec)
    n = len(ckpt.latents) if ckpt.latents is not None else dataset.n
    return (spec == ckpt.dataset_spec and tuple(dataset.input_shape) == tuple(ckpt.model_config.input_shape)
            and n == dataset.n)


class FollowedRun(QtCore.QObject):
    """Follows one run folder at a time for ``session`` (see the module docstring)."""

    followingChanged = Signal(bool)
    curvesReplaced = Signal(object)  # CurvePoints: every point of the run, in place of what the curves show
    curvesAppended = Signal(object)  # CurvePoints: what the run added since the last poll
    statusChanged = Signal(object)  # RunStatus, after every poll that read events
    checkpointShown = Signal(object)  # the run's Checkpoint now on screen
    waiting = Signal(str)  # the run has no checkpoint yet: the map's text
    readable = Signal(bool)  # the folder could (not) be read, each time that changes
    message = Signal(str, str)  # level, text

    def __init__(self, session: "Session", parent: QtCore.QObject | None = None,
                 poll_interval_ms: int = POLL_INTERVAL_MS) -> None:
        super().__init__(parent)
        self.session: Session = session
        self.directory: str | None = None  # the folder followed now, or last
        self.status: RunStatus | None = None
        self.curves: CurvePoints = CurvePoints.empty()  # every point of the run read so far
        self.shown: Checkpoint | None = None  # the run's checkpoint on screen
        self.error: str | None = None  # why the folder cannot be read now
        self._active = False
        self._gen = 0  # counts follows and stops: replies of an earlier one are dropped
        self._reader: RunReader | None = None
        self._polls = 0
        self._poll_busy = False
        self._skipped = 0
        self._installing = False  # the session's model is being replaced by this follower
        self._worker = LatestWins(self)
        self._worker.done.connect(self._on_done)  # the jobs return their errors as text: they never fail
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(int(poll_interval_ms))
        self._timer.timeout.connect(self.poll)
        session.modelForgotten.connect(self._on_model_forgotten)
        session.stateChanged.connect(self._on_state)

    @property
    def following(self) -> bool:
        return self._active

    @property
    def polls(self) -> int:
        """Polls of the folder followed now that could read it."""
        return self._polls

    @property
    def skipped_lines(self) -> int:
        """Complete lines of the followed run's events that were not JSON objects (and were skipped)."""
        return self._skipped

    def start(self, path: str) -> bool:
        """Follow the run folder at ``path``; False (and a message) when training runs here."""
        if self.session.running:
            self.message.emit("warning", "Stop training before following a run: the window shows one model at a time.")
            return False
        if self._active:
            self._end()
        self._gen += 1
        self.directory = os.path.abspath(os.path.expanduser(path))
        self._reader = RunReader(self.directory)
        self.status = None
        self.curves = CurvePoints.empty()
        self.shown = None
        self.error = None
        self._polls = 0
        self._poll_busy = False
        self._skipped = 0
        self._active = True
        self._timer.start()
        self.followingChanged.emit(True)
        self.poll()
        return True

    def stop(self, reason: str = "") -> None:
        """Stop following; the last checkpoint stays on screen.  ``reason`` (if any) is told to the user."""
        if not self._active:
            return
        self._end()
        if reason:
            self.message.emit("info", f"Stopped following {self.directory}: {reason}.")
        self.followingChanged.emit(False)

    def _end(self) -> None:
        self._active = False
        self._gen += 1
        self._timer.stop()
        self._worker.discard()

    def close(self, timeout_ms: int = 2000) -> bool:
        """Stop following and the worker (the window closes); True when it ended in time."""
        self._end()
        return self._worker.close(timeout_ms)

    # ----------------------------------------------------------------- polling
    @Slot()
    def poll(self) -> None:
        """Read what the run wrote since the last poll (on the worker thread)."""
        if not self._active or self._poll_busy or self._reader is None:
            return
        self._poll_busy = True
        reader, gen = self._reader, self._gen
        self._worker.submit("poll", lambda: (gen, _attempt(reader.poll)))

    def _load(self) -> None:
        reader, gen, dataset = self._reader, self._gen, self.session.dataset
        if reader is not None:
            self._worker.submit("load", lambda: (gen, _attempt(reader.load, dataset)))

    @Slot(str, object)
    def _on_done(self, kind: str, result: tuple[int, Any]) -> None:
        gen, value = result
        if gen != self._gen or not self._active:
            return  # a reply to an earlier follow
        if kind == "poll":
            self._poll_busy = False
            if isinstance(value, str):
                self._set_error(f"Cannot read the run folder {self.directory}: {value}")
            else:
                self._on_polled(value)
        elif isinstance(value, str):
            shown = f"epoch {self.shown.epoch} stays on screen" if self.shown is not None else "nothing is shown yet"
            self.message.emit("warning", f"Could not load the newest checkpoint of {self.directory} ({value}); "
                                         f"{shown}, and the next checkpoint the run writes will be tried.")
        else:
            self._install(value)

    def _set_error(self, text: str | None) -> None:
        before, self.error = self.error, text
        if text is not None and before is None:
            self.message.emit("error", f"{text} Still following: the model and the curves stay as they are "
                                       "until the folder can be read again.")
            self.readable.emit(False)
        elif text is None and before is not None:
            self.message.emit("info", f"The run folder {self.directory} can be read again.")
            self.readable.emit(True)

    def _on_polled(self, r: PollResult) -> None:
        if r.not_a_run:
            self.message.emit("error", r.error or "")
            self.stop()
            return
        self._set_error(r.error)
        if r.error is not None:
            return
        first = self._polls == 0
        self._polls += 1
        if r.skipped_lines > self._skipped:
            self.message.emit("warning", f"{r.skipped_lines - self._skipped} line(s) of {self.directory}/events.jsonl "
                                         "could not be read and were skipped; the curves miss what they held.")
            self._skipped = r.skipped_lines
        if first:
            # The run's curves replace the model on screen; its checkpoint follows when loaded.
            self._installing = True
            try:
                self.session.reset()
            finally:
                self._installing = False
            name = os.path.basename(self.directory)
            self.waiting.emit(f"Waiting for the first checkpoint of {name} (the run writes one after every epoch)…"
                              if r.checkpoint is None else f"Loading the newest checkpoint of {name}…")
        if r.replace or first:
            self.curves = r.points
            self.curvesReplaced.emit(r.points)
        elif not r.points.is_empty:
            self.curves = self.curves + r.points
            self.curvesAppended.emit(r.points)
        if r.events or first:
            self.status = r.status
            self.statusChanged.emit(r.status)
        if r.checkpoint is not None:
            self._load()

    def _install(self, loaded: LoadedCheckpoint) -> None:
        s = self.session
        self._installing = True
        try:
            replaced = s.show_run_checkpoint(loaded)
        finally:
            self._installing = False
        if s.checkpoint is not loaded.checkpoint:
            return  # the session could not show it and kept its model (it said why)
        self.shown = loaded.checkpoint
        if replaced:
            self.curvesReplaced.emit(self.curves)  # the checkpoint's own history gives way to the run's events
        self.checkpointShown.emit(loaded.checkpoint)

    # ----------------------------------------------------------------- session
    @Slot()
    def _on_model_forgotten(self) -> None:
        if self._active and not self._installing:
            self.stop("another model replaced the run's on screen")

    @Slot(str)
    def _on_state(self, state: str) -> None:
        if self._active and state in (TRAINING, PAUSED):
            self.stop("training started in this window")
