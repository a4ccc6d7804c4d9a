"""The session's logic with a fake training thread, a fake task pool and a fake decoding worker.

No thread is started: the fakes record what the session asks for and the
tests decide when (and in which order) the answers come back, as the real
threads' queued signals would deliver them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
from PySide6 import QtCore

from app.session import EMPTY, IDLE, LOADING, PAUSED, TRAINED, TRAINING, MapView, Session
from app.session.io import LoadedCheckpoint
from app.worker import Reply

Signal = QtCore.Signal


# ---------------------------------------------------------------- the fakes
class FakeTask:
    def __init__(self, fn, on_done, on_failed, on_progress):
        self.fn, self.on_done, self.on_failed, self.on_progress = fn, on_done, on_failed, on_progress
        self.cancelled = False
        self.finished_event = threading.Event()

    def cancel(self) -> None:
        self.cancelled = True


class FakeTasks:
    """Records jobs; ``finish`` runs one in the test's thread and reports as the pool would."""

    def __init__(self):
        self.started: list[FakeTask] = []

    def start(self, fn, on_done, on_failed, on_progress=None) -> FakeTask:
        task = FakeTask(fn, on_done, on_failed, on_progress)
        self.started.append(task)
        return task

    def pending(self) -> list[FakeTask]:
        return [t for t in self.started if not t.finished_event.is_set()]

    def finish(self, task: FakeTask, deliver_even_if_cancelled: bool = False) -> None:
        """Run ``task``; a cancelled task reports nothing (as Task does).

        ``deliver_even_if_cancelled``: the job had finished before it was
        cancelled (it ran as if nothing happened, its reply is on its way).
        """
        late = deliver_even_if_cancelled
        try:
            result = task.fn(lambda *_: None, (lambda: False) if late else (lambda: task.cancelled))
        except Exception:
            if not task.cancelled:
                raise
            result = None
        task.finished_event.set()
        if task.cancelled and not late:
            return
        task.on_done(result)

    def answer(self, task: FakeTask, value: Any = None, error: str | None = None,
               deliver_even_if_cancelled: bool = False) -> None:
        """Finish a ``Tagged`` job as if it had returned ``value`` (or failed with ``error``)."""
        token = task.fn.token
        task.fn = lambda progress, cancelled: Reply(token, value, error)
        self.finish(task, deliver_even_if_cancelled)

    def finish_all(self) -> None:
        while self.pending():
            self.finish(self.pending()[0])

    def cancel_all(self) -> None:
        for t in self.started:
            t.cancel()

    def wait(self, timeout_ms: int) -> bool:
        return True


class FakeDecoding(QtCore.QObject):
    """The LatestWins interface: the newest request of each kind waits until ``run_all``."""

    done = Signal(str, object)
    failed = Signal(str, str)

    def __init__(self):
        super().__init__()
        self.waiting: dict[str, Callable[[], Any]] = {}
        self.submitted: list[str] = []

    def submit(self, kind: str, fn: Callable[[], Any]) -> None:
        self.waiting.pop(kind, None)
        self.waiting[kind] = fn
        self.submitted.append(kind)

    def discard(self, kind: str | None = None) -> None:
        if kind is None:
            self.waiting.clear()
        else:
            self.waiting.pop(kind, None)

    def take(self) -> list[tuple[str, Any]]:
        """Run the waiting requests now and return their results without delivering them."""
        out = [(kind, fn()) for kind, fn in self.waiting.items()]
        self.waiting.clear()
        return out

    def run_all(self) -> None:
        for kind, result in self.take():
            self.done.emit(kind, result)

    def close(self, timeout_ms: int = 2000) -> bool:
        self.waiting.clear()
        return True


class FakeThread(QtCore.QObject):
    """The TrainThread interface; the test emits its signals and ends it."""

    trainerReady = Signal(object)
    batches = Signal(object)
    modelsReady = Signal(object)
    epochEnded = Signal(object)
    statusChanged = Signal(object)
    settingChanged = Signal(object)
    failed = Signal(str)
    finished = Signal()
    made: list["FakeThread"] = []

    def __init__(self, factory, epochs=None, num_threads=1, parent=None):
        super().__init__(parent)
        self.factory, self.epochs = factory, epochs
        self.running = False
        FakeThread.made.append(self)

    def start(self) -> None:
        self.running = True

    def isRunning(self) -> bool:  # noqa: N802 - Qt's name
        return self.running

    def wait(self, timeout_ms: int = 0) -> bool:
        return not self.running

    def end(self) -> None:
        """The run is over: the thread stops, then its ``finished`` arrives."""
        self.running = False
        self.finished.emit()


@dataclass
class FakeSpec:
    source: str


@dataclass
class FakeDataset:
    images: np.ndarray
    name: str = "fake"
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.spec = FakeSpec(self.name)

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def dataset(n=40, side=4, name="fake", seed=0) -> FakeDataset:
    rng = np.random.default_rng(seed)
    return FakeDataset(rng.random((n, 1, side, side)).astype(np.float32), name, rng.integers(0, 3, n), ["a", "b", "c"])


class FakeDecoder:
    """Decodes a code z to an image filled with z[0] (so a test can tell codes apart)."""

    likelihood = "bernoulli"

    def __init__(self, d=2, shape=(1, 4, 4), step=0):
        self.latent_dim, self.shape, self.step = d, shape, step

    def decode(self, codes):
        level = np.clip(np.asarray(codes, dtype=np.float32)[:, 0], 0, 1)
        return level[:, None, None, None] * np.ones((1, *self.shape), np.float32)


class FakeEncoder(FakeDecoder):
    def encode(self, images):
        x = np.asarray(images, dtype=np.float32)
        mu = np.stack([x.mean(axis=(1, 2, 3)), x.std(axis=(1, 2, 3))], axis=1)
        return mu, np.zeros_like(mu)

    def encode_all(self, images, progress=None, cancelled=None):
        return self.encode(images)


@dataclass
class FakeEpoch:
    epoch: int
    step: int
    latents: np.ndarray
    latent_logvar: np.ndarray
    test_elbo: float = -50.0
    test_recon: float = 45.0
    test_kl: float = 5.0
    kl_per_dim: np.ndarray = field(default_factory=lambda: np.array([3.0, 2.0]))
    seconds: float = 0.2


@dataclass
class FakeStatus:
    status: str
    message: str = ""
    step: int = 0


class Recorder(QtCore.QObject):
    """Collects what the session emits, in order."""

    def __init__(self, s: Session):
        super().__init__()
        self.events: list[tuple] = []
        for name in ("stateChanged", "message", "datasetLoaded", "epochShown", "mapReady", "mapCleared", "decoded",
                     "exampleSelected", "modelForgotten", "historyReplaced", "markerAdded", "modelLoaded"):
            getattr(s, name).connect(self._make(name))

    def _make(self, name):
        def record(*args):
            self.events.append((name, *args))
        return record

    def of(self, name: str) -> list[tuple]:
        return [e[1:] for e in self.events if e[0] == name]


@pytest.fixture
def parts(qtbot):
    FakeThread.made.clear()
    tasks, decoding = FakeTasks(), FakeDecoding()
    s = Session(num_threads=1, tasks=tasks, decoding=decoding, train_thread=FakeThread)
    return s, tasks, decoding, Recorder(s)


def loaded(s: Session, tasks: FakeTasks, ds: FakeDataset | None = None) -> FakeDataset:
    """Load ``ds`` through the session's loader, the fake pool answering at once."""
    ds = ds or dataset()
    s.load_dataset({"source": ds.name})
    tasks.answer(tasks.pending()[-1], ds)
    return ds


def models(step=0):
    return FakeEncoder(step=step), FakeDecoder(step=step)


def codes_for(ds: FakeDataset, shift: float = 0.0) -> np.ndarray:
    mu, _ = FakeEncoder().encode(ds.images)
    return (mu + shift).astype(np.float32)


# ---------------------------------------------------------------- the tests
def test_a_dataset_loads_through_the_loading_state(parts):
    s, tasks, _, rec = parts
    assert s.state == EMPTY
    at_arrival = []
    s.datasetLoaded.connect(lambda ds: at_arrival.append(s.state))
    ds = loaded(s, tasks)
    assert [st for (st,) in rec.of("stateChanged")] == [LOADING, IDLE]
    assert at_arrival == [IDLE], "loading is over when the dataset is announced: a listener may train at once"
    assert s.dataset is ds and rec.of("datasetLoaded") == [(ds,)]
    assert not s.has_model and s.latents is None


def test_a_newer_dataset_request_wins_and_the_older_result_is_dropped(parts):
    s, tasks, _, rec = parts
    first, second = dataset(name="first"), dataset(name="second", seed=1)
    s.load_dataset({"source": "first"})
    s.load_dataset({"source": "second"})
    old, new = tasks.started
    assert old.cancelled and not new.cancelled
    # The first job had finished before it saw the cancellation: its reply arrives after all.
    tasks.answer(old, first, deliver_even_if_cancelled=True)
    assert s.dataset is None and s.state == LOADING
    tasks.answer(new, second)
    assert s.dataset is second and s.state == IDLE


def test_stop_during_a_load_drops_it_and_goes_back(parts):
    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    s.load_dataset({"source": "another"})
    assert s.state == LOADING
    s.stop()
    assert s.state == IDLE and tasks.started[-1].cancelled
    assert ("info", "Stopped loading.") in rec.of("message")
    # Its reply still arrives (it had finished): it changes nothing.
    tasks.answer(tasks.started[-1], dataset(name="another"), deliver_even_if_cancelled=True)
    assert s.dataset is ds and s.state == IDLE


def test_a_failed_load_says_why_and_keeps_what_was_there(parts):
    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    s.load_dataset({"source": "/nowhere"})
    tasks.answer(tasks.pending()[-1], error="/nowhere: no such file")
    assert s.dataset is ds and s.state == IDLE
    assert ("error", "/nowhere: no such file") in rec.of("message")


def start(s: Session) -> FakeThread:
    s.train({"latent_dim": 2, "hidden_dims": (8,)}, {"epochs": 3, "batch_size": 8})
    return FakeThread.made[-1]


class FakeTrainer:
    def __init__(self, s: Session):
        self.control = s.control
        self.model_config, self.train_config = s.model_config, s.train_config
        self.epoch = self.step = 0
        self.settings = {"beta": 1.0}
        self.history = None


def test_training_runs_through_its_states_and_ends_trained(parts, qtbot):
    s, tasks, decoding, rec = parts
    ds = loaded(s, tasks)
    thread = start(s)
    assert s.state == TRAINING and thread.running and thread.epochs == 3
    trainer = FakeTrainer(s)
    thread.trainerReady.emit(trainer)
    assert s.trainer is trainer and s.has_model
    thread.modelsReady.emit(models())
    thread.epochEnded.emit(FakeEpoch(1, 5, codes_for(ds), np.zeros((ds.n, 2), np.float32)))
    assert s.latents is not None and s.last_epoch.epoch == 1
    # The map and the epoch's views follow within half a second; the map is fitted on the pool.
    qtbot.waitUntil(lambda: bool(rec.of("epochShown") and tasks.pending()), timeout=2000)
    tasks.finish_all()
    (view,) = rec.of("mapReady")[-1]
    assert isinstance(view, MapView) and view.xy.shape == (ds.n, 2) and view.autorange
    s.toggle_pause()
    assert s.state == PAUSED and s.control.paused
    s.toggle_pause()
    assert s.state == TRAINING and not s.control.paused
    s.stop()
    assert s.control.stopped
    thread.end()
    assert s.state == TRAINED and s.thread is None


def test_a_load_during_training_is_refused(parts):
    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    start(s)
    n = len(tasks.started)
    s.load_dataset({"source": "other"})
    s.load_checkpoint("/some/model.ckpt")
    assert len(tasks.started) == n, "nothing was started"
    assert s.state == TRAINING and s.dataset is ds
    warnings = [t for lvl, t in rec.of("message") if lvl == "warning"]
    assert any("Stop training before changing the dataset" in t for t in warnings)
    assert any("Stop training before opening a checkpoint" in t for t in warnings)


def test_signals_of_a_reset_run_are_dropped(parts):
    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    thread = start(s)
    thread.trainerReady.emit(FakeTrainer(s))
    thread.modelsReady.emit(models())
    s.reset()
    assert s.running, "the fake thread ends only when told to"
    assert rec.of("modelForgotten") and s.trainer is None and s.decoder is None
    # Queued signals of the forgotten run still arrive: they must not bring it back.
    thread.modelsReady.emit(models(step=9))
    thread.epochEnded.emit(FakeEpoch(1, 5, codes_for(ds), np.zeros((ds.n, 2), np.float32)))
    thread.trainerReady.emit(FakeTrainer(s))
    assert s.trainer is None and s.decoder is None and s.latents is None and s.last_epoch is None
    thread.end()
    assert s.state == IDLE and not s.has_model


def test_decoding_answers_with_the_code_and_drops_results_of_a_forgotten_model(parts):
    s, tasks, decoding, rec = parts
    ds = loaded(s, tasks)
    thread = start(s)
    thread.trainerReady.emit(FakeTrainer(s))
    thread.modelsReady.emit(models())
    thread.epochEnded.emit(FakeEpoch(1, 5, codes_for(ds), np.zeros((ds.n, 2), np.float32)))
    s.map.refresh()
    tasks.finish_all()
    s.decode_at(0.25, 0.5)
    s.decode_at(0.75, 0.5)  # replaces the waiting request: only the newest is decoded
    assert list(decoding.waiting) == ["point"]
    decoding.run_all()
    ((image, code, x, y, far),) = rec.of("decoded")
    assert (x, y) == (0.75, 0.5) and np.allclose(code, [0.75, 0.5]) and np.allclose(image, 0.75)
    np.testing.assert_array_equal(s.last_code, code)
    # A request made before a reset arrives after it: dropped.
    s.decode_at(0.1, 0.1)
    results = decoding.take()
    thread.end()
    s.reset()
    for kind, result in results:
        decoding.done.emit(kind, result)
    assert len(rec.of("decoded")) == 1 and s.last_code is None


def test_selecting_an_example_encodes_it_off_the_gui_thread(parts):
    s, tasks, decoding, rec = parts
    ds = loaded(s, tasks)
    s.select_example(3)
    # No model: the original comes at once, without a reconstruction.
    ((index, title, original, recon),) = rec.of("exampleSelected")
    assert index == 3 and recon is None and title.startswith("#3 · ")
    np.testing.assert_allclose(original, ds.images[3, 0])
    thread = start(s)
    thread.trainerReady.emit(FakeTrainer(s))
    thread.modelsReady.emit(models())
    s.select_example(5)
    s.select_example(7)
    assert len(rec.of("exampleSelected")) == 1, "nothing is encoded on the GUI thread"
    decoding.run_all()
    index, title, original, recon = rec.of("exampleSelected")[-1]
    assert index == 7 and recon.shape == (4, 4) and s.selected == 7


def test_epochs_faster_than_the_view_interval_are_shown_newest_first(parts, qtbot):
    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    thread = start(s)
    thread.trainerReady.emit(FakeTrainer(s))
    lv = np.zeros((ds.n, 2), np.float32)
    for epoch in range(1, 4):
        thread.modelsReady.emit(models(step=epoch))
        thread.epochEnded.emit(FakeEpoch(epoch, 5 * epoch, codes_for(ds, 0.1 * epoch), lv))
    qtbot.waitUntil(lambda: bool(rec.of("epochShown")), timeout=2000)
    tasks.finish_all()
    for epoch in range(4, 7):
        thread.modelsReady.emit(models(step=epoch))
        thread.epochEnded.emit(FakeEpoch(epoch, 5 * epoch, codes_for(ds, 0.1 * epoch), lv))
    assert [e.epoch for (e,) in rec.of("epochShown")] == [3], "one redraw so far, of the newest epoch"
    qtbot.waitUntil(lambda: rec.of("epochShown")[-1][0].epoch == 6, timeout=2000)
    assert len(rec.of("epochShown")) <= 3
    thread.end()


def test_a_checkpoint_load_replaces_the_model_and_every_view_clears_first(parts):
    s, tasks, decoding, rec = parts
    ds = loaded(s, tasks)

    @dataclass
    class History:
        epochs: list
        changes: list

        def arrays(self):
            return {"step": np.arange(3), "recon": np.ones(3), "kl": np.ones(3), "loss": np.ones(3) * 2}

        def wall_times(self):
            return np.array([0.1, 0.2, 0.3])

    class Config:
        input_shape = (1, 4, 4)
        latent_dim = 2
        batch_size = 8

        def to_dict(self):
            return {"latent_dim": 2}

    class Ckpt:
        model_config = train_config = Config()
        history = History([{"epoch": 2, "step": 3, "test_elbo": -9.0, "test_recon": 8.0, "test_kl": 1.0,
                            "kl_per_dim": [0.5, 0.5], "active_units": 2}],
                          [{"step": 1, "name": "beta", "old": 1.0, "new": 4.0}])
        latents = codes_for(ds)
        latent_logvar = np.zeros((ds.n, 2), np.float32)
        labels, label_names = ds.labels, ds.label_names
        dataset_spec = {"source": "fake"}
        epoch, step = 2, 3

    s.load_checkpoint("/tmp/model.ckpt")
    assert s.state == LOADING
    enc, dec = models(step=3)
    tasks.answer(tasks.pending()[-1], LoadedCheckpoint("/tmp/model.ckpt", Ckpt(), enc, dec, ds, ""))
    assert s.state == TRAINED and s.checkpoint is not None and s.decoder is dec
    assert s.history is Ckpt.history
    names = [e[0] for e in rec.events]
    assert names.index("mapCleared") < names.index("modelLoaded")
    view = rec.of("historyReplaced")[-1][0]
    assert view.markers == [(1, "β 1 → 4")] and view.epochs == [(3, 8.0, 1.0, 9.0)]
    np.testing.assert_allclose(view.wall_s, [0.1, 0.2, 0.3])
    assert rec.of("epochShown")[-1][0].epoch == 2
    tasks.finish_all()
    assert rec.of("mapReady")[-1][0].xy.shape == (ds.n, 2)


def test_a_map_fit_of_codes_that_newer_ones_replaced_is_dropped(parts):
    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    old, new = codes_for(ds), codes_for(ds, shift=5.0)
    s.map.set_codes(old, ds.labels, ds.label_names, now=True)
    s.map.set_codes(new, ds.labels, ds.label_names, now=True)
    first, second = tasks.pending()
    tasks.finish(first, deliver_even_if_cancelled=True)  # it had finished before the newer codes came
    assert rec.of("mapReady") == [] and s.map.projection is None
    tasks.finish(second)
    ((view,),) = rec.of("mapReady")
    np.testing.assert_allclose(view.xy, new)
    assert view.x_label == "z1" and view.latent_dim == 2 and view.labels is ds.labels
    # Clearing the map drops a fit on its way, too.
    s.map.set_codes(old, ds.labels, ds.label_names, now=True)
    s.map.clear()
    tasks.finish_all()
    assert len(rec.of("mapReady")) == 1 and s.map.xy is None


def test_train_asked_for_while_the_data_loads_starts_when_it_is_there(parts):
    s, tasks, _, rec = parts
    texts = []
    s.progressText.connect(texts.append)
    s.load_dataset({"source": "fake"})
    assert s.loading_dataset
    s.train({"latent_dim": 2, "hidden_dims": (8,)}, {"epochs": 3, "batch_size": 8})
    assert not FakeThread.made and s.state == LOADING, "nothing to train on yet"
    assert texts[-1].startswith("Training starts as soon as the data is loaded")
    tasks.answer(tasks.pending()[-1], dataset())
    (thread,) = FakeThread.made
    assert s.state == TRAINING and thread.running and thread.epochs == 3
    assert texts[-1].startswith("Starting")
    # Asked for while a load that then fails: nothing starts, and the read-out says so.
    thread.end()
    s.reset()
    s.load_dataset({"source": "/nowhere"})
    s.train({"latent_dim": 2, "hidden_dims": (8,)}, {"epochs": 3, "batch_size": 8})
    tasks.answer(tasks.pending()[-1], error="/nowhere: no such file")
    assert len(FakeThread.made) == 1 and "could not be loaded" in texts[-1]


@dataclass
class FakeBatch:
    step: int
    epoch: int
    batch: int
    wall_s: float
    n_batches: int = 100
    recon: float = 1.0
    kl: float = 0.5
    loss: float = 1.5
    samples_per_s: float = 266.0  # an engine's running estimate early in a run: not shown


def test_speed_and_time_left_show_once_they_mean_something(parts):
    s, tasks, _, _ = parts
    loaded(s, tasks)
    thread = start(s)
    thread.trainerReady.emit(FakeTrainer(s))
    progress = []
    s.trainProgress.connect(progress.append)
    batches = []
    s.batchesArrived.connect(batches.append)
    # The first batches: 0.05 s apart after a slow first one; under half a second timed.
    thread.batches.emit([FakeBatch(1, 0, 0, 2.0), FakeBatch(2, 0, 1, 2.05)])
    assert progress[-1]["samples_per_s"] is None and progress[-1]["eta_s"] is None
    assert progress[-1]["batch"] == 2 and progress[-1]["epoch"] == 1
    np.testing.assert_allclose(batches[-1]["wall_s"], [2.0, 2.05])
    thread.batches.emit([FakeBatch(3 + k, 0, 2 + k, 2.1 + 0.05 * k) for k in range(10)])
    p = progress[-1]
    assert p["samples_per_s"] == pytest.approx(8 / 0.05)  # batch size 8, a batch every 0.05 s
    # 88 batches of this epoch and 2 more epochs of 100 are left, 0.05 s each.
    assert p["eta_s"] == pytest.approx((88 + 200) * 0.05)
    # A pause is not a batch's time.
    thread.statusChanged.emit(FakeStatus("paused"))
    thread.statusChanged.emit(FakeStatus("resumed"))
    thread.batches.emit([FakeBatch(13, 0, 12, 60.0), FakeBatch(14, 0, 13, 60.05)])
    assert progress[-1]["samples_per_s"] == pytest.approx(8 / 0.05)


def test_a_stop_within_an_epoch_encodes_the_data_with_the_weights_as_they_are(parts, monkeypatch):
    import vae_core.inference

    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    thread = start(s)
    trainer = FakeTrainer(s)
    trainer.snapshot = lambda: "weights at step 40"
    built = []

    def load_models(snapshot):
        built.append(snapshot)
        return models(step=40)

    monkeypatch.setattr(vae_core.inference, "load_models", load_models)
    thread.trainerReady.emit(trainer)
    trainer.step = 40  # batches ran, no epoch ended: no models, no codes
    s.stop()
    thread.end()
    assert s.state == TRAINED and s.latents is None
    tasks.finish_all()  # the encoding, then the map's fit
    assert built == ["weights at step 40"] and s.decoder.step == 40
    assert s.latents.shape == (ds.n, 2)
    (view,) = rec.of("mapReady")[-1]
    assert view.xy.shape == (ds.n, 2) and view.autorange


class FakeUMAP:
    """A UMAP projection that lays codes out by their first two dims (fits are counted, placements too)."""

    fits = 0
    placed = 0
    is_exact = False
    far_threshold = 1.0
    landmark_indices = None

    def __init__(self, init=None, random_state=None):
        self.is_fitted = False

    def fit(self, codes, progress=None, cancel=None, labels=None):
        type(self).fits += 1
        self.is_fitted = True
        return np.asarray(codes)[:, :2].copy()

    def transform(self, codes):
        type(self).placed += 1
        return np.asarray(codes)[:, :2] + 100.0  # placed: told apart from a fit by the offset

    def axis_labels(self):
        return ("UMAP 1", "UMAP 2")


class Clock:
    """perf_counter for the map's fits: every reading is one second after the one before."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_umap_is_fitted_again_only_as_often_as_training_can_spare(parts, monkeypatch):
    from app.session import map as map_mod

    monkeypatch.setattr(map_mod.P, "UMAPProjection", FakeUMAP)
    monkeypatch.setattr(map_mod.time, "perf_counter", Clock())  # every fit takes one second
    FakeUMAP.fits = FakeUMAP.placed = 0
    s, tasks, _, rec = parts
    ds = loaded(s, tasks)
    m = s.map
    m.set_mode("umap")
    m.set_training(True)
    rng = np.random.default_rng(0)

    def epoch(seconds: float) -> str:
        """One epoch's codes reach the map: "fit" or "placed", by what the map shows."""
        codes = rng.normal(size=(ds.n, 4)).astype(np.float32)
        m.set_codes(codes, ds.labels, ds.label_names, epoch_s=seconds)
        m.refresh()
        tasks.finish_all()
        if np.allclose(m.xy, codes[:, :2]):
            return "fit"
        assert np.allclose(m.xy, codes[:, :2] + 100.0)
        return "placed"

    assert epoch(2.5) == "fit"  # the first layout
    assert m._umap_fit_s == 1.0
    # Fits of 1 s within a tenth of epochs of 2.5 s: one every ceil(1 / 0.25) = 4 epochs; in
    # between, the newest codes are placed on the last layout.
    assert [epoch(2.5) for _ in range(8)] == ["placed"] * 3 + ["fit"] + ["placed"] * 3 + ["fit"]
    # Epochs of 10 s or more leave room for a fit every epoch.
    assert [epoch(10.0) for _ in range(2)] == ["fit", "fit"]
    # Training stops: a layout of older codes is fitted once more, to the newest codes.
    assert epoch(2.5) == "placed"
    m.set_training(False)
    tasks.finish_all()
    assert np.allclose(m.xy, m.codes[:, :2])
    n = FakeUMAP.fits
    m.set_training(True)
    assert epoch(10.0) == "fit" and FakeUMAP.fits == n + 1
    m.set_training(False)  # the layout is of the newest codes already: nothing to fit
    tasks.finish_all()
    assert FakeUMAP.fits == n + 1
    # Not training: every new set of codes is fitted.
    assert epoch(1.0) == "fit"


def test_speed_shows_for_fast_batches_too(parts):
    """Batches of a few milliseconds: the rate is measured over a few seconds of them, not a fixed count."""
    s, tasks, _, _ = parts
    loaded(s, tasks)
    thread = start(s)  # 3 epochs
    thread.trainerReady.emit(FakeTrainer(s))
    progress = []
    s.trainProgress.connect(progress.append)
    wall, step = 1.0, 0
    for epoch in range(2):  # 100 batches of 4 ms an epoch, 0.1 s of evaluation after each
        events = []
        for b in range(100):
            step += 1
            wall += 0.004
            events.append(FakeBatch(step, epoch, b, wall))
        thread.batches.emit(events)
        wall += 0.1
    p = progress[-1]
    assert p["samples_per_s"] == pytest.approx(8 / 0.004, rel=1e-6)
    # One epoch of 100 batches is left, and two epoch ends (this one's and the last one's).
    assert p["eta_s"] == pytest.approx(100 * 0.004 + 2 * 0.1, rel=1e-6)


def test_a_task_runner_runs_nothing_started_after_cancel_all(qtbot):
    """Closing cancels the jobs; a job a queued signal starts after that never runs (it would outlive the window)."""
    from app.worker import TaskRunner

    runner = TaskRunner()
    ran = []
    first = runner.start(lambda progress, cancelled: ran.append("before"), print, print)
    qtbot.waitUntil(lambda: first.finished_event.is_set(), timeout=5000)
    runner.cancel_all()
    late = runner.start(lambda progress, cancelled: ran.append("after"), print, print)
    assert late.cancelled and late.finished_event.is_set()
    assert runner.wait(2000)
    qtbot.wait(50)
    assert ran == ["before"]


def test_a_divergence_decodes_the_shown_point_again_with_the_rolled_back_weights(parts):
    s, tasks, decoding, rec = parts
    ds = loaded(s, tasks)
    thread = start(s)
    thread.trainerReady.emit(FakeTrainer(s))
    thread.modelsReady.emit(models())
    thread.epochEnded.emit(FakeEpoch(1, 5, codes_for(ds), np.zeros((ds.n, 2), np.float32)))
    s.map.refresh()
    tasks.finish_all()
    s.decode_at(0.25, 0.5)
    decoding.run_all()
    # The worker sends the restored weights, then the pause: the point is decoded anew with them.
    restored = models(step=9)
    thread.modelsReady.emit(restored)
    assert not decoding.waiting, "still training: nothing is decoded again yet"
    thread.statusChanged.emit(FakeStatus("diverged", "the loss became NaN", 12))
    assert s.state == PAUSED and s.decoder is restored[1]
    assert list(decoding.waiting) == ["point"]
