"""The whole program, offscreen, driven through its widgets with real events."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from app.main_window import MainWindow
from app.session import IDLE, LOADING, PAUSED, TRAINED, TRAINING

from helpers import move, press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def win(qtbot):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.session.shutdown(3000)


def load(qtbot, w, key="digits"):
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset(key)


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def set_epochs(w, n):
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(n)


def train_and_wait(qtbot, w, epochs=1, timeout=120000):
    set_epochs(w, epochs)
    btn = find(w, QtWidgets.QPushButton, "trainButton")
    assert btn.isEnabled()
    qtbot.mouseClick(btn, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None, timeout=timeout)


def test_names_tests_rely_on(win):
    for cls, name in [(QtWidgets.QPushButton, "trainButton"), (QtWidgets.QPushButton, "pauseButton"),
                      (QtWidgets.QPushButton, "stopButton"), (QtWidgets.QComboBox, "datasetCombo"),
                      (QtWidgets.QSpinBox, "latentDimSpin"), (QtWidgets.QAbstractSpinBox, "betaSpin"),
                      (QtWidgets.QWidget, "lossPlot"), (QtWidgets.QWidget, "latentMap"), (QtWidgets.QWidget, "decodeCanvas")]:
        find(win, cls, name)


def test_train_one_epoch_fills_curves_and_map_then_drag_decodes(qtbot, win):
    load(qtbot, win)
    train_and_wait(qtbot, win, epochs=1)
    plot = find(win, QtWidgets.QWidget, "lossPlot")
    qtbot.waitUntil(lambda: len(plot.curve_data("recon")[0]) > 5, timeout=5000)
    x, y = plot.curve_data("kl")
    assert np.all(np.isfinite(y))
    view = find(win, QtWidgets.QWidget, "latentMap")
    assert view.point_count() == win.session.dataset.n == 1797
    assert sorted(view.legend_labels()) == [str(i) for i in range(10)]

    canvas = find(win, QtWidgets.QWidget, "decodeCanvas")
    xy = win.session.xy
    lo, hi = np.percentile(xy, 10, axis=0), np.percentile(xy, 90, axis=0)
    v0 = canvas.image_version()
    press(view, lo[0], lo[1])
    qtbot.waitUntil(lambda: canvas.image_version() > v0, timeout=2000)
    first = canvas.image().copy()
    versions = [canvas.image_version()]
    for t in np.linspace(0, 1, 8)[1:]:
        p = lo + t * (hi - lo)
        move(view, p[0], p[1])
        # Decoded on the decoding thread: the image follows as soon as it is ready.
        qtbot.waitUntil(lambda: canvas.image_version() > versions[-1], timeout=2000)
        versions.append(canvas.image_version())
    release(view, hi[0], hi[1])
    assert not np.allclose(first, canvas.image()), "a different point decodes to a different image"

    def at_the_end() -> bool:
        cx, cy = view.crosshair()
        return abs(cx - hi[0]) < 0.05 * (hi[0] - lo[0]) + 1e-3 and abs(cy - hi[1]) < 0.05 * (hi[1] - lo[1]) + 1e-3

    qtbot.waitUntil(at_the_end, timeout=2000)
    assert "z =" in find(win, QtWidgets.QLabel, "coordsLabel").text()


def test_click_example_shows_reconstruction(qtbot, win):
    load(qtbot, win)
    train_and_wait(qtbot, win, epochs=1)
    view = find(win, QtWidgets.QWidget, "latentMap")
    pair = find(win, QtWidgets.QWidget, "reconPair")
    i = 17
    x, y = win.session.xy[i]
    with qtbot.waitSignal(view.exampleClicked, timeout=2000) as sig:
        press(view, x, y)
        release(view, x, y)
    j = sig.args[0]
    qtbot.waitUntil(lambda: pair.pair() is not None, timeout=2000)
    orig, recon = pair.pair()
    np.testing.assert_allclose(orig, win.session.dataset.images[j, 0], atol=1e-6)
    assert recon.shape == orig.shape and not np.allclose(recon, 0)


def test_pause_resume_stop_and_beta_change_is_recorded(qtbot, win):
    load(qtbot, win)
    set_epochs(win, 400)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == TRAINING and win.session.trainer is not None and win.session.trainer.step > 5, timeout=60000)
    pause = find(win, QtWidgets.QPushButton, "pauseButton")
    qtbot.mouseClick(pause, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == PAUSED, timeout=5000)
    time.sleep(0.3)
    QtWidgets.QApplication.processEvents()
    step = win.session.trainer.step
    time.sleep(0.5)
    QtWidgets.QApplication.processEvents()
    assert win.session.trainer.step == step, "no batch runs while paused"
    assert pause.text().lower().startswith("resume")
    qtbot.mouseClick(pause, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.trainer.step > step + 3, timeout=10000)

    beta = find(win, QtWidgets.QAbstractSpinBox, "betaSpin")
    beta.setValue(3.0)
    beta.editingFinished.emit()
    plot = find(win, QtWidgets.QWidget, "lossPlot")
    qtbot.waitUntil(lambda: any("3" in text for _, text in plot.markers()), timeout=10000)
    qtbot.waitUntil(lambda: any(c.get("name") == "beta" and c.get("new") == 3.0 for c in win.session.trainer.history.changes), timeout=5000)

    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "stopButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == TRAINED, timeout=5000)
    assert win.session.trainer.epoch < 400


def test_save_and_reopen_checkpoint(qtbot, win, tmp_path):
    load(qtbot, win)
    train_and_wait(qtbot, win, epochs=2)
    path = str(tmp_path / "run.ckpt")
    win.session.save_checkpoint(path)
    assert os.path.exists(path)
    steps = win.session.history.arrays()["step"]
    latents = win.session.latents.copy()
    win.session.reset()
    assert win.session.latents is None

    with qtbot.waitSignal(win.session.modelLoaded, timeout=30000):
        win.open_path(path)
    qtbot.waitUntil(lambda: win.session.xy is not None, timeout=10000)
    assert win.session.state == TRAINED
    np.testing.assert_allclose(win.session.latents, latents)
    plot = find(win, QtWidgets.QWidget, "lossPlot")
    assert plot.point_count() == len(steps)
    assert len(plot.epochs()) == 2
    # The reopened model decodes and trains on.
    view = find(win, QtWidgets.QWidget, "latentMap")
    canvas = find(win, QtWidgets.QWidget, "decodeCanvas")
    v0 = canvas.image_version()
    x, y = win.session.xy[0]
    press(view, x, y)
    release(view, x, y)
    qtbot.waitUntil(lambda: canvas.image_version() > v0, timeout=2000)
    set_epochs(win, 1)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == TRAINED and win.session.trainer is not None and win.session.trainer.epoch == 3, timeout=60000)


def test_close_during_training_stops_it(qtbot, tmp_path):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.show()
    load(qtbot, w)
    set_epochs(w, 1000)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.trainer is not None and w.session.trainer.step > 3, timeout=60000)
    thread = w.session.thread
    w.close()
    assert thread is None or not thread.isRunning()


def test_bad_folder_gives_message_and_keeps_the_model(qtbot, win, tmp_path):
    load(qtbot, win)
    train_and_wait(qtbot, win, epochs=1)
    trainer = win.session.trainer
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"this is not a checkpoint at all")
    win.open_path(str(bad))
    bar = find(win, QtWidgets.QFrame, "messageBar")
    qtbot.waitUntil(lambda: bar.isVisible(), timeout=10000)
    assert "broken.ckpt" in find(win, QtWidgets.QLabel, "messageText").text()
    assert win.session.trainer is trainer and win.session.state == TRAINED


def test_map_holds_still_during_a_drag_while_training_and_catches_up_on_release(qtbot, win):
    load(qtbot, win)
    train_and_wait(qtbot, win, epochs=1)
    view = find(win, QtWidgets.QWidget, "latentMap")
    plot = find(win, QtWidgets.QWidget, "lossPlot")
    set_epochs(win, 50)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == TRAINING, timeout=10000)
    xy = win.session.xy.copy()
    epoch_at_press = win.session.last_epoch.epoch
    press(view, float(np.median(xy[:, 0])), float(np.median(xy[:, 1])))
    # A press held still becomes a drag: the curves slow down while the user drags.
    qtbot.waitUntil(lambda: plot.redraw_interval() > 100, timeout=3000)
    shown = win.session.xy
    qtbot.waitUntil(lambda: win.session.last_epoch.epoch >= epoch_at_press + 2, timeout=60000)
    for k in range(5):
        move(view, float(xy[k, 0]), float(xy[k, 1]))
    assert win.session.xy is shown  # new epochs arrived, the map stayed as it was under the cursor
    release(view, float(xy[4, 0]), float(xy[4, 1]))
    assert plot.redraw_interval() == 100
    qtbot.waitUntil(lambda: win.session.xy is not shown, timeout=5000)  # the newest codes are shown
    win.session.stop()


def test_stop_while_a_dataset_loads_keeps_the_one_before(qtbot, win):
    load(qtbot, win, "digits")
    ds = win.session.dataset
    combo = find(win, QtWidgets.QComboBox, "datasetCombo")
    win.load_initial_dataset("shapes")
    assert win.session.state == LOADING and combo.currentData() == "shapes"
    stop = find(win, QtWidgets.QPushButton, "stopButton")
    assert stop.isEnabled()
    qtbot.mouseClick(stop, QtCore.Qt.LeftButton)
    assert win.session.state == IDLE
    assert combo.currentData() == "digits", "the panel shows the dataset the session has"
    assert win.session.tasks.wait(60000)  # the dropped load ends in the background
    qtbot.wait(50)  # and anything it sent has arrived
    assert win.session.dataset is ds and win.session.state == IDLE
    assert find(win, QtWidgets.QPushButton, "trainButton").isEnabled()


def test_reset_and_open_leave_nothing_of_the_previous_model_on_screen(qtbot, win, tmp_path):
    load(qtbot, win)
    train_and_wait(qtbot, win, epochs=1)
    path = str(tmp_path / "first.ckpt")
    win.session.save_checkpoint(path)
    view = find(win, QtWidgets.QWidget, "latentMap")
    canvas = find(win, QtWidgets.QWidget, "decodeCanvas")
    pair = find(win, QtWidgets.QWidget, "reconPair")
    coords = find(win, QtWidgets.QLabel, "coordsLabel")
    tools = win.explore_tools

    def show_everything():
        x, y = win.session.xy[3]
        with qtbot.waitSignal(view.exampleClicked, timeout=3000):
            press(view, x, y)
            release(view, x, y)
        tools.show_traversals()
        qtbot.waitUntil(lambda: canvas.image() is not None and pair.pair() is not None
                        and tools.traverse_grid.to_array() is not None and win.monitor.kl_bars.title().startswith("active")
                        and view.crosshair() is not None, timeout=5000)
        assert coords.text() and canvas.caption()

    def nothing_left():
        assert canvas.image() is None and canvas.caption() == "" and pair.pair() is None and coords.text() == ""
        assert view.crosshair() is None and view.highlight() is None and view.point_count() == 0
        assert tools.traverse_grid.to_array() is None and tools.traverse_grid._row_labels == []
        assert len(win.monitor.kl_bars.bar_heights()) == 0 and not win.monitor.kl_bars.title().startswith("active")
        assert win.session.selected is None and win.session.last_code is None

    show_everything()
    win.session.reset()
    nothing_left()

    # A new model, then the saved one opened over it: the same clean slate before the checkpoint is shown.
    train_and_wait(qtbot, win, epochs=1)
    show_everything()
    cleared = []
    win.session.mapCleared.connect(lambda text: cleared.append((canvas.image(), view.crosshair(), pair.pair())))
    with qtbot.waitSignal(win.session.modelLoaded, timeout=30000):
        win.open_path(path)
    assert cleared == [(None, None, None)]
    qtbot.waitUntil(lambda: win.session.xy is not None, timeout=10000)
    assert canvas.image() is None and pair.pair() is None and win.session.selected is None


def test_train_is_pressable_while_the_data_loads_and_says_what_happens(qtbot, win):
    win.load_initial_dataset("digits")
    assert win.session.state == LOADING
    button = find(win, QtWidgets.QPushButton, "trainButton")
    assert button.isEnabled() and find(win, QtWidgets.QSpinBox, "latentDimSpin").isEnabled()
    set_epochs(win, 1)
    qtbot.mouseClick(button, QtCore.Qt.LeftButton)
    label = find(win, QtWidgets.QLabel, "progressLabel")
    if win.session.state == LOADING:
        assert label.text().startswith("Training starts as soon as the data is loaded")
    qtbot.waitUntil(lambda: win.session.state == TRAINED and win.session.xy is not None, timeout=120000)
    assert win.session.trainer.epoch == 1
    # Pressed with the data there, the read-out answers at once, before any batch.
    set_epochs(win, 1)
    qtbot.mouseClick(button, QtCore.Qt.LeftButton)
    assert label.text().startswith("Starting")
    qtbot.waitUntil(lambda: win.session.state == TRAINED and not win.session.running, timeout=120000)
    assert label.text().startswith("Epoch 1/1")


def test_stop_within_the_first_epoch_shows_the_map_of_the_model_as_it_is(qtbot, win):
    load(qtbot, win)
    find(win, QtWidgets.QSpinBox, "batchSizeSpin").setValue(1)  # 1,617 batches an epoch
    set_epochs(win, 1)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.trainer is not None and win.session.trainer.step > 50, timeout=60000)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "stopButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == TRAINED and win.session.xy is not None, timeout=60000)
    trainer = win.session.trainer
    assert trainer.epoch == 0 and trainer.step < trainer.n_batches, "stopped within the first epoch"
    assert win.session.decoder.step == trainer.step and win.session.latents.shape == (1797, 2)
    view = find(win, QtWidgets.QWidget, "latentMap")
    qtbot.waitUntil(lambda: view.point_count() == 1797, timeout=10000)
    assert view.message() == "" and view.axis_labels() == ("z1", "z2")
