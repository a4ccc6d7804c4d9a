"""Watching the training: KL bars and warnings, the decoded manifold, UMAP that keeps up, 20,000 points."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from app.display import ACTIVE_KL, active_dims
from app.main_window import MainWindow
from app.session import PAUSED, TRAINED
from app.tools import monitor as M
from app.widgets.kl_bars import INACTIVE_KL, KLBars

from helpers import move, press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def win(qtbot):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1300, 850)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.session.shutdown(3000)


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def load(qtbot, w, key="digits", n=None):
    if n is not None:
        find(w, QtWidgets.QSpinBox, "shapesCountSpin").setValue(n)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset(key)


def train(qtbot, w, epochs, timeout=120000):
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(epochs)
    btn = find(w, QtWidgets.QPushButton, "trainButton")
    assert btn.isEnabled()
    qtbot.mouseClick(btn, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None
                    and not w.session.running, timeout=timeout)
    # The map is redrawn at most twice a second, in the background: let the last redraw happen.
    qtbot.waitUntil(lambda: not w.session.map.pending and not w.session.map.fitting, timeout=5000)


# ------------------------------------------------------------------ KL bars
def test_kl_bars_grey_inactive_dims_and_label_every_size(qtbot):
    bars = KLBars()
    qtbot.addWidget(bars)
    bars.resize(420, 260)
    bars.show()
    kl = np.array([2.0, 0.001, 0.5, 0.0, np.nan])
    bars.set_kl(kl, active_dims(kl))
    assert bars.objectName() == "klBars"
    assert bars.inactive_dims() == [1, 3, 4]
    colours = bars.bar_colours()
    assert colours[0] == colours[2] != colours[1] == colours[3] == colours[4]
    np.testing.assert_allclose(bars.bar_heights(), [2.0, 0.001, 0.5, 0.0, 0.0])
    assert "active units: 2 / 5" in bars.title() and "2.50 nats" in bars.title()
    assert bars.tick_labels() == ["z1", "z2", "z3", "z4", "z5"]
    for d in (2, 8, 16, 32, 64):
        bars.set_kl(np.linspace(0, 1, d), np.arange(d) > 0)
        labels = bars.tick_labels()
        assert labels[0] == "z1" and 2 <= len(labels) <= 16, (d, labels)
        assert all(lab.startswith("z") for lab in labels)
        assert len(bars.bar_heights()) == d
    bars.clear()
    assert len(bars.bar_heights()) == 0
    assert INACTIVE_KL == ACTIVE_KL
    # The owner's rule decides: a dimension with KL whose mean codes do not vary is inactive too.
    bars.set_kl(np.array([2.0, 0.5]), np.array([True, False]))
    assert bars.inactive_dims() == [1] and "active units: 1 / 2" in bars.title()
    with pytest.raises(ValueError):
        bars.set_kl(np.array([2.0, 0.5]), np.array([True]))


def test_kl_bars_range_holds_every_bar_and_follows_them_in_round_steps(qtbot):
    from app.widgets.kl_bars import round_up

    assert [round_up(v) for v in (0.03, 0.9, 1.0, 1.7, 2.2, 3.0, 7.5, 12.0)] == [0.05, 1, 1, 2, 2.5, 5, 10, 20]
    bars = KLBars()
    qtbot.addWidget(bars)
    bars.resize(420, 260)
    bars.show()

    def top() -> float:
        return bars.plot_widget().getPlotItem().getViewBox().viewRange()[1][1]

    two = np.array([True, True, False])
    bars.set_kl(np.array([1.0, 0.5, 0.0]), two)
    assert top() == 2.0  # 1.08 nats rounded up
    bars.set_kl(np.array([1.5, 0.5, 0.0]), two)
    assert top() == 2.0, "a bar inside the range leaves it as it is"
    bars.set_kl(np.array([4.0, 0.5, 0.0]), two)
    assert top() == 5.0
    bars.set_kl(np.array([0.2, 0.1, 0.0]), two)
    assert top() == 0.25, "bars far below the top bring it down"
    assert bars.tick_labels() == ["z1", "z2", "z3"]
    bars.set_kl(np.linspace(0, 1, 8), np.arange(8) > 0)
    assert len(bars.bar_heights()) == 8 and bars.tick_labels()[0] == "z1" and top() >= 1.0


def test_kl_dock_follows_epochs_warns_on_collapse_and_clears_on_recovery(qtbot, win):
    dock = find(win, QtWidgets.QDockWidget, "klDock")
    bars = find(win, QtWidgets.QWidget, "klBars")
    assert win.dockWidgetArea(dock) == QtCore.Qt.BottomDockWidgetArea
    assert dock.toggleViewAction() in win.view_menu.actions()
    load(qtbot, win)
    find(win, QtWidgets.QSpinBox, "latentDimSpin").setValue(4)
    seen = []
    win.session.epochArrived.connect(lambda ev: seen.append(ev.epoch))
    messages = []
    shown = win.show_message

    def spy(level, text):
        messages.append((level, text))
        shown(level, text)

    win.show_message = spy  # the monitor tells the user through the window
    # A fresh VAE on the 8x8 digits uses almost none of its latent code in its
    # first epochs (held-out KL ~0.02 nats after 2), then starts to.
    train(qtbot, win, 2)
    assert seen == [1, 2]
    # The bars show the last epoch once the run has ended (redrawn at most twice a second while it runs).
    np.testing.assert_allclose(bars.kl(), win.session.last_epoch.kl_per_dim)
    assert len(bars.bar_heights()) == 4
    assert "/ 4" in bars.title()
    ev = win.session.last_epoch
    assert ev.test_kl < M.COLLAPSE_KL
    assert "collapse" in bars.warning().lower() and bars.warning_level() == "warning"
    # The warning and the count agree: no active unit while the decoder ignores z.
    assert ev.active_units == 0 and "none of the 4 latent dimensions is active" in bars.warning()
    assert "active units: 0 / 4" in bars.title()
    collapse_messages = [t for lvl, t in messages if "collapse" in t.lower()]
    assert len(collapse_messages) == 1
    bar = find(win, QtWidgets.QFrame, "messageBar")
    assert bar.isVisible() and "collapse" in find(win, QtWidgets.QLabel, "messageText").text().lower()

    # It recovers within a few more epochs: both warnings go away.
    find(win, QtWidgets.QSpinBox, "epochsSpin").setValue(3)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == TRAINED and not win.session.running, timeout=120000)
    assert win.session.last_epoch.test_kl > M.COLLAPSE_KL
    assert bars.warning() == ""
    assert not (bar.isVisible() and "collapse" in find(win, QtWidgets.QLabel, "messageText").text().lower())
    assert "collapse" not in win.statusBar().currentMessage().lower()
    assert len([t for lvl, t in messages if "collapse" in t.lower()]) == 1, "the message bar is told once"
    assert len(bars.inactive_dims()) < 4
    assert f"active units: {win.session.last_epoch.active_units} / 4" in bars.title()


def test_divergence_shows_in_the_dock_until_training_recovers(qtbot, win):
    bars = find(win, QtWidgets.QWidget, "klBars")
    load(qtbot, win)
    lr = find(win, QtWidgets.QAbstractSpinBox, "lrSpin")
    lr.setValue(1.0)  # Adam with a step of 1 turns the loss into NaN within a few steps
    find(win, QtWidgets.QSpinBox, "epochsSpin").setValue(2)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == PAUSED and bars.warning_level() == "error", timeout=60000)
    assert "rolled back" in bars.warning() and "learning rate" in bars.warning()
    # The user lowers the learning rate and resumes: once an epoch completes, the warning goes.
    lr.setValue(1e-3)
    lr.editingFinished.emit()
    assert win.session.control.pending_changes().get("lr") == pytest.approx(1e-3)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "pauseButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.session.state == TRAINED and not win.session.running, timeout=60000)
    assert win.session.last_epoch is not None and np.isfinite(win.session.last_epoch.test_elbo)
    assert bars.warning_level() != "error"


# ----------------------------------------------------------------- manifold
def test_manifold_tiles_the_visible_map_under_the_points_and_follows_zoom(qtbot, win):
    view = find(win, QtWidgets.QWidget, "latentMap")
    act = find(win, QtGui.QAction, "manifoldAction")
    assert act.isCheckable() and act in win.tools_menu.actions() and act in win.view_menu.actions()
    load(qtbot, win)
    train(qtbot, win, 3)
    assert view.underlay() is None
    act.setChecked(True)
    qtbot.waitUntil(lambda: view.underlay() is not None, timeout=3000)
    image, rect = view.underlay()
    x0, x1, y0, y1 = view.view_range()
    np.testing.assert_allclose(rect, (x0, y0, x1 - x0, y1 - y0), rtol=1e-6, atol=1e-9)
    nx, ny = win.monitor.grid_shape()
    assert M.MANIFOLD_MIN <= max(nx, ny) <= M.MANIFOLD_MAX and 1 <= min(nx, ny) <= M.MANIFOLD_MAX
    # Tiles are (nearly) square on screen whatever the shape of the map.
    wpx, hpx = view.plot_area_size()
    assert 0.8 < (wpx / nx) / (hpx / ny) < 1.25
    h, w = win.session.dataset.input_shape[1:]
    assert image.shape == (ny * h, nx * w)
    # Tile (row r, column c) is the decoder's image at the centre of that cell,
    # rows from the top of the view.
    for r, c in ((0, 0), (ny - 1, nx - 1), (ny // 2, 1)):
        cx = x0 + (c + 0.5) * (x1 - x0) / nx
        cy = y1 - (r + 0.5) * (y1 - y0) / ny
        codes, _ = win.session.projection.inverse(np.array([[cx, cy]]))
        expect = np.clip(win.session.decoder.decode(codes)[0, 0], 0, 1)
        np.testing.assert_allclose(image[r * h:(r + 1) * h, c * w:(c + 1) * w], expect, atol=1e-6)
    # Under the points, outside the data bounds.
    assert view._underlay.zValue() < min(c.zValue() for c in view._clouds)

    n0 = win.monitor.manifold_refreshes
    view.view_box().scaleBy((0.5, 0.5))
    qtbot.waitUntil(lambda: win.monitor.manifold_refreshes > n0, timeout=3000)
    qtbot.wait(2 * M.MANIFOLD_THROTTLE_MS)
    image2, rect2 = view.underlay()
    x0, x1, y0, y1 = view.view_range()
    np.testing.assert_allclose(rect2, (x0, y0, x1 - x0, y1 - y0), rtol=1e-6, atol=1e-9)
    assert rect2[2] < 0.6 * rect[2]
    # Many range changes in a burst give few refreshes (throttled).
    n1 = win.monitor.manifold_refreshes
    for _ in range(30):
        view.view_box().translateBy((0.001 * rect2[2], 0))
    qtbot.wait(3 * M.MANIFOLD_THROTTLE_MS)
    assert 1 <= win.monitor.manifold_refreshes - n1 <= 3

    # A new epoch decodes with the new weights.
    n2 = win.monitor.manifold_refreshes
    train(qtbot, win, 1)
    qtbot.waitUntil(lambda: win.monitor.manifold_refreshes > n2, timeout=3000)
    act.setChecked(False)
    assert view.underlay() is None


# --------------------------------------------------------------------- UMAP
def test_umap_layout_stays_put_between_epochs_while_the_gui_responds(qtbot, win):
    s = win.session
    view = find(win, QtWidgets.QWidget, "latentMap")
    load(qtbot, win)
    find(win, QtWidgets.QSpinBox, "latentDimSpin").setValue(4)
    train(qtbot, win, 5)  # past the first epochs, the codes have structure

    # As the program does a moment after it starts: import umap and compile its
    # code in the background (compiling holds the interpreter for up to a second).
    m = s.map
    assert m.umap_warm_state is None
    m.warm_umap()
    assert m.umap_warm_state == "warming"
    m.warm_umap()  # a second call does nothing
    qtbot.waitUntil(lambda: m.umap_warm_state in ("ready", "failed"), timeout=120000)
    assert m.umap_warm_state == "ready"

    ticks: list[float] = []
    timer = QtCore.QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    combo = find(win, QtWidgets.QComboBox, "projectionCombo")
    timer.start()
    combo.setCurrentIndex(combo.findData("umap"))
    qtbot.waitUntil(lambda: type(s.projection).__name__ == "UMAPProjection", timeout=120000)
    timer.stop()
    assert not win.map_toolbar.progress.isVisible()
    assert ticks, "the event loop kept running while UMAP fitted (the fit runs off the GUI thread)"
    xy0 = s.xy.copy()
    first = s.projection
    assert s.projection.init_used != "previous layout"

    train(qtbot, win, 1)
    qtbot.waitUntil(lambda: s.projection is not first and s.map.umap_task is None, timeout=120000)
    assert s.projection.init_used == "previous layout"
    xy1 = s.xy
    extent = float(np.ptp(xy0, axis=0).max())
    moved = float(np.median(np.linalg.norm(xy1 - xy0, axis=1)))
    assert moved < 0.2 * extent, f"the map moved by {moved / extent:.0%} of its size"

    # Dragging decodes in UMAP mode; a point far outside the data says so.
    canvas = find(win, QtWidgets.QWidget, "decodeCanvas")
    v0 = canvas.image_version()
    # Two examples near the middle of the map (away from the legend in its corner).
    centre = np.median(xy1, axis=0)
    near = np.argsort(np.linalg.norm(xy1 - centre, axis=1))
    a, b = xy1[near[0]], xy1[near[len(near) // 10]]
    press(view, *a)
    move(view, *(0.5 * (a + b)))
    qtbot.waitUntil(lambda: canvas.image_version() > v0, timeout=3000)
    move(view, *b)
    release(view, *b)

    def ends_on_b() -> bool:
        cx, cy = view.crosshair() or (np.inf, np.inf)
        return bool(np.hypot((cx - b[0]) / view.pixel_size()[0], (cy - b[1]) / view.pixel_size()[1]) < 1.5)

    qtbot.waitUntil(ends_on_b, timeout=3000)
    assert canvas.image_version() >= v0 + 2
    assert not view.far_indicator(), "a drag ending on an example is not far from data"
    lo, hi = xy1.min(axis=0).astype(float), xy1.max(axis=0).astype(float)
    view.view_box().setRange(xRange=(lo[0] - extent, hi[0] + extent), yRange=(lo[1] - extent, hi[1] + extent), padding=0)
    far = (lo[0] - 0.8 * extent, lo[1] - 0.8 * extent)  # bottom left, away from the legend
    with qtbot.waitSignal(s.decoded, timeout=2000) as sig:
        press(view, *far)
        release(view, *far)
    assert sig.args[4] is True  # image, code, x, y, far
    assert view.far_indicator()


def test_leaving_umap_or_a_newer_epoch_cancels_the_running_fit(qtbot, win):
    s = win.session
    load(qtbot, win)
    find(win, QtWidgets.QSpinBox, "latentDimSpin").setValue(3)
    train(qtbot, win, 1)
    s.set_projection("umap")
    first = s.map.umap_task
    assert first is not None and win.map_toolbar.progress.isVisible()
    s.map.refresh()  # newer codes: the running fit makes way
    second = s.map.umap_task
    assert first.cancelled and second is not first and not second.cancelled
    s.set_projection("pca")
    assert second.cancelled and s.map.umap_task is None
    assert not win.map_toolbar.progress.isVisible()
    qtbot.waitUntil(lambda: type(s.projection).__name__ == "PCAProjection", timeout=5000)  # fitted in the background
    qtbot.waitUntil(lambda: first.finished_event.is_set() and second.finished_event.is_set(), timeout=60000)
    qtbot.wait(50)
    assert type(s.projection).__name__ == "PCAProjection", "a cancelled fit never lands on the map"


# ---------------------------------------------------------------- 20,000 points
def test_window_copes_with_twenty_thousand_shapes(qtbot, win):
    s = win.session
    view = find(win, QtWidgets.QWidget, "latentMap")
    load(qtbot, win, "shapes", n=20000)
    assert s.dataset.n == 20000
    find(win, QtWidgets.QLineEdit, "hiddenEdit").setText("64")
    train(qtbot, win, 1)
    qtbot.waitUntil(lambda: s.projection is not None and len(s.projection.xy) == 20000, timeout=30000)
    assert view.point_count() == 20000
    np.testing.assert_allclose(view.points(), s.xy, rtol=1e-6)
    np.testing.assert_allclose(s.projection.xy, s.xy, rtol=1e-6)
    # Hit tests find the point under the cursor, also through a real click.
    rng = np.random.default_rng(0)
    for i in rng.choice(20000, 5, replace=False):
        x, y = s.xy[i]
        j = view.hit_test(x, y)
        assert j is not None
        pw, ph = view.pixel_size()
        assert abs(s.xy[j, 0] - x) <= pw and abs(s.xy[j, 1] - y) <= ph
    i = 123
    x, y = s.xy[i]
    with qtbot.waitSignal(view.exampleClicked, timeout=2000) as sig:
        press(view, x, y)
        release(view, x, y)
    j = sig.args[0]
    assert np.linalg.norm((s.xy[j] - s.xy[i]) / np.array(view.pixel_size())) <= 6
    assert s.selected == j
