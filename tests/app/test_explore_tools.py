"""The Explore menu's per-example and latent-space tools, driven through the window offscreen."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from PySide6 import QtCore, QtGui, QtWidgets

from app.main_window import MainWindow
from app.session import TRAINED
from app.tools import explore_docks

from helpers import press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ACTIONS = ("posteriorAction", "elboAction", "interpolateAction", "traverseAction", "priorSamplesAction")


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def trigger(w, name):
    act = find(w, QtGui.QAction, name)
    assert act.isEnabled(), f"{name} should be enabled once a model exists"
    act.trigger()
    QtWidgets.QApplication.processEvents()


def trained_window(qtbot, latent_dim=2, epochs=1):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1300, 850)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    find(w, QtWidgets.QSpinBox, "latentDimSpin").setValue(latent_dim)
    find(w, QtWidgets.QLineEdit, "hiddenEdit").setText("64")
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(epochs)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None, timeout=120000)
    return w


def click_example(qtbot, w, i):
    """Click example ``i`` on the map with real mouse events; returns the index the map picked."""
    view = find(w, QtWidgets.QWidget, "latentMap")
    x, y = w.session.xy[i]
    with qtbot.waitSignal(view.exampleClicked, timeout=2000) as sig:
        press(view, x, y)
        release(view, x, y)
    QtWidgets.QApplication.processEvents()
    return sig.args[0]


def n_points(item):
    """How many vertices an overlay item (the map's ellipses or path) currently draws."""
    x = item.getData()[0]
    return 0 if x is None else len(x)


def save_dialog(monkeypatch, path):
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))


def grid_shape(n_rows, n_cols, h=8, w=8, pad=2):
    return (n_rows * h + (n_rows - 1) * pad, n_cols * w + (n_cols - 1) * pad)


@pytest.fixture
def win2(qtbot):
    w = trained_window(qtbot, latent_dim=2, epochs=1)
    yield w
    w.session.shutdown(3000)


def test_actions_wait_for_a_model_and_docks_start_hidden(qtbot):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    menu = w.tools_menu
    for name in ACTIONS:
        act = find(w, QtGui.QAction, name)
        assert act in menu.actions()
        assert not act.isEnabled()
    for name in ("posteriorDock", "elboDock", "interpolateDock", "traverseDock", "priorDock"):
        dock = find(w, QtWidgets.QDockWidget, name)
        assert dock.isHidden()
        assert w.dockWidgetArea(dock) == QtCore.Qt.BottomDockWidgetArea  # beside the KL bars, under the map
    # Calling a tool without a model says why instead of failing.
    w.explore_tools.show_prior()
    assert "Train a model" in find(w, QtWidgets.QLabel, "messageText").text()
    w.session.shutdown(1000)


def test_posterior_ellipses_samples_and_elbo_of_the_clicked_example(qtbot, win2):
    w = win2
    tools = w.explore_tools
    view = find(w, QtWidgets.QWidget, "latentMap")
    # Without a selection: a clear message, no ellipses.
    trigger(w, "posteriorAction")
    assert "Click an example" in find(w, QtWidgets.QLabel, "messageText").text()
    assert n_points(view._ellipses) == 0

    i = click_example(qtbot, w, 40)
    qtbot.waitUntil(lambda: tools.posterior_grid.to_array() is not None, timeout=3000)
    dock = find(w, QtWidgets.QDockWidget, "posteriorDock")
    assert dock.isVisible()
    grid = tools.posterior_grid.to_array()
    rows, cols = tools.posterior_grid.grid_shape()
    assert grid.shape == grid_shape(rows, cols) and rows * cols >= 16 and (rows - 1) * cols < 16
    np.testing.assert_allclose(grid[:8, :8], w.session.dataset.images[i, 0], atol=1e-6)
    # Two ellipses (1 and 2 sigma) centred on the example's mean code: the map shows z1, z2 directly.
    x, y = view._ellipses.getData()
    assert np.isnan(x).sum() == 2
    first = np.stack([x[:64], y[:64]], axis=1)
    mu = w.session.latents[i]
    np.testing.assert_allclose(first.mean(0), mu, atol=1e-3)
    sigma = np.exp(0.5 * w.session.latent_logvar[i])
    np.testing.assert_allclose(first.max(0) - first.min(0), 2 * sigma, rtol=0.02)
    second = np.stack([x[66:130], y[66:130]], axis=1)  # 65 vertices and a NaN per ellipse
    np.testing.assert_allclose(second.max(0) - second.min(0), 4 * sigma, rtol=0.02)

    # The ELBO panel opened with it and computes in the background.
    elbo_dock = find(w, QtWidgets.QDockWidget, "elboDock")
    assert not elbo_dock.isHidden()
    panel = find(w, QtWidgets.QWidget, "elboPanel")
    qtbot.waitUntil(lambda: panel.result is not None, timeout=30000)
    r = panel.result
    assert r["k"] == 1000
    assert r["elbo"] <= r["iwae"] + 4 * r["recon_se"] + 1e-3
    assert r["gap"] >= -(4 * r["recon_se"] + 1e-3)
    np.testing.assert_allclose(r["elbo"], -r["recon"] - r["kl"], rtol=1e-9)
    assert "nats" in find(w, QtWidgets.QLabel, "elboElboValue").text()
    assert "true posterior" in find(w, QtWidgets.QLabel, "elboGapValue").toolTip()

    # A large k runs in the background: the click returns at once, the panel says it is computing and
    # the event loop keeps running until the figures arrive.
    spin = find(w, QtWidgets.QSpinBox, "iwaeKSpin")
    assert (spin.minimum(), spin.maximum()) == (1, 100000)
    spin.setValue(100000)
    ticks = []
    timer = QtCore.QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "elboComputeButton"), QtCore.Qt.LeftButton)
    assert "computing" in find(w, QtWidgets.QLabel, "elboIwaeValue").text()
    assert "computing" in find(w, QtWidgets.QLabel, "elboStatus").text()
    qtbot.waitUntil(lambda: "k = 100,000" in find(w, QtWidgets.QLabel, "elboIwaeValue").text(), timeout=60000)
    timer.stop()
    assert len(ticks) >= 3, "the event loop kept running while IWAE was computed"
    r = panel.result
    assert r["k"] == 100000
    assert r["elbo"] <= r["iwae"] + 4 * r["recon_se"] + 1e-3

    # Another example moves the ellipses; closing the dock removes them.
    j = click_example(qtbot, w, 900)
    assert j != i
    qtbot.waitUntil(lambda: abs(np.nanmean(view._ellipses.getData()[0][:64]) - w.session.latents[j][0]) < 1e-3, timeout=3000)
    dock.close()
    QtWidgets.QApplication.processEvents()
    assert n_points(view._ellipses) == 0


def test_interpolation_path_strip_and_exports(qtbot, win2, monkeypatch, tmp_path):
    w = win2
    tools = w.explore_tools
    view = find(w, QtWidgets.QWidget, "latentMap")
    i = click_example(qtbot, w, 3)
    trigger(w, "interpolateAction")
    assert find(w, QtWidgets.QDockWidget, "interpolateDock").isVisible()
    # It opens with two different examples: A the selection, B the example farthest from it in latent space.
    mu = w.session.latents
    far = int(np.argmax(((mu - mu[i]) ** 2).sum(axis=1)))
    assert find(w, QtWidgets.QLabel, "interpALabel").text() == f"A: example {tools._example_name(i)}"
    assert find(w, QtWidgets.QLabel, "interpBLabel").text() == f"B: example {tools._example_name(far)}"
    qtbot.waitUntil(lambda: tools.interp_grid.grid_shape() == (1, 10), timeout=3000)
    x, y = view._path.getData()
    np.testing.assert_allclose([x[0], y[0]], mu[i], atol=1e-4)
    np.testing.assert_allclose([x[-1], y[-1]], mu[far], atol=1e-4)
    frames = tools._interp_frames
    assert not np.allclose(frames[0], frames[-1]), "A and B decode to different images"
    j = click_example(qtbot, w, 1500)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "interpBSelectedButton"), QtCore.Qt.LeftButton)
    find(w, QtWidgets.QSpinBox, "interpStepsSpin").setValue(7)
    qtbot.waitUntil(lambda: tools.interp_grid.grid_shape() == (1, 7), timeout=3000)
    strip = tools.interp_grid.to_array()
    assert strip.shape == grid_shape(1, 7)
    x, y = view._path.getData()
    assert len(x) == 7
    np.testing.assert_allclose([x[0], y[0]], w.session.latents[i], atol=1e-4)
    np.testing.assert_allclose([x[-1], y[-1]], w.session.latents[j], atol=1e-4)
    np.testing.assert_allclose(np.diff(x), np.diff(x)[0], atol=1e-4)  # linear: evenly spaced

    combo = find(w, QtWidgets.QComboBox, "interpModeCombo")
    combo.setCurrentIndex(combo.findData("spherical"))
    qtbot.waitUntil(lambda: not np.allclose(view._path.getData()[0], x), timeout=3000)
    xs, ys = view._path.getData()
    np.testing.assert_allclose([xs[-1], ys[-1]], w.session.latents[j], atol=1e-4)

    png = tmp_path / "strip.png"
    save_dialog(monkeypatch, png)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "interpExportPngButton"), QtCore.Qt.LeftButton)
    with Image.open(png) as im:
        assert im.size == (strip.shape[1] * 4, strip.shape[0] * 4)
    assert str(png) in w.statusBar().currentMessage()

    gif = tmp_path / "walk"  # no suffix: ".gif" is added
    save_dialog(monkeypatch, gif)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "interpExportGifButton"), QtCore.Qt.LeftButton)
    with Image.open(str(gif) + ".gif") as im:
        assert im.size == (32, 32)
        total = 0
        for k in range(im.n_frames):
            im.seek(k)
            total += im.info["duration"]
    assert 2 <= im.n_frames <= 7 and total == 7 * 100

    # A failed write is reported, not raised.
    save_dialog(monkeypatch, tmp_path / "missing" / "x.gif")
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "interpExportGifButton"), QtCore.Qt.LeftButton)
    assert "Could not save" in find(w, QtWidgets.QLabel, "messageText").text()
    # Closing the dock takes the path off the map.
    find(w, QtWidgets.QDockWidget, "interpolateDock").close()
    QtWidgets.QApplication.processEvents()
    assert n_points(view._path) == 0


def test_traversals_prior_samples_and_pca_ellipses_with_four_latent_dims(qtbot, monkeypatch, tmp_path):
    w = trained_window(qtbot, latent_dim=4, epochs=1)
    try:
        tools = w.explore_tools
        trigger(w, "traverseAction")
        assert find(w, QtWidgets.QDockWidget, "traverseDock").isVisible()
        qtbot.waitUntil(lambda: tools.traverse_grid.grid_shape() == (4, 9), timeout=3000)  # decoded on the worker
        assert tools.traverse_grid.to_array().shape == grid_shape(4, 9)
        kl = np.asarray(w.session.last_epoch.kl_per_dim)
        labels = tools.traverse_grid._row_labels
        order = np.argsort(-kl, kind="stable")
        active = w.session.last_epoch.active
        for lab, j in zip(labels, order):
            assert lab.startswith(f"z{j + 1} · ")
            assert ("inactive" in lab) == (not active[j])
        # One count of active units, the same in every view.
        n = w.session.last_epoch.active_units
        assert f"{n} of 4 dims are active" in find(w, QtWidgets.QLabel, "traverseInfo").text()
        assert f"active units: {n} / 4" in w.monitor.kl_bars.title()
        assert w.monitor.kl_bars.inactive_dims() == [int(j) for j in np.flatnonzero(~active)]
        assert f"{n}/4 active units" in w.state_label.text()
        assert "z = 0" in find(w, QtWidgets.QLabel, "traverseInfo").text()
        # Around the selected example's code once there is one.
        click_example(qtbot, w, 10)
        qtbot.waitUntil(lambda: "example #" in find(w, QtWidgets.QLabel, "traverseInfo").text(), timeout=3000)
        gif = tmp_path / "trav.gif"
        save_dialog(monkeypatch, gif)
        qtbot.mouseClick(find(w, QtWidgets.QPushButton, "traverseExportGifButton"), QtCore.Qt.LeftButton)
        with Image.open(gif) as im:
            assert im.size == (grid_shape(2, 2, pad=1)[1] * 4, grid_shape(2, 2, pad=1)[0] * 4) or im.size[0] > 32
            assert 1 <= im.n_frames <= 9

        trigger(w, "priorSamplesAction")
        assert find(w, QtWidgets.QDockWidget, "priorDock").isVisible()
        qtbot.waitUntil(lambda: tools.prior_grid.to_array() is not None, timeout=3000)
        first = tools.prior_grid.to_array()
        rows, cols = tools.prior_grid.grid_shape()
        assert first.shape == grid_shape(rows, cols) and rows * cols >= 64 and (rows - 1) * cols < 64
        # The tiles follow the grid's shape: as large as the dock lets them be.
        assert cols == explore_docks.columns_for(64, tools.prior_grid.width() - 8, tools.prior_grid.height() - 8)
        qtbot.mouseClick(find(w, QtWidgets.QPushButton, "priorResampleButton"), QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: not np.allclose(first, tools.prior_grid.to_array()), timeout=3000)
        png = tmp_path / "prior.png"
        save_dialog(monkeypatch, png)
        qtbot.mouseClick(find(w, QtWidgets.QPushButton, "priorExportPngButton"), QtCore.Qt.LeftButton)
        with Image.open(png) as im:
            assert im.size == (first.shape[1] * 4, first.shape[0] * 4)
        np.testing.assert_allclose(np.asarray(Image.open(png).convert("L"))[::4, ::4] / 255, tools.prior_grid.to_array(), atol=1 / 255)

        # On the PCA map the ellipses are q(z|x) projected exactly.
        w.session.set_projection("pca")
        qtbot.waitUntil(lambda: type(w.session.projection).__name__ == "PCAProjection", timeout=5000)
        i = click_example(qtbot, w, 77)
        trigger(w, "posteriorAction")
        view = find(w, QtWidgets.QWidget, "latentMap")
        qtbot.waitUntil(lambda: n_points(view._ellipses) > 0 and "exact" in find(
            w, QtWidgets.QLabel, "posteriorInfo").text(), timeout=3000)
        x, y = view._ellipses.getData()
        pts = np.stack([x[:64], y[:64]], axis=1)
        proj = w.session.projection
        mu = w.session.latents[i].astype(np.float64)
        var = np.exp(w.session.latent_logvar[i].astype(np.float64))
        np.testing.assert_allclose(pts.mean(0), proj.transform(mu[None].astype(np.float32))[0], atol=1e-3)
        cov = (proj.components * var) @ proj.components.T
        # Every point of the 1-sigma ellipse is at Mahalanobis distance 1.
        d = pts - pts.mean(0)
        m = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
        np.testing.assert_allclose(m, 1.0, rtol=0.02)
        assert "exact" in find(w, QtWidgets.QLabel, "posteriorInfo").text()

        # A map with no formula for new codes (as UMAP): samples are placed by their nearest stored codes.
        class MapOnly:
            is_exact = False

            def transform(self, codes):
                raise NotImplementedError

        exact_pts = pts.copy()
        w.session.map.projection = MapOnly()
        w.session.map.xy = proj.transform(w.session.latents)
        tools.update_posterior()
        qtbot.waitUntil(lambda: "approximate" in find(w, QtWidgets.QLabel, "posteriorInfo").text(), timeout=5000)
        x, y = view._ellipses.getData()
        approx = np.stack([x[:64], y[:64]], axis=1)
        np.testing.assert_allclose(approx.mean(0), exact_pts.mean(0), atol=0.2 * np.ptp(exact_pts, axis=0).max() + 0.05)
        trigger(w, "interpolateAction")
        click_a = tools._ends["A"]
        assert click_a is not None and click_a[0] == "example"
        tools._ends["B"] = ("code", np.zeros(4, np.float32))
        tools.update_interpolation()
        qtbot.waitUntil(lambda: "nearest stored codes" in find(w, QtWidgets.QLabel, "interpolateInfo").text(),
                        timeout=5000)
        assert n_points(view._path) == find(w, QtWidgets.QSpinBox, "interpStepsSpin").value()

        # Resetting the model clears the tools and disables their actions.
        w.session.reset()
        qtbot.waitUntil(lambda: not find(w, QtGui.QAction, "traverseAction").isEnabled(), timeout=2000)
        assert tools.prior_grid.to_array() is None
        assert n_points(view._ellipses) == 0
    finally:
        w.session.shutdown(3000)


def test_tools_open_beside_the_curves_without_taking_the_maps_room(qtbot, win2):
    w = win2
    view = find(w, QtWidgets.QWidget, "latentMap")
    click_example(qtbot, w, 40)  # the tools need an example: no message bar comes and goes
    qtbot.wait(50)
    size = view.size()
    kl_width = w.monitor.kl_dock.width()
    for name in ACTIONS[1:]:
        trigger(w, name)
        qtbot.wait(50)
        assert view.size() == size, name
    dock = find(w, QtWidgets.QDockWidget, "priorDock")
    assert dock.isVisible() and w.monitor.kl_dock in w.tabifiedDockWidgets(dock)
    # The first tool opened gets a good part of the width under the map (the curves keep what they need).
    room = dock.width() + w.loss_dock.width()
    assert dock.width() > kl_width
    assert dock.width() >= min(0.38 * room, room - w.loss_dock.minimumSizeHint().width() - 12)
    # The tabs of the tool docks show whole titles.
    bars = [b for b in w.findChildren(QtWidgets.QTabBar) if b.parent() is w and b.count() > 2]
    assert bars and all(b.elideMode() == QtCore.Qt.ElideNone for b in bars)
    titles = {bars[0].tabText(i) for i in range(bars[0].count())}
    assert {"ELBO", "Interpolation", "Traversals", "Prior samples"} <= titles


def test_columns_for_makes_the_largest_square_tiles():
    assert explore_docks.columns_for(64, 800, 200) == 16  # wide and short: 4 rows of 16
    assert explore_docks.columns_for(64, 300, 300) == 8
    assert explore_docks.columns_for(16, 200, 800) == 2  # tall and narrow: 8 rows of 2
    assert explore_docks.columns_for(1, 10, 10) == 1
