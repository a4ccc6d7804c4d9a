"""Tests for the plotting and image widgets: LossPlot, LatentView, DecodeCanvas and friends.

Run offscreen (tests/conftest.py sets QT_QPA_PLATFORM).  These tests check
behaviour only; how fast the widgets draw is measured in ``bench/``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from app.widgets.decode_canvas import DecodeCanvas, ImageGrid, ImagePair, array_to_qimage
from app.widgets.latent_view import LatentView
from app.widgets.loss_plot import LossPlot, decimate_minmax
from vae_core.explore import compose_grid

# --- helpers -------------------------------------------------------------------------------

LEFT = QtCore.Qt.MouseButton.LeftButton
NOBUTTON = QtCore.Qt.MouseButton.NoButton
NOMOD = QtCore.Qt.KeyboardModifier.NoModifier


def send_mouse(widget: QtWidgets.QWidget, kind: QtCore.QEvent.Type, pos: QtCore.QPointF,
               button=LEFT, buttons=LEFT) -> None:
    """Deliver a mouse event straight to ``widget`` (reliable with buttons held, offscreen)."""
    pos = QtCore.QPointF(pos)
    glob = QtCore.QPointF(widget.mapToGlobal(pos.toPoint()))
    ev = QtGui.QMouseEvent(kind, pos, glob, button, buttons, NOMOD)
    QtWidgets.QApplication.sendEvent(widget, ev)


def grab_is_blank(widget: QtWidgets.QWidget) -> bool:
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB32)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=img.sizeInBytes()).reshape(img.height(), -1)
    return arr.min() == arr.max()


@pytest.fixture
def latent_view(qtbot):
    view = LatentView()
    qtbot.addWidget(view)
    view.resize(600, 500)
    view.show()
    qtbot.waitExposed(view)
    return view


def three_clusters(n_per=200, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    xy = np.concatenate([c + 0.5 * rng.normal(size=(n_per, 2)) for c in centres])
    labels = np.repeat(np.arange(3), n_per)
    return xy, labels


# --- LossPlot ------------------------------------------------------------------------------

def test_decimate_keeps_extremes_and_last_point():
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 500.0)
    y[54_321] = 50.0
    xd, yd = decimate_minmax(x, y, 2000)
    assert len(xd) <= 2100
    assert xd[0] == 0 and xd[-1] == x[-1]
    assert yd.max() == 50.0
    assert np.all(np.diff(xd) > 0)
    # Clipping to a visible range keeps one point beyond each edge.
    xc, _ = decimate_minmax(x, y, 2000, lo=1000.5, hi=1999.5)
    assert xc[0] == 1000 and xc[-1] == 2000


def test_loss_plot_buffers_and_redraws_on_timer(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.resize(600, 400)
    lp.show()
    assert lp.objectName() == "lossPlot"
    total, chunk = 20_000, 250
    rng = np.random.default_rng(1)
    losses = []
    for start in range(0, total, chunk):
        s = np.arange(start, start + chunk)
        recon = 100.0 * np.exp(-s / 4000.0) + rng.random(chunk)
        kl = 5.0 * (1.0 - np.exp(-s / 3000.0))
        lp.append(s, recon, kl, recon + kl)
        losses.append(recon + kl)
    assert lp.point_count() == total
    # Appending does not draw: the timer does.
    assert lp.redraw_pending()
    qtbot.waitUntil(lambda: not lp.redraw_pending(), timeout=2000)
    for name in ("recon", "kl", "loss"):
        x, y = lp.curve_data(name)
        assert 100 < len(x) <= 4000
        assert x[-1] == total - 1
        assert x[0] == 0
        assert np.all(np.isfinite(y))
    # Decimation keeps the true extremes of the noisy curve.
    _, y = lp.curve_data("loss")
    losses = np.concatenate(losses)
    assert y.max() == losses.max() and y.min() == losses.min()


def test_loss_plot_draws_a_long_run_decimated_to_its_ends_and_extremes(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.resize(600, 400)
    lp.show()
    s = np.arange(150_000)
    recon = np.exp(-s / 1e4) + 1
    recon[77_777] = 9.0  # one spike in the middle of the run
    lp.append(s, recon, np.ones_like(s, dtype=float), recon + 1)
    lp.flush()
    x, y = lp.curve_data("recon")
    assert len(x) <= 4000 and lp.point_count() == 150_000
    assert x[0] == 0 and x[-1] == 149_999
    assert y.max() == 9.0 and y.min() == recon.min()


def test_loss_plot_markers_epochs_and_log_scale(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.show()
    s = np.arange(1000)
    kl = np.zeros(1000)  # posterior collapse: KL exactly zero
    recon = np.linspace(200, 90, 1000)
    lp.append(s, recon, kl, recon)
    lp.add_epoch(499, 120.0, 0.0, 120.0)
    lp.add_epoch(999, 95.0, 0.0, 95.0)
    lp.add_marker(300, "beta 1 -> 4")
    lp.add_marker(700, "lr 1e-3 -> 1e-4")
    lp.flush()
    assert lp.markers() == [(300.0, "beta 1 -> 4"), (700.0, "lr 1e-3 -> 1e-4")]
    ex, ey = lp.curve_data("epoch_loss")
    assert list(ex) == [499.0, 999.0] and list(ey) == [120.0, 95.0]
    top, bottom = lp.plots()
    texts = [label.text for _, label in top.legend.items]
    assert "held-out \u2212ELBO" in texts
    # A labelled dashed line on both plots.
    for plot in (top, bottom):
        lines = [it for it in plot.items if it.__class__.__name__ == "InfiniteLine"]
        assert sorted(line.value() for line in lines) == [300.0, 700.0]
        assert {line.label.textItem.toPlainText() for line in lines} == {
            "beta 1 -> 4", "lr 1e-3 -> 1e-4"}

    check = lp.findChild(QtWidgets.QCheckBox, "logScaleCheck")
    assert check is not None and not check.isChecked()
    check.setChecked(True)
    assert lp.log_y()
    for name in ("kl", "epoch_kl", "recon"):
        _, y = lp.curve_data(name)
        assert np.all(np.isfinite(y)) and np.all(y > 0)
    # pyqtgraph's own mapping of the drawn data is finite as well.
    _, ylog = lp._curves["kl"].getData()
    assert np.all(np.isfinite(ylog))
    QtWidgets.QApplication.processEvents()
    assert not grab_is_blank(lp)
    lp.set_log_y(False)
    assert not check.isChecked()
    assert np.all(lp.curve_data("kl")[1] == 0.0)

    lp.clear()
    assert lp.point_count() == 0 and lp.markers() == [] and lp.epochs() == []
    assert len(lp.curve_data("recon")[0]) == 0


def test_loss_plot_set_history(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    s = np.arange(0, 5000, 10)
    lp.set_history(s, s * 0 + 3.0, s * 0 + 1.0, s * 0 + 4.0,
                   epochs=[(2490, 3.1, 1.1, 4.2), (4990, 3.0, 1.0, 4.0)],
                   markers=[(2500, "beta 1 -> 4")])
    assert lp.point_count() == len(s)
    assert not lp.redraw_pending()
    assert lp.curve_data("kl")[0][-1] == 4990
    assert len(lp.epochs()) == 2 and lp.markers() == [(2500.0, "beta 1 -> 4")]


# --- LatentView ----------------------------------------------------------------------------

def test_latent_view_points_and_legend(latent_view):
    xy, labels = three_clusters()
    latent_view.set_message("Train a model to see its latent map")
    assert latent_view.message()
    latent_view.set_points(xy, labels, ["zero", "one", "two"])
    assert latent_view.message() == ""
    assert latent_view.objectName() == "latentMap"
    assert latent_view.legend_labels() == ["zero", "one", "two"]
    assert latent_view.point_count() == len(xy)
    # Fewer classes later: the legend follows, unused items are emptied.
    latent_view.set_points(xy[:400], labels[:400], ["zero", "one", "two"], autorange=False)
    assert latent_view.legend_labels() == ["zero", "one"]
    # Unlabelled points.
    latent_view.set_points(xy, None)
    assert latent_view.legend_labels() == []
    QtWidgets.QApplication.processEvents()
    assert not grab_is_blank(latent_view)


def test_latent_view_drag_emits_points_in_data_coordinates(latent_view, qtbot):
    xy, labels = three_clusters()
    latent_view.set_points(xy, labels, ["a", "b", "c"])
    QtWidgets.QApplication.processEvents()
    vp = latent_view.viewport()
    picked: list[tuple[float, float]] = []
    finished: list[bool] = []
    latent_view.pointPicked.connect(lambda x, y: picked.append((x, y)))
    latent_view.dragFinished.connect(lambda: finished.append(True))
    path = [(-3.0, -2.0), (-1.0, -1.0), (0.5, 0.0), (2.0, 1.0), (3.0, 2.5)]
    pw, ph = latent_view.pixel_size()
    start = latent_view.map_from_data(*path[0])
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonPress, start)
    for x, y in path[1:]:
        send_mouse(vp, QtCore.QEvent.Type.MouseMove, latent_view.map_from_data(x, y),
                   button=NOBUTTON, buttons=LEFT)
    assert not finished
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonRelease,
               latent_view.map_from_data(*path[-1]), buttons=NOBUTTON)
    assert finished == [True]
    assert len(picked) == len(path)
    for (px, py), (x, y) in zip(picked, path):
        assert abs(px - x) <= 1.5 * pw and abs(py - y) <= 1.5 * ph
    # Left drag never pans the view.
    assert latent_view.pixel_size() == (pw, ph)


def test_latent_view_click_on_point_emits_example(latent_view, qtbot):
    xy, labels = three_clusters()
    latent_view.set_points(xy, labels)
    QtWidgets.QApplication.processEvents()
    target = 123
    pos = latent_view.map_from_data(*xy[target]).toPoint()
    events: list[tuple] = []
    latent_view.pointPicked.connect(lambda x, y: events.append(("picked", x, y)))
    latent_view.exampleClicked.connect(lambda i: events.append(("clicked", i)))
    latent_view.dragFinished.connect(lambda: events.append(("finished",)))
    with qtbot.waitSignal(latent_view.dragFinished, timeout=1000):
        qtbot.mousePress(latent_view.viewport(), LEFT, pos=pos)
        qtbot.mouseRelease(latent_view.viewport(), LEFT, pos=pos)
    assert [e[0] for e in events] == ["picked", "clicked", "finished"]
    clicked = [[e[1]] for e in events if e[0] == "clicked"]
    assert clicked == [[latent_view.hit_test(*latent_view.map_to_data(QtCore.QPointF(pos)))]]
    assert clicked[0][0] is not None
    # The clicked example is the point nearest the press in screen pixels.
    d = np.hypot(*(xy[clicked[0][0]] - xy[target]) / latent_view.pixel_size())
    assert d <= 2.0

    # A click in empty space picks a point but names no example.
    empty = latent_view.map_from_data(0.0, 0.0).toPoint()
    clicks: list[int] = []
    latent_view.exampleClicked.connect(clicks.append)
    qtbot.wait(QtWidgets.QApplication.doubleClickInterval() + 50)  # not a double click
    with qtbot.waitSignal(latent_view.dragFinished, timeout=1000):
        qtbot.mousePress(latent_view.viewport(), LEFT, pos=empty)
        qtbot.mouseRelease(latent_view.viewport(), LEFT, pos=empty)
    assert clicks == []


def test_latent_view_hover_emits_index(latent_view, qtbot):
    xy, labels = three_clusters()
    latent_view.set_points(xy, labels, ["a", "b", "c"])
    latent_view.set_images(np.random.default_rng(0).random((len(xy), 8, 8)))
    QtWidgets.QApplication.processEvents()
    i = 42
    pos = latent_view.map_from_data(*xy[i])
    with qtbot.waitSignal(latent_view.hovered, timeout=1000) as blocker:
        send_mouse(latent_view.viewport(), QtCore.QEvent.Type.MouseMove, pos,
                   button=NOBUTTON, buttons=NOBUTTON)
    idx = blocker.args[0]
    assert idx == latent_view.hit_test(*latent_view.map_to_data(pos))
    assert latent_view.hover_preview().isVisible()
    assert f"#{idx}" in latent_view.hover_preview().text()
    off = latent_view.map_from_data(0.0, 0.0)
    with qtbot.waitSignal(latent_view.hovered, timeout=1000) as blocker:
        send_mouse(latent_view.viewport(), QtCore.QEvent.Type.MouseMove, off,
                   button=NOBUTTON, buttons=NOBUTTON)
    assert blocker.args == [-1]
    assert not latent_view.hover_preview().isVisible()


def test_latent_view_middle_drag_pans_and_wheel_zooms(latent_view, qtbot):
    xy, labels = three_clusters()
    latent_view.set_points(xy, labels)
    QtWidgets.QApplication.processEvents()
    vb = latent_view.view_box()
    (x0, x1), (y0, y1) = vb.viewRange()
    vp = latent_view.viewport()
    picked: list = []
    latent_view.pointPicked.connect(lambda x, y: picked.append((x, y)))
    mid = QtCore.Qt.MouseButton.MiddleButton
    start = QtCore.QPointF(300, 250)
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonPress, start, button=mid, buttons=mid)
    for dx in (10, 30, 60):
        send_mouse(vp, QtCore.QEvent.Type.MouseMove, start + QtCore.QPointF(dx, 0),
                   button=NOBUTTON, buttons=mid)
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, start + QtCore.QPointF(60, 0),
               button=mid, buttons=NOBUTTON)
    (nx0, nx1), _ = vb.viewRange()
    assert nx0 < x0 and nx1 - nx0 == pytest.approx(x1 - x0)  # panned, not zoomed
    assert picked == []
    # The wheel zooms in.
    width = nx1 - nx0
    ev = QtGui.QWheelEvent(QtCore.QPointF(300, 250), QtCore.QPointF(vp.mapToGlobal(QtCore.QPoint(300, 250))),
                           QtCore.QPoint(0, 0), QtCore.QPoint(0, 120), NOBUTTON, NOMOD,
                           QtCore.Qt.ScrollPhase.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(vp, ev)
    (zx0, zx1), _ = vb.viewRange()
    assert zx1 - zx0 < width
    # A double click fits the view to the data again.
    qtbot.mouseDClick(vp, LEFT, pos=QtCore.QPoint(300, 250))
    (ax0, ax1), _ = vb.viewRange()
    assert ax0 <= xy[:, 0].min() and ax1 >= xy[:, 0].max()
    assert ax1 - ax0 < 2 * np.ptp(xy[:, 0])


def brute_force_hit(xy, x, y, pw, ph, radius_px):
    d2 = ((xy[:, 0] - x) / pw) ** 2 + ((xy[:, 1] - y) / ph) ** 2
    j = int(np.argmin(d2))
    return j if d2[j] <= radius_px ** 2 else None


def test_hit_test_matches_brute_force_at_70k(latent_view):
    rng = np.random.default_rng(7)
    n = 70_000
    xy = rng.normal(size=(n, 2)) * np.array([3.0, 1.0])
    labels = rng.integers(0, 10, n)
    latent_view.set_points(xy, labels, [str(i) for i in range(10)])
    QtWidgets.QApplication.processEvents()
    pw, ph = latent_view.pixel_size()
    queries = np.concatenate([xy[rng.integers(0, n, 100)] + rng.normal(size=(100, 2)) * 0.01,
                              rng.uniform(-12, 12, size=(100, 2))])
    for x, y in queries:
        assert latent_view.hit_test(x, y, radius_px=6) == brute_force_hit(xy, x, y, pw, ph, 6)
    # A class hidden from the legend is not hit.
    cls = int(labels[0])
    latent_view._clouds[cls].setVisible(False)
    assert latent_view.hit_test(*xy[0]) != 0


def test_new_points_at_70k_replace_the_old_ones_and_keep_the_view(latent_view):
    rng = np.random.default_rng(3)
    n = 70_000
    xy = rng.normal(size=(n, 2))
    labels = rng.integers(0, 10, n)
    latent_view.set_points(xy, labels, [str(i) for i in range(10)])
    QtWidgets.QApplication.processEvents()
    view = latent_view.view_range()
    for _ in range(3):
        moved = xy + rng.normal(size=(n, 2)) * 0.01
        latent_view.set_points(moved, labels, autorange=False)
        latent_view.plot_widget().viewport().repaint()
        assert latent_view.point_count() == n
        np.testing.assert_array_equal(latent_view.points(), moved)
        np.testing.assert_array_equal(latent_view.labels(), labels)
        assert latent_view.view_range() == view, "autorange=False keeps the user's view"


def test_latent_view_overlays_and_export(latent_view, tmp_path):
    xy, labels = three_clusters()
    latent_view.set_points(xy, labels)
    latent_view.set_axis_labels("PC1", "PC2")
    assert latent_view.plot_widget().getPlotItem().getAxis("bottom").labelText == "PC1"
    assert latent_view.crosshair() is None
    latent_view.set_crosshair(1.0, 2.0)
    assert latent_view.crosshair() == (1.0, 2.0)
    assert latent_view._cross_v.isVisible() and latent_view._cross_v.value() == 1.0
    latent_view.set_far_indicator(True)
    assert latent_view._far_text.isVisible()
    latent_view.set_far_indicator(False)
    assert not latent_view._far_text.isVisible()
    latent_view.hide_crosshair()
    assert not latent_view._cross_v.isVisible()
    latent_view.set_path(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]))
    latent_view.set_ellipses([(np.array([0.0, 0.0]), 2.0, 1.0, 30.0),
                              (np.array([3.0, 0.0]), 1.0, 1.0, 0.0)])
    ex, ey = latent_view._ellipses.getData()
    assert len(ex) == 2 * 66
    latent_view.set_highlight(5)
    assert latent_view.highlight() == 5
    latent_view.set_path(None)
    latent_view.set_ellipses(None)
    latent_view.set_highlight(None)
    out = tmp_path / "map.png"
    assert latent_view.export_png(out)
    img = QtGui.QImage(str(out))
    assert img.width() > 100 and img.height() > 100


def test_latent_view_follows_dark_palette(latent_view):
    pal = QtGui.QPalette(latent_view.palette())
    pal.setColor(QtGui.QPalette.ColorRole.Base, QtGui.QColor("#1e1e1e"))
    pal.setColor(QtGui.QPalette.ColorRole.Text, QtGui.QColor("#e6e6e6"))
    latent_view.setPalette(pal)
    QtWidgets.QApplication.processEvents()
    bg = latent_view.plot_widget().backgroundBrush().color()
    assert bg.name() == "#1e1e1e"


# --- DecodeCanvas, ImagePair, ImageGrid ------------------------------------------------------

def test_decode_canvas_set_image_and_paint(qtbot):
    c = DecodeCanvas()
    qtbot.addWidget(c)
    c.resize(300, 330)
    c.show()
    qtbot.waitExposed(c)
    assert c.objectName() == "decodeCanvas"
    assert c.image() is None and c.image_version() == 0
    assert not grab_is_blank(c)  # the hint text
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)) * 1.4 - 0.2  # out of range on purpose: clipped
    c.set_image(img)
    assert c.image_version() == 1
    assert c.image().min() >= 0.0 and c.image().max() <= 1.0
    c.set_caption("z = (0.10, -1.20)")
    c.set_image(rng.random((28, 28, 3)))
    assert c.image_version() == 2 and c.image().shape == (28, 28, 3)
    rect = c.image_rect()
    assert rect.width() == rect.height() > 100
    frame = c.grab().toImage()
    centre = frame.pixelColor(int(rect.center().x()), int(rect.center().y()))
    expected = c.image()[14, 14]
    assert abs(centre.redF() - expected[0]) < 0.02
    c.clear()
    assert c.image() is None


def test_array_to_qimage_formats():
    g = array_to_qimage(np.array([[0.0, 1.0], [0.5, 2.0]]))
    assert g.format() == QtGui.QImage.Format.Format_Grayscale8
    assert QtGui.qGray(g.pixel(1, 0)) == 255 and QtGui.qGray(g.pixel(0, 1)) == 128
    rgb = array_to_qimage(np.zeros((3, 5, 3)))
    assert (rgb.width(), rgb.height()) == (5, 3)
    with pytest.raises(ValueError):
        array_to_qimage(np.zeros((3, 5, 2)))


def test_image_pair(qtbot):
    p = ImagePair()
    qtbot.addWidget(p)
    p.resize(320, 200)
    p.show()
    assert p.objectName() == "reconPair"
    p.set_pair(np.zeros((28, 28)), np.ones((28, 28)), title="example #5 (digit 3)")
    assert p.title() == "example #5 (digit 3)"
    assert p.pair()[1].mean() == 1.0
    assert not grab_is_blank(p)


def test_image_grid_compose_and_save(qtbot, tmp_path):
    g = ImageGrid()
    qtbot.addWidget(g)
    g.resize(400, 300)
    g.show()
    imgs = np.stack([np.full((4, 5), v) for v in np.linspace(0, 1, 7)])
    tiled = compose_grid(imgs, 3, pad=2)
    assert tiled.shape == (3 * 4 + 2 * 2, 3 * 5 + 2 * 2)
    g.set_grid(tiled, 3, 3, pad=2, row_labels=["a", "b", "c"], col_labels=["-1", "0", "1"])
    assert g.grid_shape() == (3, 3)
    arr = g.to_array()
    np.testing.assert_array_equal(arr, tiled)
    assert arr[0, 0] == 0.0 and arr[6, 7] == pytest.approx(imgs[4, 0, 0])
    assert arr[4, 0] == 0.5  # padding
    assert g._row_labels == ["a", "b", "c"] and g._col_labels == ["-1", "0", "1"]
    # A colour grid.
    g.set_grid(compose_grid(np.ones((2, 4, 4, 3)), 2, pad=2), 1, 2, pad=2)
    assert g.to_array().shape == (4, 10, 3) and g.grid_shape() == (1, 2)
    out = tmp_path / "grid.png"
    assert g.save_png(out, scale=3)
    saved = QtGui.QImage(str(out))
    assert (saved.width(), saved.height()) == (30, 12)
    assert not grab_is_blank(g)
    g.clear()
    assert g.to_array() is None and g.grid_shape() == (0, 0)


def test_nice_ceil_and_sticky_range():
    from app.widgets.loss_plot import nice_ceil, sticky_range

    assert nice_ceil(1.0) == 1.0 and nice_ceil(101) == 125 and nice_ceil(2600) == 3000
    assert nice_ceil(0.0) == 1.0 and nice_ceil(float("nan")) == 1.0
    for v in np.geomspace(0.003, 3e6, 200):
        c = nice_ceil(v)
        assert v <= c <= 1.34 * v
    assert sticky_range(1.0, 2.0, (0.8, 2.2)) is None  # holds the data, well filled: kept
    lo, hi = sticky_range(1.0, 3.0, (0.5, 2.5))  # data left the range: refitted with padding
    assert lo < 1.0 and hi > 3.0 and hi - lo < 2.5
    assert sticky_range(1.0, 1.1, (0.0, 10.0)) is not None  # data fill too little of the range
    lo, hi = sticky_range(5.0, 5.0, None)  # flat data still get a range
    assert lo < 5.0 < hi


def test_loss_plot_follows_new_points_in_steps_until_the_user_pans(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.resize(800, 300)
    lp.show()
    top, bottom = lp.plots()
    changes = []
    top.getViewBox().sigXRangeChanged.connect(lambda *_: changes.append(1))
    s = np.arange(0, 1000)
    lp.append(s, 100 - s * 0.01, s * 0.001, 100 - s * 0.009)
    lp.flush()
    x0, x1 = top.getViewBox().viewRange()[0]
    assert x0 == 0 and 1000 <= x1 <= 1250
    # All curves inside the y ranges.
    y0, y1 = top.getViewBox().viewRange()[1]
    assert y0 <= 90 and y1 >= 100
    n = len(changes)
    for start in range(1000, 1200, 20):  # new points inside the current x range: no relayout
        s = np.arange(start, start + 20)
        lp.append(s, 100 - s * 0.01, s * 0.001, 100 - s * 0.009)
        lp.flush()
    assert len(changes) == n
    s = np.arange(1200, 5000)
    lp.append(s, 100 - s * 0.01, s * 0.001, 100 - s * 0.009)
    lp.flush()
    assert top.getViewBox().viewRange()[0][1] >= 4999  # grew to show the newest point
    # A user's pan stops the following; Auto range brings it back.
    top.getViewBox().sigRangeChangedManually.emit([True, True])
    top.getViewBox().setXRange(100, 200, padding=0)
    assert not lp.following()
    s = np.arange(5000, 9000)
    lp.append(s, 100 - s * 0.01, s * 0.001, 100 - s * 0.009)
    lp.flush()
    assert top.getViewBox().viewRange()[0] == [100, 200]
    lp.findChild(QtWidgets.QToolButton, "lossResetViewButton").click()
    assert lp.following() and top.getViewBox().viewRange()[0][1] >= 8999
