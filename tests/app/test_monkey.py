"""Pressing the training controls in any order, fast, never crashes or deadlocks.

A seeded random walk over the real widgets: Train / Continue, Pause / Resume,
Stop, Reset, the dataset combo (digits and a tiny npz of another image size)
and the latent size, a few hundred times with tiny waits.  Afterwards the
window still trains an epoch and decodes, no thread raised, and nothing is
left running once it is closed.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

import numpy as np
import pytest
import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets

from app import recovery as rec_mod
from app.main_window import MainWindow
from app.session import LOADING, PAUSED, TRAINED, TRAINING

from helpers import press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ACTIONS = 500
# Another walk: MONKEY_SEED=<n> pytest tests/app/test_monkey.py
SEED = int(os.environ.get("MONKEY_SEED", "20240611"))


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions raised in any Python thread, and in Python code run by Qt outside pytest-qt's capture."""
    errors: list[str] = []

    def thread_hook(args):
        errors.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")

    def sys_hook(exc_type, exc, tb):
        errors.append(f"main: {exc_type.__name__}: {exc}")

    monkeypatch.setattr(threading, "excepthook", thread_hook)
    monkeypatch.setattr(sys, "excepthook", sys_hook)
    return errors


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def test_random_presses_never_crash_or_deadlock(qtbot, tmp_path, monkeypatch, thread_errors, capfd):
    monkeypatch.setenv(rec_mod.ENV_DATA_DIR, str(tmp_path / "data"))
    monkeypatch.setenv(rec_mod.ENV_EPOCHS, "2")  # autosaves happen during the walk too
    tiny = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(tiny, images=(rng.random((60, 6, 6)) * 255).astype(np.uint8), labels=np.arange(60) % 3)

    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1100, 750)
    w.show()
    qtbot.waitExposed(w)
    errors: list[str] = []
    w.session.message.connect(lambda level, text: errors.append(text) if level == "error" else None)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    panel = w.panel
    combo = panel.datasetCombo
    combo.blockSignals(True)
    panel.add_dataset_entry("tiny", str(tiny))
    combo.setCurrentIndex(combo.findData("digits"))
    combo.blockSignals(False)
    buttons = {name: find(w, QtWidgets.QPushButton, name)
               for name in ("trainButton", "pauseButton", "stopButton", "resetButton")}
    # Menu items and shortcuts reach the session by other paths than the buttons.
    actions = {name: w.findChild(QtGui.QAction, name) for name in ("resetAction", "pauseAction", "stopAction", "trainAction")}
    latent = find(w, QtWidgets.QSpinBox, "latentDimSpin")
    epochs = find(w, QtWidgets.QSpinBox, "epochsSpin")
    epochs.setValue(2)

    r = random.Random(SEED)
    weights = {"trainButton": 4, "pauseButton": 3, "stopButton": 4, "resetButton": 6,
               "dataset": 4, "latent": 3, "epochs": 1, "resetAction": 2, "pauseAction": 1, "stopAction": 1,
               "trainAction": 1}
    names = list(weights)
    counts = dict.fromkeys(names, 0)
    slowest = (0.0, "")
    t_start = time.monotonic()
    for i in range(ACTIONS):
        what = r.choices(names, [weights[n] for n in names])[0]
        t0 = time.monotonic()
        if what in buttons:
            btn = buttons[what]
            counts[what] += btn.isEnabled()
            qtbot.mouseClick(btn, QtCore.Qt.LeftButton)  # a disabled button ignores the click, as for a user
        elif what in actions:
            act = actions[what]
            counts[what] += act.isEnabled()
            act.trigger()
        elif what == "dataset" and combo.isEnabled():
            combo.setCurrentIndex(r.randrange(combo.count()))
            counts[what] += 1
        elif what == "latent" and latent.isEnabled():
            latent.setValue(r.randint(1, 6))
            counts[what] += 1
        elif what == "epochs" and epochs.isEnabled():
            epochs.setValue(r.randint(1, 3))
            counts[what] += 1
        spent = time.monotonic() - t0
        if spent > slowest[0]:
            slowest = (spent, f"action {i}: {what}")
        qtbot.wait(r.choice((0, 1, 2, 5, 10, 20, 40)))
        if w.session.running:  # a run in progress is always shown as one
            assert w.session.state in (TRAINING, PAUSED), (i, what, w.session.state)
    assert slowest[0] < 3.0, f"the window froze for {slowest[0]:.1f} s at {slowest[1]}"
    print("effective presses", counts)
    assert sum(counts.values()) > 100, counts
    assert all(counts[n] > 3 for n in ("trainButton", "pauseButton", "stopButton", "resetButton", "dataset")), counts

    # Settle: let anything running stop, then the program must still work normally.
    if w.session.running:
        w.session.stop()
    # thread is None once the session has handled the end of the run (not merely once it ended).
    qtbot.waitUntil(lambda: w.session.thread is None and w.session.state != LOADING, timeout=30000)
    assert w.session.state not in (TRAINING, PAUSED)
    if w.session.has_model:
        qtbot.mouseClick(buttons["resetButton"], QtCore.Qt.LeftButton)
    assert not w.session.has_model and w.session.state in ("idle", "empty"), w.session.state
    assert combo.isEnabled() and latent.isEnabled()
    if w.session.dataset is None or w.session.dataset.name != "digits":
        with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
            w.load_initial_dataset("digits")
    latent.setValue(2)
    epochs.setValue(1)
    qtbot.mouseClick(buttons["trainButton"], QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None
                    and w.session.trainer is not None and w.session.trainer.epoch == 1, timeout=60000)
    assert w.session.latents.shape == (1797, 2)
    view = find(w, QtWidgets.QWidget, "latentMap")
    canvas = find(w, QtWidgets.QWidget, "decodeCanvas")
    v0 = canvas.image_version()
    x, y = w.session.xy[5]
    press(view, x, y)
    release(view, x, y)
    qtbot.waitUntil(lambda: canvas.image_version() > v0, timeout=3000)  # decoded on the decoding thread
    assert np.all(np.isfinite(canvas.image()))

    thread = w.session.thread
    w.close()
    assert thread is None or not shiboken6.isValid(thread) or not thread.isRunning()
    assert w.session.tasks.pool.activeThreadCount() == 0
    assert w.session.tasks.wait(5000)
    unexpected = [e for e in errors if "Training failed" in e or "Error:" in e or "Traceback" in e]
    assert not unexpected, unexpected
    assert not thread_errors, thread_errors
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    assert time.monotonic() - t_start < 90
