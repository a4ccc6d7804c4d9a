"""Run folders in the window: following a run that a trainer writes, and the runs trained in the window."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from app.main_window import MainWindow
from app.program import parse_args
from app.session import TRAINED
from app.session.follow import RunCurves
from app.tools.runs import READ_ONLY_TIP
from vae_core import ModelConfig, TrainConfig
from vae_core.checkpoint import load_checkpoint, save_checkpoint
from vae_core.data import DatasetSpec, load_dataset
from vae_core.runs import EVENTS, LATEST, RunWriter
from vae_core.training import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RANKS = [{"rank": 0, "host": "trainer-host", "pid": 1, "device": "cpu"}]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = (rng.random((120, 6, 6)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=np.arange(120) % 2)
    return path


@pytest.fixture(scope="module")
def dataset(data_path):
    return load_dataset(DatasetSpec.from_dict({"source": str(data_path)}))


def make_window(qtbot) -> MainWindow:
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


@pytest.fixture
def win(qtbot):
    w = make_window(qtbot)
    yield w
    w.runs.close()
    w.session.shutdown(3000)


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


class Run:
    """A trainer writing a run folder, driven a step at a time by the test."""

    def __init__(self, folder, dataset, epochs: int = 4):
        model = ModelConfig(input_shape=dataset.input_shape, latent_dim=2, hidden_dims=(8,))
        config = TrainConfig(epochs=epochs, batch_size=32, seed=2, device="cpu", num_threads=1)
        self.folder = folder
        self.trainer = Trainer(model, config, dataset)
        self.writer = RunWriter(folder, self.trainer, batch_interval_s=0.0)
        self.writer.start(RANKS)
        self._events = self.trainer.run()

    def until(self, kind: str):
        for ev in self._events:
            self.writer.record(ev)
            if ev.kind == kind:
                return ev
        raise AssertionError(f"the run ended before a {kind} event")

    def finish(self):
        self.writer.finish()

    def lines(self, kind: str) -> list[dict]:
        out = []
        for line in (self.folder / EVENTS).read_text().splitlines():
            ev = json.loads(line)
            if ev["kind"] == kind:
                out.append(ev)
        return out


def drawn_steps(w) -> np.ndarray:
    w.loss_plot.flush()
    return w.loss_plot.curve_data("loss")[0]


def test_a_followed_run_grows_the_curves_marks_changes_and_each_checkpoint_becomes_the_model(qtbot, win, dataset, tmp_path):
    s = win.session
    assert s.runs_root is None, "a window made by a test records no runs unless told where"
    said: list[tuple[str, str]] = []
    win.runs.follower.message.connect(lambda level, text: said.append((level, text)))
    run = Run(tmp_path / "run", dataset)
    try:
        run.until("epoch")
        assert win.follow_run(str(run.folder))
        qtbot.waitUntil(lambda: s.checkpoint is not None and s.checkpoint.epoch == 1 and s.xy is not None, timeout=30000)
        assert win.runs.following
        np.testing.assert_array_equal(drawn_steps(win), [ev["step"] for ev in run.lines("batch")])
        assert len(win.loss_plot.epochs()) == 1

        label = find(win, QtWidgets.QLabel, "followLabel")
        assert label.isVisible() and "Following run" in label.text() and "trainer-host" in label.text()
        assert "newest event" in label.text() and str(run.folder) in label.toolTip()
        train = find(win, QtWidgets.QPushButton, "trainButton")
        assert not train.isEnabled() and train.toolTip() == READ_ONLY_TIP
        for name in ("trainAction", "resetAction"):
            act = find(win, QtGui.QAction, name)
            assert not act.isEnabled() and act.toolTip() == READ_ONLY_TIP

        # The decoded point is decoded again by each new checkpoint's decoder.
        canvas = find(win, QtWidgets.QWidget, "decodeCanvas")
        x, y = np.median(s.xy, axis=0)
        version = canvas.image_version()
        s.decode_at(float(x), float(y))
        qtbot.waitUntil(lambda: canvas.image_version() > version, timeout=5000)
        first_image, decoder, codes = canvas.image().copy(), s.decoder, s.latents

        # A setting change is a marker; the curves grow with the batches.
        run.trainer.control.set(beta=0.5)
        run.until("change")
        qtbot.waitUntil(lambda: any(text.startswith("β 1 → 0.5") for _, text in win.loss_plot.markers()), timeout=5000)
        before = len(drawn_steps(win))
        run.until("batch")
        qtbot.waitUntil(lambda: len(drawn_steps(win)) > before, timeout=5000)

        # The next epoch's checkpoint is the model on screen: map, decoder and decoded point follow it.
        version = canvas.image_version()
        run.until("epoch")
        qtbot.waitUntil(lambda: s.checkpoint.epoch == 2, timeout=30000)
        assert s.decoder is not decoder and not np.allclose(s.latents, codes)
        qtbot.waitUntil(lambda: s.xy is not None and np.allclose(s.xy, s.latents), timeout=5000)
        qtbot.waitUntil(lambda: canvas.image_version() > version, timeout=5000)
        assert not np.allclose(canvas.image(), first_image)
        assert len(win.loss_plot.epochs()) == 2
        assert win.runs.follower.shown is s.checkpoint and "showing epoch 2" in label.text()

        # A line still being written is kept until it is whole, and not taken for an unreadable one.
        events = run.folder / EVENTS
        line = json.dumps({"kind": "change", "step": s.checkpoint.step, "name": "lr", "old": 0.001, "new": 0.0005,
                           "time": 0.0}) + "\n"
        with open(events, "ab") as f:
            f.write(line[:25].encode())
        polls = win.runs.follower.polls
        qtbot.waitUntil(lambda: win.runs.follower.polls >= polls + 2, timeout=5000)
        assert not any(text.startswith("lr") for _, text in win.loss_plot.markers())
        with open(events, "ab") as f:
            f.write(line[25:].encode())
        qtbot.waitUntil(lambda: any(text.startswith("lr 1e-03 → 5e-04") for _, text in win.loss_plot.markers()),
                        timeout=5000)
        assert win.runs.follower.skipped_lines == 0
        assert [level for level, _ in said if level != "info"] == [], said

        # Stopping keeps the model; the run goes on without the window.
        ckpt, decoder = s.checkpoint, s.decoder
        points = len(drawn_steps(win))
        find(win, QtGui.QAction, "stopFollowingAction").trigger()
        assert not win.runs.following and not label.isVisible()
        assert s.checkpoint is ckpt and s.decoder is decoder and s.state == TRAINED
        assert train.isEnabled() and train.toolTip() != READ_ONLY_TIP
        run.until("epoch")
        qtbot.wait(1500)
        assert s.checkpoint is ckpt and len(drawn_steps(win)) == points
    finally:
        run.finish()


def test_a_run_continued_from_an_earlier_checkpoint_drops_the_steps_it_lost():
    curves = RunCurves()
    started = {"kind": "status", "status": "started", "step": 0, "epoch": 0, "time": 100.0,
               "ranks": [{"host": "a"}, {"host": "a"}], "restart": 0}
    batches = [{"kind": "batch", "step": k, "epoch": 0, "batch": k - 1, "n_batches": 10, "recon": 1.0, "kl": 0.5,
                "loss": 1.5, "time": 100.0 + k} for k in range(1, 8)]
    epoch = {"kind": "epoch", "epoch": 1, "step": 4, "test_elbo": -2.0, "test_recon": 1.5, "test_kl": 0.5, "time": 104.5}
    replace, points = curves.add([started, *batches[:4], epoch, *batches[4:]])
    assert not replace and list(points.steps) == [1, 2, 3, 4, 5, 6, 7] and points.epochs == ((4.0, 1.5, 0.5, 2.0),)
    assert curves.status.where() == "on a, 2 processes"
    # The group was restarted and continued from the checkpoint of step 4: steps 5-7 were lost.
    restarted = {**started, "step": 4, "epoch": 1, "restart": 1, "time": 120.0}
    replace, points = curves.add([restarted, {**batches[4], "time": 121.0}])
    assert replace and list(points.steps) == [1, 2, 3, 4, 5]
    assert points.markers == ((4, "restarted (1)"),) and len(points.epochs) == 1
    np.testing.assert_allclose(points.wall_s, [1, 2, 3, 4, 21])
    assert curves.status.step == 5 and curves.status.epoch == 0 and curves.status.batch == 5


def test_a_folder_that_is_no_run_or_goes_away_is_reported_by_name_and_the_model_stays(qtbot, win, dataset, tmp_path):
    s = win.session
    trained = Run(tmp_path / "first", dataset, epochs=1)
    trained.until("epoch")
    trained.finish()
    path = str(tmp_path / "model.ckpt")
    save_checkpoint(trained.trainer, path)
    win.open_path(path)
    qtbot.waitUntil(lambda: s.state == TRAINED and s.checkpoint is not None, timeout=30000)
    model = s.checkpoint

    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, says in ((tmp_path / "missing", "there is no such folder"), (empty, "is not a run folder")):
        win.message_bar.hide()
        assert win.follow_run(str(folder)) and win.runs.following
        qtbot.waitUntil(lambda: not win.runs.following, timeout=5000)
        assert win.message_bar.level == "error" and str(folder) in win.message_bar.text.text()
        assert says in win.message_bar.text.text()
        assert s.checkpoint is model and find(win, QtWidgets.QPushButton, "trainButton").isEnabled()

    run = Run(tmp_path / "run", dataset)
    try:
        run.until("epoch")
        win.follow_run(str(run.folder))
        qtbot.waitUntil(lambda: s.checkpoint is not None and s.checkpoint is not model and s.xy is not None,
                        timeout=30000)
        followed, points = s.checkpoint, len(drawn_steps(win))
        win.message_bar.hide()
        shutil.rmtree(run.folder)
        qtbot.waitUntil(lambda: win.message_bar.isVisible() and win.message_bar.level == "error", timeout=5000)
        assert f"The run folder {run.folder} cannot be found" in win.message_bar.text.text()
        assert win.runs.following and "cannot be read" in find(win, QtWidgets.QLabel, "followLabel").text()
        assert s.checkpoint is followed and len(drawn_steps(win)) == points and s.xy is not None
    finally:
        run.writer.close()


def test_a_run_trained_in_the_window_writes_its_folder_and_is_listed_in_file_runs(qtbot, tmp_path, monkeypatch, data_path):
    runs = tmp_path / "runs"
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(runs))
    w = make_window(qtbot)
    s = w.session
    try:
        assert s.runs_root == str(runs)
        with qtbot.waitSignal(s.datasetLoaded, timeout=30000):
            w.open_path(str(data_path))
        find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(1)
        train = find(w, QtWidgets.QPushButton, "trainButton")
        for _ in range(2):  # a new model, then the same model trained further: one folder
            qtbot.waitUntil(train.isEnabled, timeout=5000)
            qtbot.mouseClick(train, QtCore.Qt.LeftButton)
            qtbot.waitUntil(lambda: s.state == TRAINED and s.trainer is not None and not s.running, timeout=60000)
        folders = [p for p in runs.iterdir() if p.is_dir()]
        assert len(folders) == 1 and folders[0].name.startswith("tiny")
        folder = folders[0]
        config = json.loads((folder / "config.json").read_text())
        assert config["format"] == "latent-explorer-run" and config["world_size"] == 1
        events = [json.loads(line) for line in (folder / EVENTS).read_text().splitlines()]
        statuses = [(e["status"], e.get("resumed_from")) for e in events if e["kind"] == "status"]
        assert statuses[0] == ("started", None) and statuses[-1][0] == "finished"
        assert ("started", str(folder / LATEST)) in statuses
        assert [e["epoch"] for e in events if e["kind"] == "epoch"] == [1, 2]
        assert any(e["kind"] == "batch" for e in events)
        assert load_checkpoint(folder / LATEST).epoch == 2

        with qtbot.waitSignal(s.checkpointSaved, timeout=10000):  # opening another model asks nothing then
            s.save_checkpoint(str(tmp_path / "saved.ckpt"))
        with qtbot.waitSignal(w.runs.runsListed, timeout=10000) as listed:
            w.runs.refresh_runs()
        assert [e.directory for e in listed.args[0]] == [str(folder)]
        entries = [a for a in find(w, QtWidgets.QMenu, "runsMenu").actions() if a.isEnabled()]
        assert len(entries) == 1 and entries[0].text().startswith(folder.name) and "finished" in entries[0].text()
        entries[0].trigger()
        qtbot.waitUntil(lambda: s.checkpoint is not None and s.state == TRAINED, timeout=30000)
        assert s.checkpoint_path == str(folder / LATEST) and s.checkpoint.epoch == 2
    finally:
        w.runs.close()
        s.shutdown(3000)


def test_a_runs_folder_that_cannot_be_written_is_said_and_training_goes_on(qtbot, tmp_path, monkeypatch, data_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(blocker))
    w = make_window(qtbot)
    s = w.session
    try:
        with qtbot.waitSignal(s.datasetLoaded, timeout=30000):
            w.open_path(str(data_path))
        find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(1)
        train = find(w, QtWidgets.QPushButton, "trainButton")
        qtbot.waitUntil(train.isEnabled, timeout=5000)
        qtbot.mouseClick(train, QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: s.state == TRAINED and s.trainer is not None and not s.running, timeout=60000)
        assert s.trainer.epoch == 1
        qtbot.waitUntil(lambda: s.xy is not None, timeout=10000)
        text = w.message_bar.text.text()
        assert w.message_bar.level == "error" and "could not be written" in text and str(blocker) in text
        with qtbot.waitSignal(s.checkpointSaved, timeout=10000):  # closing the window asks nothing then
            s.save_checkpoint(str(tmp_path / "saved.ckpt"))
    finally:
        w.runs.close()
        s.shutdown(3000)


def test_the_follow_option_names_the_folder():
    assert parse_args(["--follow", "/mnt/runs/exp1"]).follow == "/mnt/runs/exp1"
    assert parse_args([]).follow is None
