"""Autosave while training, and the offer to restore after a crash.

While a model trains, a recovery checkpoint of it is written every
``AUTOSAVE_SECONDS`` or every ``AUTOSAVE_EPOCHS`` epochs, whichever comes
first, to ``<data dir>/recovery/autosave-<id>.ckpt``.  The training thread
writes it itself, between two batches or right after an epoch (see
``Trainer.boundary_hook``), so the save never races the optimizer and the GUI
thread never waits for it.  Files are written atomically by
``vae_core.checkpoint.save_checkpoint``.

The file goes away when the user saves the model or resets it, and when the
window closes after the user saved or discarded the unsaved training (the
window asks; see ``discard_own``).  It stays, brought up to date, when the
window is closed without asking (Ctrl+C, SIGTERM) with unsaved training and,
of course, when the process dies.  Each window holds an advisory lock on
``autosave-<id>.lock`` while it lives; a recovery file whose lock nobody holds
belongs to a program that is gone, and a new window offers to restore it
(non-modal, in the message bar: Restore / Discard).  A note next to it,
``autosave-<id>.json``, says how the window showed the model (map mode and
axes, epochs to train) and, when the window closed, that it did (with training
running or not): the offer then says so instead of "did not close properly",
and a restored model comes back with the window's settings.

The data directory is ``$LATENT_EXPLORER_DATA_DIR`` when set, else, once the
program's entry point has called ``use_user_data_dir()``, the user's generic
data location (``~/.local/share/latent-explorer`` on Linux).  Without either
(a window made by a script, a test or a benchmark) there is no autosave and no
offer, so such windows never touch the user's files.
``LATENT_EXPLORER_AUTOSAVE_SECONDS`` and ``LATENT_EXPLORER_AUTOSAVE_EPOCHS``
override the intervals.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import re
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6 import QtCore

from .session import LOADING

if TYPE_CHECKING:
    from vae_core.training import Trainer

    from .main_window import MainWindow

Slot = QtCore.Slot

ENV_DATA_DIR = "LATENT_EXPLORER_DATA_DIR"
ENV_SECONDS = "LATENT_EXPLORER_AUTOSAVE_SECONDS"
ENV_EPOCHS = "LATENT_EXPLORER_AUTOSAVE_EPOCHS"
AUTOSAVE_SECONDS = 120.0
AUTOSAVE_EPOCHS = 10

_PREFIX = "autosave-"
_NAME = re.compile(r"^autosave-(?P<id>[0-9]+-[0-9]+)\.ckpt$")
_NOTE = re.compile(r"^autosave-(?P<id>[0-9]+-[0-9]+)\.json$")
#: How the window closed, as the note says it.
CLOSED_TRAINING = "closed while training"
CLOSED = "closed"
# save_checkpoint writes ".<name>.<random>.tmp" next to the file first.
_TEMP = re.compile(r"^\.autosave-(?P<id>[0-9]+-[0-9]+)\.ckpt\..*\.tmp$")
_ids = itertools.count(1)

try:  # POSIX: an flock is dropped by the kernel when its process dies, even on kill -9
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _now() -> float:
    return time.monotonic()


_use_user_data_dir = False


def use_user_data_dir(on: bool = True) -> None:
    """Let windows keep recovery files in the user's data location (the program's entry point does this)."""
    global _use_user_data_dir
    _use_user_data_dir = on


def data_dir() -> Path | None:
    """Where the program keeps per-user data (recovery files); None when it keeps none."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env)
    if not _use_user_data_dir:
        return None
    base = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.GenericDataLocation)
    if not base:
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "latent-explorer"


def recovery_dir() -> Path | None:
    d = data_dir()
    return None if d is None else d / "recovery"


def _env_number(name: str, default: float, cast: Callable[[str], Any]) -> Any:
    try:
        value = cast(os.environ[name])
    except (KeyError, ValueError):
        return default
    return value if value > 0 else default


# ---------------------------------------------------------------------------
# Locks: "is the program that wrote this file still running?"
# ---------------------------------------------------------------------------


class _OwnerLock:
    """An exclusive advisory lock on ``path`` held for as long as this object lives."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a+")
        if fcntl is not None:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._f is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            self._f.close()
        finally:
            self._f = None
        try:
            self.path.unlink()
        except OSError:
            pass


def _owner_alive(lock_path: Path) -> bool:
    """True when a running program holds ``lock_path``."""
    if not lock_path.exists():
        return False
    if fcntl is None:  # pragma: no cover - Windows: an open file cannot be removed
        try:
            lock_path.unlink()
        except PermissionError:
            return True
        except OSError:
            pass
        return False
    try:
        f = open(lock_path, "a+")
    except OSError:
        return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False
    finally:
        f.close()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def note_path(path: Path) -> Path:
    """The note that goes with the recovery file ``path``."""
    return path.with_suffix(".json")


def read_note(path: Path) -> dict[str, Any]:
    """The note of the recovery file ``path`` ({} when there is none or it cannot be read)."""
    try:
        note = json.loads(note_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _write_note(path: Path, note: dict[str, Any]) -> None:
    """Write the note of the recovery file ``path`` (atomically: a temporary file, then a rename)."""
    target = note_path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(note), encoding="utf-8")
    os.replace(tmp, target)


def _remove_with_note(path: Path) -> None:
    _remove(path)
    _remove(note_path(path))


def find_orphans(directory: Path | None = None) -> list[Path]:
    """Recovery files left by programs that are no longer running, newest first.

    Temporary files of interrupted saves and stale locks of those programs are removed.
    """
    directory = recovery_dir() if directory is None else directory
    if directory is None:
        return []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    alive: dict[str, bool] = {}

    def is_alive(ident: str) -> bool:
        if ident not in alive:
            alive[ident] = _owner_alive(directory / f"{_PREFIX}{ident}.lock")
        return alive[ident]

    found = []
    for name in names:
        m = _TEMP.match(name)
        if m and not is_alive(m["id"]):
            _remove(directory / name)
            continue
        m = _NAME.match(name)
        if m and not is_alive(m["id"]):
            found.append(directory / name)
            continue
        m = _NOTE.match(name)
        if m and not is_alive(m["id"]) and not (directory / f"{_PREFIX}{m['id']}.ckpt").exists():
            _remove(directory / name)
    for name in names:
        if name.startswith(_PREFIX) and name.endswith(".lock"):
            ident = name[len(_PREFIX):-len(".lock")]
            if not is_alive(ident) and not (directory / f"{_PREFIX}{ident}.ckpt").exists():
                _remove(directory / name)

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=mtime, reverse=True)


def describe(path: Path) -> str:
    """A short description from a checkpoint's header only (the tensors are not read)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 64 * 1024 * 1024:
                raise ValueError("no header")
            header = json.loads(f.read(n))
        meta = json.loads(header["__metadata__"]["latent_explorer"])
        name = meta.get("dataset", {}).get("name") or "?"
        d = meta.get("model_config", {}).get("latent_dim", "?")
        when = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        return (f"a model of {name} with {d} latent dims, {int(meta['epoch'])} epochs "
                f"(step {int(meta['step']):,}), saved {when}")
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name} (its header could not be read)"


# ---------------------------------------------------------------------------
# The autosave of one window
# ---------------------------------------------------------------------------


class Recovery(QtCore.QObject):
    """Keeps the recovery checkpoint of one window's session and offers orphans back."""

    saved = QtCore.Signal(str)  # emitted from the training thread after a recovery write
    failed = QtCore.Signal(str)  # emitted from the training thread when a write fails

    def __init__(self, window: "MainWindow", directory: Path | None = None, every_seconds: float | None = None,
                 every_epochs: int | None = None):
        super().__init__(window)
        self.window = window
        self.session = window.session
        directory = recovery_dir() if directory is None else Path(directory)
        #: False when there is nowhere to keep recovery files: then nothing is saved or offered.
        self.enabled = directory is not None
        self.directory = directory if directory is not None else Path(os.devnull)
        self.every_seconds = float(every_seconds if every_seconds is not None
                                   else _env_number(ENV_SECONDS, AUTOSAVE_SECONDS, float))
        self.every_epochs = int(every_epochs if every_epochs is not None
                                else _env_number(ENV_EPOCHS, AUTOSAVE_EPOCHS, int))
        self.ident = f"{os.getpid()}-{next(_ids)}"
        self.path = self.directory / f"{_PREFIX}{self.ident}.ckpt"
        self._lock_path = self.directory / f"{_PREFIX}{self.ident}.lock"
        self._owner: _OwnerLock | None = None
        self._lock = threading.Lock()  # one writer or remover of our files at a time
        self._closed = False
        self._failing = False
        # Progress bookkeeping of the trainer being watched (touched by the training thread).
        self._trainer_ref: weakref.ref[Trainer] | None = None
        self._clean_step = -1  # the step the user last saved (nothing to recover there)
        self._last_time = 0.0
        self._last_epoch = 0
        self._retired: weakref.WeakSet = weakref.WeakSet()  # trainers of forgotten models
        self._orphans: list[Path] = []
        self._offered: Path | None = None
        self._adopted: Path | None = None  # a restored orphan, removed once superseded
        self._adopted_lock: _OwnerLock | None = None
        self._restoring: tuple[Path, _OwnerLock | None] | None = None  # an orphan on its way to being restored
        self._restore_waiting = False
        #: How the window shows the model (``MainWindow.view_state``), written into the note with every copy.
        #: Replaced as a whole in the GUI thread, read by the training thread.
        self._view_state: dict[str, Any] = {}

        if self.enabled:
            self.session.boundary_hook = self.on_boundary
        self.session.checkpointSaved.connect(self._on_user_saved)
        self.session.modelForgotten.connect(self._on_model_forgotten)
        self.session.modelLoaded.connect(self._on_model_loaded)
        self.failed.connect(self._on_failed)
        self.session.stateChanged.connect(self._refresh_view_state)
        window.map_toolbar.changed.connect(self._refresh_view_state)

    # ------------------------------------------------------- training thread
    def on_boundary(self, trainer: "Trainer", epoch_end: bool) -> None:
        """Called by the training thread between batches and after epochs; saves when due."""
        if self._closed or not self.enabled:
            return
        now = _now()
        current = self._trainer_ref() if self._trainer_ref is not None else None
        if current is not trainer:
            if trainer in self._retired:
                return
            # A new run: its starting point is either fresh or a saved checkpoint.
            self._trainer_ref = weakref.ref(trainer)
            self._last_time = now
            self._last_epoch = trainer.epoch
            self._clean_step = trainer.step
            return
        due = (epoch_end and trainer.epoch - self._last_epoch >= self.every_epochs) or (
            now - self._last_time >= self.every_seconds)
        if not due:
            return
        if trainer.step == self._clean_step:
            self._last_time, self._last_epoch = now, trainer.epoch
            return
        self._write(trainer)

    def _write(self, trainer: "Trainer") -> bool:
        from vae_core.checkpoint import save_checkpoint
        from vae_core.errors import VAEError

        with self._lock:
            if self._closed or trainer in self._retired:
                return False
            try:
                self._ensure_owner()
                save_checkpoint(trainer, self.path)
                _write_note(self.path, dict(self._view_state))
            except (VAEError, OSError) as exc:
                if not self._failing:
                    self._failing = True
                    self.failed.emit(f"Could not write the recovery copy of the model to {self.path}: {exc}")
                self._last_time = _now()
                return False
            self._failing = False
            self._last_time = _now()
            self._last_epoch = trainer.epoch
            self._drop_adopted()
        self.saved.emit(str(self.path))
        return True

    def _ensure_owner(self) -> None:
        if self._owner is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._owner = _OwnerLock(self._lock_path)

    def _drop_adopted(self) -> None:
        if self._adopted is not None:
            _remove_with_note(self._adopted)
            self._adopted = None
        if self._adopted_lock is not None:
            self._adopted_lock.release()
            self._adopted_lock = None

    # ------------------------------------------------------------ GUI thread
    @Slot()
    @Slot(str)
    @Slot(str, int, int)
    def _refresh_view_state(self, *_: Any) -> None:
        self._view_state = self.window.view_state()

    @Slot(str)
    def _on_user_saved(self, path: str) -> None:
        trainer = self.session.trainer
        with self._lock:
            _remove_with_note(self.path)
            self._drop_adopted()
            if trainer is not None:
                self._trainer_ref = weakref.ref(trainer)
                self._clean_step = trainer.step
                self._last_time = _now()
                self._last_epoch = trainer.epoch

    @Slot()
    def _on_model_forgotten(self) -> None:
        trainer = self.session.trainer
        with self._lock:
            if trainer is not None:
                self._retired.add(trainer)
            self._trainer_ref = None
            _remove_with_note(self.path)
            self._drop_adopted()

    @Slot(str)
    def _on_failed(self, text: str) -> None:
        self.window.show_message("warning", text)

    def discard_own(self) -> None:
        """Nothing unsaved is to be kept (the user saved or discarded it, and the window closes): no recovery copy stays."""
        with self._lock:
            self._closed = True
            _remove_with_note(self.path)
            self._drop_adopted()

    def close(self, was_training: bool = False) -> None:
        """The window closes: keep an up-to-date recovery copy of unsaved training, then let go of it.

        Call after training has stopped; ``was_training``: it ran when the
        window began to close.  The copy stays for the next launch, with a
        note saying that the window closed.
        """
        trainer = self.session.trainer
        reason = CLOSED_TRAINING if was_training else CLOSED
        if (self.enabled and not self._closed and trainer is not None and not self.session.running
                and trainer not in self._retired and self.session.unsaved and self._write(trainer)):
            self._add_to_note(self.path, reason)
        elif not self._closed and trainer is None and self._adopted is not None and self.session.unsaved:
            self._add_to_note(self._adopted, reason)  # a restored copy, not trained on: it stays as it is
        with self._lock:
            self._closed = True
            if self._owner is not None:
                self._owner.release()
                self._owner = None
            if self._adopted_lock is not None:
                self._adopted_lock.release()
                self._adopted_lock = None
            self._release_restoring()

    # ---------------------------------------------------------------- offer
    def offer(self) -> bool:
        """Offer the newest recovery file of a program that is gone; False when there is none."""
        if not self.enabled:
            return False
        self._orphans = find_orphans(self.directory)
        if not self._orphans:
            return False
        self._show_offer(self._orphans[0])
        return True

    @staticmethod
    def _add_to_note(path: Path, reason: str) -> None:
        try:
            _write_note(path, {**read_note(path), "closed": reason})
        except OSError:
            pass  # the offer then says less about how the window closed

    def _show_offer(self, path: Path, note: str = "") -> None:
        self._offered = path
        more = len(self._orphans) - 1
        closed = read_note(path).get("closed")
        if closed == CLOSED_TRAINING:
            what = "Training was stopped when the window closed last time"
        elif closed == CLOSED:
            what = "The window was closed with unsaved training last time"
        else:
            what = "Latent Explorer did not close properly last time"
        text = (f"{note}{what}. A recovery copy of the unsaved training is kept: {describe(path)}. Restore it?"
                + (f" ({more} more after this one.)" if more > 0 else ""))
        self.window.message_bar.show_message("warning", text, actions=[
            ("restoreRecoveryButton", "Restore", self.restore),
            ("discardRecoveryButton", "Discard", self.discard),
        ])

    @Slot()
    def restore(self) -> None:
        path = self._offered
        if path is None:
            return
        if self.session.running:
            self._show_offer(path, "Stop training first, then restore. ")
            return
        if self.session.state == LOADING:
            # Something is loading: restore once it is done, so the two cannot overwrite each other.
            if not self._restore_waiting:
                self._restore_waiting = True
                self.session.stateChanged.connect(self._restore_when_idle)
            return
        if not path.exists():
            self.window.show_message("error", f"The recovery file {path} is gone.")
            return
        ident = _NAME.match(path.name)["id"] if _NAME.match(path.name) else None
        lock = None
        if ident is not None and ident != self.ident:
            try:
                lock = _OwnerLock(self.directory / f"{_PREFIX}{ident}.lock")
            except OSError:
                lock = None
        # Adopted once loaded: the model it replaces is forgotten first, with that model's files.
        self._release_restoring()
        self._restoring = (path, lock)
        self._orphans = [p for p in self._orphans if p != path]
        self._offered = None
        self.window.message_bar.hide()
        self.session.load_checkpoint(str(path))

    @Slot(str)
    def _restore_when_idle(self, state: str) -> None:
        if state == LOADING:
            return
        self._restore_waiting = False
        self.session.stateChanged.disconnect(self._restore_when_idle)
        self.restore()

    def _release_restoring(self) -> None:
        if self._restoring is not None and self._restoring[1] is not None:
            self._restoring[1].release()
        self._restoring = None

    @Slot(object, object, object)
    def _on_model_loaded(self, *_: Any) -> None:
        if self._restoring is not None and self.session.checkpoint_path == str(self._restoring[0]):
            self._adopted, self._adopted_lock = self._restoring
            self._restoring = None
            # A restored copy has no file of its own: Save must ask where to put it, and it is unsaved.
            self.session.forget_file()
            QtCore.QTimer.singleShot(0, self._announce_restored)

    @Slot()
    def _announce_restored(self) -> None:
        ck = self.session.checkpoint
        if self._adopted is not None:
            self.window.apply_view_state(read_note(self._adopted))
        if ck is not None:
            self.window.show_message("info", f"Restored the unsaved model: {ck.epoch} epochs, step {ck.step:,}. "
                                            "Press Continue training to go on, or save it with Ctrl+S after training.")

    @Slot()
    def discard(self) -> None:
        path = self._offered
        self._offered = None
        if path is not None:
            _remove_with_note(path)
            self._orphans = [p for p in self._orphans if p != path]
        if self._orphans:
            self._show_offer(self._orphans[0])
        else:
            self.window.message_bar.hide()
            self.window.show_message("info", "Discarded the recovery copy.")


def install(window: "MainWindow") -> Recovery:
    """Autosave for ``window``'s session, and the offer of any recovery file a crashed program left behind."""
    rec = Recovery(window)
    rec.offer()
    return rec
