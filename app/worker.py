"""Every thread the program makes is made here.

* ``TrainThread`` runs the engine's training generator.  Batch events are
  coalesced and emitted a few times per second, epoch events carry a frozen
  snapshot of the weights, so the GUI never touches the model being trained.
* ``run_task`` runs one-shot jobs (loading data, projections, estimates) on a
  small thread pool and reports back through queued signals.

Signals emitted here are connected to slots of QObjects that live in the GUI
thread, so Qt queues them; nothing here calls into widgets.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

from PySide6 import QtCore

Signal = QtCore.Signal


def _set_torch_threads(n: int) -> None:
    if n > 0:
        import torch

        torch.set_num_threads(n)
        torch.set_flush_denormal(True)  # subnormal floats make the CPU up to twice as slow


class TrainThread(QtCore.QThread):
    """Runs ``trainer.run(epochs)`` in its own thread.

    ``factory`` builds the trainer inside the thread (moving data to tensors
    can take a moment); ``trainerReady`` hands the object to the GUI thread,
    which only uses it while no training runs.
    """

    trainerReady = Signal(object)
    batches = Signal(object)  # list of BatchEvent
    epochEnded = Signal(object, object)  # EpochEvent, ModelSnapshot
    statusChanged = Signal(object)  # StatusEvent
    settingChanged = Signal(object)  # ChangeEvent
    failed = Signal(str)

    def __init__(self, factory: Callable[[], Any], epochs: int | None = None, num_threads: int = 1,
                 flush_interval_s: float = 0.1, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._factory = factory
        self._epochs = epochs
        self._threads = num_threads
        self._flush = flush_interval_s
        self.trainer: Any = None

    def run(self) -> None:  # noqa: D401 - Qt's entry point, runs in the new thread
        try:
            _set_torch_threads(self._threads)
            trainer = self._factory()
            self.trainer = trainer
            self.trainerReady.emit(trainer)
            pending: list = []
            last = time.monotonic()
            for ev in trainer.run(self._epochs):
                kind = ev.kind
                if kind == "batch":
                    pending.append(ev)
                    now = time.monotonic()
                    # The epoch's last batch goes out at once: the evaluation that
                    # follows it takes a while and the curves should not wait for it.
                    if now - last >= self._flush or ev.batch == ev.n_batches - 1:
                        self.batches.emit(pending)
                        pending = []
                        last = now
                    continue
                if pending:
                    self.batches.emit(pending)
                    pending = []
                    last = time.monotonic()
                if kind == "epoch":
                    self.epochEnded.emit(ev, trainer.snapshot())
                elif kind == "status":
                    self.statusChanged.emit(ev)
                elif kind == "change":
                    self.settingChanged.emit(ev)
            if pending:
                self.batches.emit(pending)
        except Exception as exc:  # every failure reaches the window as a message
            from vae_core.errors import VAEError

            if isinstance(exc, VAEError):
                self.failed.emit(str(exc))
            else:
                traceback.print_exc()
                self.failed.emit(f"Training failed: {type(exc).__name__}: {exc}")


class _TaskSignals(QtCore.QObject):
    done = Signal(object)
    failed = Signal(str)
    progress = Signal(float, str)


class Task(QtCore.QRunnable):
    """A one-shot job: ``fn(progress, cancelled) -> result``.

    ``progress(fraction, message)`` may be called from the job; ``cancelled()``
    says whether ``cancel()`` was requested.  Results and errors come back
    through ``signals`` (queued to the GUI thread).
    """

    def __init__(self, fn: Callable[..., Any], num_threads: int = 1):
        super().__init__()
        self.setAutoDelete(False)
        self.fn = fn
        self.signals = _TaskSignals()
        self._cancel = threading.Event()
        self._threads = num_threads
        self.finished_event = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:
        try:
            _set_torch_threads(self._threads)
            result = self.fn(self._report, self._cancel.is_set)
            if not self._cancel.is_set():
                self.signals.done.emit(result)
        except Exception as exc:
            from vae_core.errors import VAEError

            if self._cancel.is_set():
                pass
            elif isinstance(exc, VAEError):
                self.signals.failed.emit(str(exc))
            else:
                traceback.print_exc()
                self.signals.failed.emit(f"{type(exc).__name__}: {exc}")
        finally:
            self.finished_event.set()

    def _report(self, fraction: float, message: str = "") -> None:
        self.signals.progress.emit(float(fraction), str(message))


class TaskRunner(QtCore.QObject):
    """A small pool for background jobs; keeps tasks alive until they end."""

    def __init__(self, parent: QtCore.QObject | None = None, max_threads: int = 2):
        super().__init__(parent)
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._tasks: set[Task] = set()

    def start(self, fn: Callable[..., Any], on_done: Callable[[Any], None], on_failed: Callable[[str], None],
              on_progress: Callable[[float, str], None] | None = None) -> Task:
        """Run ``fn`` in the pool.  The callbacks must be slots of QObjects in the GUI thread."""
        task = Task(fn)
        task.signals.done.connect(on_done)
        task.signals.failed.connect(on_failed)
        if on_progress is not None:
            task.signals.progress.connect(on_progress)
        task.signals.done.connect(self._forget)
        task.signals.failed.connect(self._forget)
        self._tasks.add(task)
        self.pool.start(task)
        return task

    @QtCore.Slot(object)
    @QtCore.Slot(str)
    def _forget(self, *_: Any) -> None:
        self._tasks = {t for t in self._tasks if not t.finished_event.is_set()}

    def cancel_all(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    def wait(self, timeout_ms: int) -> bool:
        return self.pool.waitForDone(timeout_ms)
