"""Every thread the program makes is made here.

* ``TrainThread`` runs the engine's training generator.  Batch events are
  coalesced and emitted a few times per second; after each epoch (and after a
  divergence was rolled back) it builds the ``Encoder`` and ``Decoder`` of the
  new weights itself, so the GUI never touches the model being trained and
  never builds one.
* ``TaskRunner`` runs one-shot jobs (loading data, projections, encoding,
  estimates) on a small thread pool and reports back through queued signals.
* ``LatestWins`` runs short requests (decode the point under the cursor,
  encode the selected example, decode a tool's grid) one after another on a
  thread of its own; a request waiting there is replaced by a newer one of
  the same kind, so what is shown follows the newest request however fast
  they come.

Signals emitted here are connected to slots of QObjects that live in the GUI
thread, so Qt queues them; nothing here calls into widgets.  Every thread
sets its own torch thread count through ``vae_core.inference.configure_thread``
(torch's count is per thread), imported when the thread starts.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from PySide6 import QtCore

Signal = QtCore.Signal


def _configure(num_threads: int) -> None:
    from vae_core.inference import configure_thread

    configure_thread(num_threads)


def _failure_text(exc: Exception, prefix: str = "") -> str:
    """A VAEError's message as it is; anything else with its type (and the traceback printed)."""
    from vae_core.errors import VAEError

    if isinstance(exc, VAEError):
        return str(exc)
    traceback.print_exc()
    return f"{prefix}{type(exc).__name__}: {exc}"


class TrainThread(QtCore.QThread):
    """Runs ``trainer.run(epochs)`` in its own thread.

    ``factory`` builds the trainer inside the thread (moving data to tensors
    can take a moment); ``trainerReady`` hands the object to the GUI thread,
    which only uses it while no training runs.  ``modelsReady`` carries an
    ``(Encoder, Decoder)`` pair of the weights at the end of each epoch, just
    before that epoch's ``epochEnded``, and of the rolled-back weights right
    after a "diverged" status.
    """

    trainerReady = Signal(object)
    batches = Signal(object)  # list of BatchEvent
    modelsReady = Signal(object)  # (Encoder, Decoder)
    epochEnded = Signal(object)  # EpochEvent
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
        self._run_dir: str | None = None
        self._resumed_from: str | None = None

    def record_to(self, directory: str, resumed_from: str | None = None) -> None:
        """Also write the run folder ``directory`` from this thread (``app.run_folders.RunRecorder``); before start().

        A folder that cannot be written is reported through ``failed`` and the training goes on.
        """
        self._run_dir, self._resumed_from = directory, resumed_from

    def run(self) -> None:  # noqa: D401 - Qt's entry point, runs in the new thread
        try:
            _configure(self._threads)
            from vae_core.inference import load_models

            trainer = self._factory()
            self.trainerReady.emit(trainer)
            pending: list = []
            last = time.monotonic()
            events = trainer.run(self._epochs)
            if self._run_dir is not None:
                from .run_folders import RunRecorder

                events = RunRecorder(self._run_dir, trainer, self._resumed_from, self.failed.emit).recorded(events)
            for ev in events:
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
                    self.modelsReady.emit(load_models(trainer.snapshot()))
                    self.epochEnded.emit(ev)
                elif kind == "status":
                    if ev.status == "diverged":
                        # The rolled-back weights reach the window before the pause does, so that
                        # whatever the paused window decodes comes from them.
                        self.modelsReady.emit(load_models(trainer.snapshot()))
                    self.statusChanged.emit(ev)
                elif kind == "change":
                    self.settingChanged.emit(ev)
            if pending:
                self.batches.emit(pending)
        except Exception as exc:  # every failure reaches the window as a message
            self.failed.emit(_failure_text(exc, "Training failed: "))


@dataclass(frozen=True)
class Reply:
    """What a ``Tagged`` job returns: the request's token and either its value or the error message."""

    token: int
    value: Any = None
    error: str | None = None


class Tagged:
    """A task job that returns ``Reply(token, fn(...))``, or ``Reply(token, error=message)`` when ``fn`` raises.

    The receiver compares ``token`` with its newest request's and drops
    replies of older ones, results and failures alike.  A cancelled job's
    exception is left to the task, which reports nothing.
    """

    def __init__(self, token: int, fn: Callable[[Any, Callable[[], bool]], Any]):
        self.token = token
        self.fn = fn

    def __call__(self, progress: Any, cancelled: Callable[[], bool]) -> Reply:
        try:
            return Reply(self.token, self.fn(progress, cancelled))
        except Exception as exc:
            if cancelled():
                raise
            return Reply(self.token, error=_failure_text(exc))


class _TaskSignals(QtCore.QObject):
    done = Signal(object)
    failed = Signal(str)
    progress = Signal(float, str)


class Task(QtCore.QRunnable):
    """A one-shot job: ``fn(progress, cancelled) -> result``.

    ``progress(fraction, message)`` may be called from the job; ``cancelled()``
    says whether ``cancel()`` was requested.  Results and errors come back
    through ``signals`` (queued to the GUI thread); a cancelled job reports
    nothing.
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
            _configure(self._threads)
            result = self.fn(self._report, self._cancel.is_set)
            if not self._cancel.is_set():
                self.signals.done.emit(result)
        except Exception as exc:
            if not self._cancel.is_set():
                self.signals.failed.emit(_failure_text(exc))
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
        self._closed = False  # cancel_all was called: the owner is shutting down

    def start(self, fn: Callable[..., Any], on_done: Callable[[Any], None], on_failed: Callable[[str], None],
              on_progress: Callable[[float, str], None] | None = None) -> Task:
        """Run ``fn(progress, cancelled)`` in the pool.  The callbacks must be slots of QObjects in the GUI thread.

        After ``cancel_all`` the job is not run: the task comes back cancelled
        (a queued signal delivered while the owner shuts down must not start
        work that would outlive it).
        """
        task = Task(fn)
        if self._closed:
            task.cancel()
            task.finished_event.set()
            return task
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
        """Cancel every job, and run no job started from now on (the owner is shutting down)."""
        self._closed = True
        for t in list(self._tasks):
            t.cancel()

    def wait(self, timeout_ms: int) -> bool:
        return self.pool.waitForDone(timeout_ms)


class _Drain(QtCore.QRunnable):
    def __init__(self, owner: "LatestWins"):
        super().__init__()
        self._owner = owner

    def run(self) -> None:
        self._owner._drain()


class LatestWins(QtCore.QObject):
    """Short requests of a few kinds, run one at a time on a thread of their own, newest first.

    ``submit(kind, fn)`` queues ``fn()``; a request of the same kind still
    waiting is dropped (the one running finishes).  Kinds take turns in the
    order they were asked for.  ``done(kind, result)`` and
    ``failed(kind, text)`` arrive in the GUI thread.  The thread is kept
    while requests keep coming and ends after a while without any.
    """

    done = Signal(str, object)
    failed = Signal(str, str)

    def __init__(self, parent: QtCore.QObject | None = None, num_threads: int = 1):
        super().__init__(parent)
        self._pool = QtCore.QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._threads = num_threads
        self._lock = threading.Lock()
        self._pending: dict[str, Callable[[], Any]] = {}
        self._draining = False
        self._closed = False

    def submit(self, kind: str, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` after the request running now, in place of any waiting request of ``kind``."""
        with self._lock:
            if self._closed:
                return
            self._pending.pop(kind, None)  # the newest request of a kind goes to the back of the line
            self._pending[kind] = fn
            if self._draining:
                return
            self._draining = True
        self._pool.start(_Drain(self))

    def discard(self, kind: str | None = None) -> None:
        """Drop the waiting request of ``kind`` (all kinds when None); one running still reports."""
        with self._lock:
            if kind is None:
                self._pending.clear()
            else:
                self._pending.pop(kind, None)

    def close(self, timeout_ms: int = 2000) -> bool:
        """Drop waiting requests, take no more and wait for the running one; True when it ended in time."""
        with self._lock:
            self._closed = True
            self._pending.clear()
        return self._pool.waitForDone(timeout_ms)

    def _drain(self) -> None:
        _configure(self._threads)
        while True:
            with self._lock:
                if not self._pending or self._closed:
                    self._draining = False
                    return
                kind = next(iter(self._pending))
                fn = self._pending.pop(kind)
            try:
                result = fn()
            except Exception as exc:
                self.failed.emit(kind, _failure_text(exc))
            else:
                self.done.emit(kind, result)
