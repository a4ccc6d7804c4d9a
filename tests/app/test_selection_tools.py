"""Lasso and box selection on the map, the selection panel and the neighbours panel, driven offscreen."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from PySide6 import QtCore, QtGui, QtWidgets

from app.main_window import MainWindow
from app.session import TRAINED
from vae_core import selection as S

from helpers import press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Mod = QtCore.Qt.KeyboardModifier


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


@pytest.fixture
def win(qtbot):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1300, 850)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    find(w, QtWidgets.QSpinBox, "latentDimSpin").setValue(2)
    find(w, QtWidgets.QLineEdit, "hiddenEdit").setText("64")
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(1)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None, timeout=120000)
    yield w
    w.session.shutdown(3000)


def _send(vp, etype, pos, button, buttons, mods):
    gpos = QtCore.QPointF(vp.mapToGlobal(pos.toPoint()))
    QtWidgets.QApplication.sendEvent(vp, QtGui.QMouseEvent(etype, pos, gpos, button, buttons, mods))


def drag(view, pixels, mods=Mod.NoModifier):
    """Press at the first viewport pixel, move through the others and release at the last, holding ``mods``."""
    vp = view.viewport()
    left = QtCore.Qt.LeftButton
    pts = [QtCore.QPointF(*p) for p in pixels]
    _send(vp, QtCore.QEvent.MouseButtonPress, pts[0], left, left, mods)
    for p in pts[1:]:
        _send(vp, QtCore.QEvent.MouseMove, p, QtCore.Qt.NoButton, left, mods)
    _send(vp, QtCore.QEvent.MouseButtonRelease, pts[-1], left, QtCore.Qt.NoButton, mods)


def ring(cx, cy, r, n=24):
    """A polygon of ``n`` viewport pixels around (cx, cy), every vertex far from the last."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(cx + r * np.cos(t), cy + r * 0.8 * np.sin(t)) for t in a]


def in_data(view, pixels):
    return np.array([view.map_to_data(QtCore.QPointF(*p)) for p in pixels])


def wait_count(qtbot, tools, expected):
    qtbot.waitUntil(lambda: tools.summary is not None and tools.summary.count == int(expected.sum())
                    and np.array_equal(tools.mask, expected), timeout=10000)


def test_lasso_box_add_subtract_panel_exports_and_clear(qtbot, win, tmp_path, monkeypatch):
    w, s = win, win.session
    view, tools = w.latent_view, w.selection_tools
    act = find(w, QtGui.QAction, "lassoAction")
    assert act.isEnabled() and act.isCheckable()
    act.trigger()
    assert act.isChecked()
    panel = find(w, QtWidgets.QDockWidget, "selectionPanel")
    assert panel.isVisible()
    qtbot.waitExposed(panel)
    QtWidgets.QApplication.processEvents()  # the map gives the panel its room before the drags
    vp = view.viewport()
    cx, cy, r = vp.width() / 2, vp.height() / 2, min(vp.width(), vp.height()) / 4
    before = np.mean(view.view_box().viewRange(), axis=1)

    first = ring(cx - r / 3, cy, r)
    drag(view, first)
    m1 = S.points_in_polygon(s.xy, in_data(view, first))
    assert 0 < m1.sum() < len(m1)
    wait_count(qtbot, tools, m1)
    np.testing.assert_allclose(np.mean(view.view_box().viewRange(), axis=1), before)  # the drag did not pan the map
    assert view.selection_count() == m1.sum()

    second = ring(cx + r / 2, cy, r / 2)
    drag(view, second, Mod.ShiftModifier)
    m2 = S.combine(m1, S.points_in_polygon(s.xy, in_data(view, second)), "add")
    assert m2.sum() > m1.sum()
    wait_count(qtbot, tools, m2)

    box = [(cx - r / 4, cy - r / 4), (cx, cy), (cx + r / 4, cy + r / 4)]
    drag(view, box, Mod.AltModifier | Mod.ControlModifier)
    corners = in_data(view, [box[0], box[-1]])
    m3 = S.combine(m2, S.points_in_box(s.xy, corners[0], corners[1]), "subtract")
    assert 0 < m3.sum() < m2.sum()
    wait_count(qtbot, tools, m3)

    # The panel: count, histogram and grid against the engine's own figures.
    n_classes = len(s.label_names)
    expected = S.selection_summary(m3, s.labels, n_classes, s.latents, max_examples=256)
    info = tools.selection_dock.info
    assert f"{int(m3.sum()):,} of {len(m3):,}" in info.text()
    np.testing.assert_array_equal(tools.histogram.counts(), S.label_histogram(s.labels, m3, n_classes))
    np.testing.assert_array_equal(tools.summary.indices, expected.indices)
    np.testing.assert_allclose(tools.summary.mean_code, expected.mean_code, rtol=1e-6)
    assert tools.mean_canvas.image() is not None
    assert tools.selection_grid.to_array() is not None

    csv_path = tmp_path / "sel.csv"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(csv_path), ""))
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "selectionExportCsvButton"), QtCore.Qt.LeftButton)
    with open(csv_path, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["index", "label", "mu_1", "mu_2"]
    idx = np.flatnonzero(m3)
    assert [int(r[0]) for r in rows[1:]] == idx.tolist()
    assert [r[1] for r in rows[1:]] == [s.label_names[s.labels[i]] for i in idx]
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:4]] for r in rows[1:]]), s.latents[idx], rtol=1e-5, atol=1e-6)

    png_path = tmp_path / "sel.png"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(png_path), ""))
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "selectionExportPngButton"), QtCore.Qt.LeftButton)
    with Image.open(png_path) as im:
        assert im.size[0] > 0 and im.size[1] > 0

    clear = find(w, QtWidgets.QPushButton, "selectionClearButton")
    qtbot.mouseClick(clear, QtCore.Qt.LeftButton)
    assert tools.mask is None and view.selection_count() == 0
    assert not clear.isEnabled()

    # Out of lasso mode a click picks an example again.
    act.trigger()
    assert not act.isChecked()
    x, y = s.xy[5]
    with qtbot.waitSignal(view.exampleClicked, timeout=2000):
        press(view, x, y)
        release(view, x, y)


def test_selection_clears_when_the_model_goes(qtbot, win):
    w, s, tools = win, win.session, win.selection_tools
    mask = np.zeros(len(s.xy), dtype=bool)
    mask[::7] = True
    tools.set_selection(mask)
    wait_count(qtbot, tools, mask)
    s.reset()
    qtbot.waitUntil(lambda: tools.mask is None, timeout=5000)
    assert w.latent_view.selection_count() == 0
    assert not find(w, QtGui.QAction, "lassoAction").isEnabled()


def test_neighbours_are_the_nearest_codes(qtbot, win):
    w, s, tools = win, win.session, win.selection_tools
    view = w.latent_view
    i = 17
    x, y = s.xy[i]
    with qtbot.waitSignal(view.exampleClicked, timeout=2000) as sig:
        press(view, x, y)
        release(view, x, y)
    picked = sig.args[0]
    find(w, QtGui.QAction, "neighboursAction").trigger()
    qtbot.waitUntil(lambda: tools.neighbours is not None and tools.neighbours[0] == s.selected, timeout=10000)
    assert s.selected == picked
    k = find(w, QtWidgets.QSpinBox, "neighboursKSpin").value()
    ex, idx, dist = tools.neighbours
    d = np.linalg.norm(s.latents.astype(np.float64) - s.latents[ex].astype(np.float64), axis=1)
    d[ex] = np.inf
    brute = np.sort(d)[:k]
    np.testing.assert_allclose(dist, brute, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d[idx], brute, rtol=1e-6, atol=1e-9)
    assert view.marked_count() == k
    assert tools.neighbour_grid.grid_shape() == (1, k)

    find(w, QtWidgets.QSpinBox, "neighboursKSpin").setValue(5)
    qtbot.waitUntil(lambda: tools.neighbours is not None and len(tools.neighbours[1]) == 5, timeout=10000)
    assert view.marked_count() == 5


def test_search_by_image_encodes_places_and_finds_neighbours(qtbot, win, tmp_path, monkeypatch):
    w, s, tools = win, win.session, win.selection_tools
    i = 23
    img = np.asarray(s.dataset.images[i])
    assert img.dtype == np.float32 and img.shape[0] == 1  # grey levels in [0, 1]
    grey = np.rint(img[0] * 255).astype(np.uint8)
    expected = (grey.astype(np.float32) / 255)[None]
    path = tmp_path / "query.png"
    Image.fromarray(grey).save(path)
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    find(w, QtGui.QAction, "searchImageAction").trigger()
    qtbot.waitUntil(lambda: tools.search_result is not None, timeout=10000)
    r = tools.search_result
    assert find(w, QtWidgets.QDockWidget, "searchPanel").isVisible()
    np.testing.assert_allclose(r["x"], expected, atol=1e-7)  # same size: the file is the example's grey levels
    mu = np.asarray(s.encoder.encode(expected[None])[0])[0]
    np.testing.assert_allclose(r["mu"], mu, atol=1e-5)
    np.testing.assert_allclose(r["xy"], s.projection.transform(mu[None])[0], atol=1e-4)
    k = find(w, QtWidgets.QSpinBox, "neighboursKSpin").value()
    d = np.linalg.norm(s.latents.astype(np.float64) - r["mu"].astype(np.float64), axis=1)
    np.testing.assert_allclose(r["distances"], np.sort(d)[:k], rtol=1e-5, atol=1e-6)
    assert r["ellipses"] is not None and len(r["ellipses"]) == 2
    x, y = tools.query_marker.getData()
    assert len(x) == 1 and abs(x[0] - r["xy"][0]) < 1e-6 and abs(y[0] - r["xy"][1]) < 1e-6
    assert tools.search_pair.grid_shape() == (1, 2)

    # A larger colour file dropped on the panel is resized and made grey like the dataset.
    big = tmp_path / "big.png"
    Image.fromarray(np.kron(grey, np.ones((5, 5), np.uint8))).convert("RGB").save(big)
    tools.search_result = None
    md = QtCore.QMimeData()
    md.setUrls([QtCore.QUrl.fromLocalFile(str(big))])
    target = tools.search_dock.widget()
    enter = QtGui.QDragEnterEvent(QtCore.QPoint(5, 5), QtCore.Qt.CopyAction, md, QtCore.Qt.LeftButton,
                                  QtCore.Qt.NoModifier)
    QtWidgets.QApplication.sendEvent(target, enter)
    assert enter.isAccepted()  # an image file is welcome
    drop = QtGui.QDropEvent(QtCore.QPointF(5, 5), QtCore.Qt.CopyAction, md, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier)
    QtWidgets.QApplication.sendEvent(target, drop)
    qtbot.waitUntil(lambda: tools.search_result is not None, timeout=10000)
    assert tools.search_result["x"].shape == img.shape and tools.search_result["name"] == str(big)

    # A file that is no image is reported by name; the last result stays.
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    said = []
    monkeypatch.setattr(w, "show_message", lambda level, text: said.append((level, text)))
    tools.search_image(str(bad))
    qtbot.waitUntil(lambda: bool(said), timeout=10000)
    assert said[0][0] == "error" and "bad.png" in said[0][1]
    assert tools.search_result is not None

    s.reset()
    qtbot.waitUntil(lambda: tools.search_result is None, timeout=5000)
    assert len(tools.query_marker.getData()[0]) == 0


def test_load_image_like_takes_the_datasets_shape_and_type(tmp_path):
    from vae_core.data.images import load_image_like
    from vae_core.errors import DatasetError

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:15, :, 3] = 255  # the lower half is transparent: black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    grey = load_image_like(str(tmp_path / "a.png"), (1, 6, 8), np.uint8)
    assert grey.shape == (1, 6, 8) and grey.dtype == np.uint8
    assert grey[0, 0, 0] == 76 and grey[0, -1, 0] == 0  # red as grey (ITU-R 601-2), transparent onto black
    colour = load_image_like(str(tmp_path / "a.png"), (3, 6, 8), np.float32)
    assert colour.shape == (3, 6, 8) and colour.dtype == np.float32
    np.testing.assert_allclose(colour[:, 0, 0], [1.0, 0.0, 0.0], atol=0.01)  # resampling may round down
    deep = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    Image.fromarray(deep).save(tmp_path / "d.png")
    f = load_image_like(str(tmp_path / "d.png"), (1, 10, 10), np.float32)
    np.testing.assert_allclose(f[0], deep / 65535.0, atol=1e-6)
    (tmp_path / "x.png").write_bytes(b"no")
    with pytest.raises(DatasetError, match="x.png"):
        load_image_like(str(tmp_path / "x.png"), (1, 8, 8))


def test_drawing_is_encoded_as_the_stroke_grows(qtbot, win):
    w, s, tools = win, win.session, win.selection_tools
    act = find(w, QtGui.QAction, "drawAction")
    assert act.isEnabled()  # digits are grey
    act.trigger()
    assert find(w, QtWidgets.QDockWidget, "drawPanel").isVisible()
    canvas = tools.draw_canvas
    side = min(canvas.width(), canvas.height())
    ox, oy = (canvas.width() - side) // 2, (canvas.height() - side) // 2

    def at(fx, fy):
        return QtCore.QPoint(ox + int(fx * side), oy + int(fy * side))

    qtbot.mousePress(canvas, QtCore.Qt.LeftButton, pos=at(0.5, 0.2))
    for t in np.linspace(0.2, 0.5, 6):
        _send(canvas, QtCore.QEvent.MouseMove, QtCore.QPointF(at(0.5, t)), QtCore.Qt.NoButton, QtCore.Qt.LeftButton,
              Mod.NoModifier)
    # Still drawing: the stroke so far is already encoded.
    qtbot.waitUntil(lambda: tools.draw_result is not None, timeout=10000)
    first = tools.draw_result
    for t in np.linspace(0.5, 0.8, 6):
        _send(canvas, QtCore.QEvent.MouseMove, QtCore.QPointF(at(0.5 - (t - 0.5), t)), QtCore.Qt.NoButton,
              QtCore.Qt.LeftButton, Mod.NoModifier)
    qtbot.mouseRelease(canvas, QtCore.Qt.LeftButton, pos=at(0.2, 0.8))
    qtbot.waitUntil(lambda: tools.draw_result is not first and tools.draw_result is not None
                    and np.array_equal(tools.draw_result["x"][0], _expected(canvas, s)), timeout=10000)
    r = tools.draw_result
    assert r["x"].shape == s.dataset.images.shape[1:] and r["x"].max() > 0
    assert not np.array_equal(r["x"], first["x"])  # the stroke grew
    mu = np.asarray(s.encoder.encode(r["x"][None])[0])[0]
    np.testing.assert_allclose(r["mu"], mu, atol=1e-5)
    x, y = tools.query_marker.getData()
    assert len(x) == 1 and abs(x[0] - r["xy"][0]) < 1e-6 and abs(y[0] - r["xy"][1]) < 1e-6
    assert tools.draw_recon.image() is not None

    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "drawClearButton"), QtCore.Qt.LeftButton)
    assert canvas.is_blank() and canvas.to_array().max() == 0
    assert tools.draw_result is None and len(tools.query_marker.getData()[0]) == 0


def _expected(canvas, s):
    """The drawing as the dataset's examples are: resized, grey levels in [0, 1]."""
    _c, h, w = s.dataset.images.shape[1:]
    return canvas.scaled(w, h).astype(np.float32) / 255


def test_map_selection_layer_follows_its_points(qtbot):
    from app.widgets.latent_view import LatentView

    view = LatentView()
    qtbot.addWidget(view)
    view.resize(500, 400)
    view.show()
    qtbot.waitExposed(view)
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(200_000, 2)).astype(np.float32)
    view.set_points(xy, rng.integers(0, 10, 200_000))
    mask = xy[:, 0] > 1.0
    view.set_selection_mask(mask)
    view.set_marked([3, 4, 5])
    assert view.selection_count() == mask.sum() and view.marked_count() == 3
    view.grab()  # paints the layers
    view.set_points(xy * 2, None)  # new positions of the same examples: the selection stays
    np.testing.assert_array_equal(view.selection_mask(), mask)
    assert view.selection_count() == mask.sum() and view.marked_count() == 3
    view.set_points(xy[:10], None)  # another set of examples: the selection goes
    assert view.selection_mask() is None and view.selection_count() == 0 and view.marked_count() == 0
    with pytest.raises(ValueError):
        view.set_selection_mask(np.ones(11, dtype=bool))
