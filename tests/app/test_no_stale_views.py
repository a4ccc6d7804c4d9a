"""After every transition each view shows the current model and data, or is empty.

A walk through training, a change of projection, a click, Reset, a dataset
the model cannot take, opening a checkpoint and restoring a recovery copy;
after each step ``stale_views`` compares every view with the session.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from app import recovery as rec_mod
from app.main_window import MainWindow
from app.session import TRAINED
from app.session.map import captions
from app.session.session import trained_text

from helpers import press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.mktemp("userdata")
    monkeypatch.setenv(rec_mod.ENV_DATA_DIR, str(d))
    return d


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def make_window(qtbot) -> MainWindow:
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1300, 850)
    w.show()
    qtbot.waitExposed(w)
    return w


def settle(qtbot, w) -> None:
    """Wait until nothing is on its way: no training, loading, map fit, decode or tool refresh."""
    s = w.session
    qtbot.waitUntil(lambda: not s.running and s.state != "loading" and not s.map.pending and not s.map.fitting,
                    timeout=120000)
    qtbot.wait(300)  # decodes and tool grids answer from their worker threads
    QtWidgets.QApplication.processEvents()


def train(qtbot, w, epochs):
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(epochs)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and not w.session.running and w.session.xy is not None,
                    timeout=120000)
    settle(qtbot, w)


def click(qtbot, w, i):
    view = find(w, QtWidgets.QWidget, "latentMap")
    x, y = w.session.xy[i]
    press(view, x, y)
    release(view, x, y)
    qtbot.waitUntil(lambda: w.session.last_code is not None and w.recon_pair.pair() is not None, timeout=5000)
    settle(qtbot, w)


def stale_views(w) -> list[str]:
    """What the window shows that the session does not hold (empty: every view is current)."""
    s, view, problems = w.session, w.latent_view, []
    n_points = 0 if s.xy is None else len(s.xy)
    if view.point_count() != n_points:
        problems.append(f"the map shows {view.point_count()} points, the session has {n_points}")
    shown = view.axis_labels()
    want = captions(s.projection) if s.projection is not None and s.xy is not None else ("", "")
    if shown != want:
        problems.append(f"axis titles {shown}, the map is laid out by {want}")
    decoded = s.last_code is not None
    if (view.crosshair() is not None) != decoded or (w.decode_canvas.image() is not None) != decoded:
        problems.append(f"crosshair {view.crosshair()} / decoded image, the session decoded {s.last_code}")
    if view.far_indicator() and not decoded:
        problems.append("'far from data' without a decoded point")
    if view.highlight() != s.selected or (w.recon_pair.pair() is not None) != (s.selected is not None):
        problems.append(f"highlight {view.highlight()} / example pair, the session selected {s.selected}")
    bars = w.monitor.kl_bars
    if s.last_epoch is None:
        if len(bars.kl()):
            problems.append("KL bars of a model that is gone")
    else:
        if not np.allclose(bars.kl(), s.last_epoch.kl_per_dim):
            problems.append("KL bars of another epoch")
        if f"active units: {s.last_epoch.active_units} /" not in bars.title():
            problems.append(f"KL title {bars.title()!r}, the session counts {s.last_epoch.active_units} active")
    tools = w.explore_tools
    labels = tools.traverse_grid._row_labels
    if tools.traverse_dock.is_open and s.decoder is not None and s.last_epoch is not None:
        active = s.last_epoch.active
        if len(labels) != len(active):
            problems.append(f"{len(labels)} traversal rows for {len(active)} latent dims")
        for lab in labels:
            j = int(lab.split(" ")[0][1:]) - 1
            if ("inactive" in lab) == bool(active[j]) or (active[j] and f"KL {s.last_epoch.kl_per_dim[j]:.2f}" not in lab):
                problems.append(f"traversal row {lab!r} disagrees with the session")
    elif s.decoder is None and labels:
        problems.append("traversal rows of a model that is gone")
    progress = w.panel.progressLabel.text()
    if not s.has_model and progress != "Not trained yet":
        problems.append(f"progress {progress!r} without a model")
    if s.checkpoint is not None and s.trainer is None and progress != trained_text(s.checkpoint.epoch, s.checkpoint.step):
        problems.append(f"progress {progress!r} for an opened model of {s.checkpoint.epoch} epochs")
    if s.trainer is not None and not s.running:
        epochs_done = s.trainer.epoch - s._run_start_epoch
        if progress.startswith("Epoch") and not progress.startswith(f"Epoch {epochs_done}/"):
            problems.append(f"progress {progress!r}, the last run trained {epochs_done} epochs")
    curves = w.loss_plot.point_count()
    steps = 0 if s.history is None else len(s.history)
    if curves != steps:
        problems.append(f"the curves show {curves} steps, the model's history has {steps}")
    bar_text = find(w, QtWidgets.QLabel, "messageText").text() if w.message_bar.isVisible() else ""
    if "the current model takes" in bar_text and (not s.has_model or s._offered is None):
        problems.append(f"size-mismatch banner without the problem: {bar_text!r}")
    return problems


def test_every_view_follows_the_session_through_reset_open_restore_and_projections(qtbot, tmp_path, data_dir):
    w = make_window(qtbot)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    find(w, QtWidgets.QSpinBox, "latentDimSpin").setValue(4)
    find(w, QtWidgets.QLineEdit, "hiddenEdit").setText("64")
    assert stale_views(w) == []
    train(qtbot, w, 2)
    w.explore_tools.actions["traverseAction"].trigger()
    qtbot.waitUntil(lambda: len(w.explore_tools.traverse_grid._row_labels) == 4, timeout=5000)
    click(qtbot, w, 5)
    assert stale_views(w) == []

    # Another projection: the decoded point meant another code, so it goes; the selection stays.
    combo = find(w, QtWidgets.QComboBox, "projectionCombo")
    for mode, kind in (("pca", "PCAProjection"), ("raw", "RawDims"), ("pca", "PCAProjection")):
        combo.setCurrentIndex(combo.findData(mode))
        qtbot.waitUntil(lambda: type(w.session.projection).__name__ == kind, timeout=30000)
        settle(qtbot, w)
        assert w.session.selected == 5 and w.session.last_code is None
        assert stale_views(w) == [], mode
    click(qtbot, w, 9)
    saved = tmp_path / "four.ckpt"
    w.session.save_checkpoint(str(saved))
    assert saved.exists()
    train(qtbot, w, 1)

    # A dataset of another image size while the model has unsaved training (and nobody to ask):
    # the model stays and says why; Reset takes the dataset and the banner goes.
    other = tmp_path / "other.npy"
    np.save(other, np.random.default_rng(0).integers(0, 255, (300, 12, 12), dtype=np.uint8))
    w.open_path(str(other))
    qtbot.waitUntil(lambda: "the current model takes" in find(w, QtWidgets.QLabel, "messageText").text(),
                    timeout=30000)
    assert w.session.dataset.name == "digits" and w.session.trainer is not None
    assert stale_views(w) == []
    w.reset_action.trigger()
    settle(qtbot, w)
    assert w.session.dataset.n == 300 and not w.session.has_model
    assert stale_views(w) == []
    assert not (w.message_bar.isVisible() and "the current model takes" in find(w, QtWidgets.QLabel, "messageText").text())

    # A new model of the other data, clicked; then the saved checkpoint is opened over it.
    find(w, QtWidgets.QSpinBox, "latentDimSpin").setValue(2)
    train(qtbot, w, 1)
    click(qtbot, w, 3)
    assert stale_views(w) == []
    with qtbot.waitSignal(w.session.modelLoaded, timeout=60000):
        w.open_path(str(saved))
    settle(qtbot, w)
    assert w.session.dataset.name == "digits" and w.session.latents.shape == (1797, 4)
    assert w.session.last_code is None and w.session.selected is None
    assert stale_views(w) == []
    click(qtbot, w, 7)
    assert stale_views(w) == []

    # Trained on, then closed without asking: the next window restores the copy.
    train(qtbot, w, 1)
    click(qtbot, w, 2)
    w.close_without_asking()
    w2 = make_window(qtbot)
    assert stale_views(w2) == []
    with qtbot.waitSignal(w2.session.modelLoaded, timeout=60000):
        qtbot.mouseClick(find(w2, QtWidgets.QPushButton, "restoreRecoveryButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w2.session.xy is not None, timeout=30000)
    settle(qtbot, w2)
    assert w2.session.checkpoint.epoch == 3  # the saved two, and one more
    assert stale_views(w2) == []
    click(qtbot, w2, 11)
    assert stale_views(w2) == []
    w2.reset_action.trigger()
    settle(qtbot, w2)
    assert stale_views(w2) == []
