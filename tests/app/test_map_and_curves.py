"""The latent map and the loss curves as a user meets them: geometry, markers, mouse, menus,
smoothing, wall time, themes; and the map's drawing at sizes where it rasterizes.

Run offscreen. Mouse events go through the window system where the order of
events matters (double clicks), straight to the viewport otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest

from app import theme
from app.widgets.latent_view import (
    LEGEND_CORNERS,
    LatentView,
    format_duration,
    plain_log_value,
    plain_number,
)
from app.widgets import loss_plot as loss_plot_module
from app.widgets.loss_plot import CURVE_COLOURS, LossPlot, debiased_ema, nice_ceil, sticky_range

LEFT = QtCore.Qt.MouseButton.LeftButton
RIGHT = QtCore.Qt.MouseButton.RightButton
NOBUTTON = QtCore.Qt.MouseButton.NoButton
NOMOD = QtCore.Qt.KeyboardModifier.NoModifier


def send_mouse(widget, kind, pos, button=LEFT, buttons=LEFT) -> None:
    pos = QtCore.QPointF(pos)
    glob = QtCore.QPointF(widget.mapToGlobal(pos.toPoint()))
    QtWidgets.QApplication.sendEvent(widget, QtGui.QMouseEvent(kind, pos, glob, button, buttons, NOMOD))


def rendered(widget: QtWidgets.QWidget) -> np.ndarray:
    """The widget as an (H, W, 3) uint8 array."""
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.sizeInBytes())
    return arr.reshape(img.height(), img.bytesPerLine())[:, : 3 * img.width()].reshape(img.height(), img.width(), 3)


def luminance(rgb) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return c[..., 0] * 0.2126 + c[..., 1] * 0.7152 + c[..., 2] * 0.0722


def contrast(a, b) -> np.ndarray:
    la, lb = luminance(a), luminance(b)
    return (np.maximum(la, lb) + 0.05) / (np.minimum(la, lb) + 0.05)


@pytest.fixture
def view(qtbot):
    v = LatentView()
    qtbot.addWidget(v)
    v.resize(640, 480)
    v.show()
    qtbot.waitExposed(v)
    return v


def clusters(n_per=200, seed=0, scale=(1.0, 1.0)):
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    xy = np.concatenate([c + 0.5 * rng.normal(size=(n_per, 2)) for c in centres]) * np.asarray(scale)
    return xy, np.repeat(np.arange(3), n_per)


def inside(inner: QtCore.QRectF, outer: QtCore.QRectF, tol: float = 0.5) -> bool:
    return (inner.left() >= outer.left() - tol and inner.right() <= outer.right() + tol
            and inner.top() >= outer.top() - tol and inner.bottom() <= outer.bottom() + tol)


# --- the map's geometry ---------------------------------------------------------------------

def test_both_axes_share_one_scale_so_a_flat_spread_looks_flat(view, qtbot):
    xy, labels = clusters(scale=(1.0, 1e-3))  # one real direction, one of a thousandth
    view.set_points(xy, labels, ["a", "b", "c"])
    view.set_axis_labels("PC1 (100%)", "PC2 (0%)")
    qtbot.wait(10)
    pw, ph = view.pixel_size()
    assert pw == pytest.approx(ph, rel=1e-6)
    x0, x1, y0, y1 = view.view_range()
    assert x0 <= xy[:, 0].min() and x1 >= xy[:, 0].max()  # the fit holds every point
    assert y0 <= xy[:, 1].min() and y1 >= xy[:, 1].max()
    assert (y1 - y0) > 100 * np.ptp(xy[:, 1])  # the flat direction is drawn flat
    for side, label in (("bottom", "PC1 (100%)"), ("left", "PC2 (0%)")):
        axis = view.plot_widget().getPlotItem().getAxis(side)
        assert axis.labelString().count("(") == 1 and "x0.001" not in axis.labelString()
        assert label in axis.labelString()
    # A tall window keeps one scale too, and the next epoch's points still fit.
    view.resize(300, 600)
    qtbot.waitUntil(lambda: view.plot_area_size()[1] > view.plot_area_size()[0])
    view.set_points(xy * 1.5, labels, ["a", "b", "c"])
    pw, ph = view.pixel_size()
    assert pw == pytest.approx(ph, rel=1e-6)
    x0, x1, y0, y1 = view.view_range()
    assert x0 <= 1.5 * xy[:, 0].min() and x1 >= 1.5 * xy[:, 0].max()


def test_tick_labels_read_as_plain_numbers():
    assert plain_number(0.0005, 0.0001) == "0.0005"
    assert plain_number(-0.0, 0.5) == "0.0"
    assert plain_number(1500.0, 500.0) == "1500"
    assert plain_number(0.25, 0.25) == "0.25"
    assert plain_number(2e-7, 1e-7) == "0.0000002"
    assert plain_log_value(10 ** 2.30103) == "200"
    assert plain_log_value(0.05) == "0.05"
    assert plain_log_value(1e-6) == "1e-06"
    assert format_duration(90.0) == "1:30"
    assert format_duration(3723.0) == "1:02:03"
    assert format_duration(2.5, 0.5) == "0:02.5"


def test_map_tick_labels_have_no_exponents_or_multipliers(view, qtbot):
    rng = np.random.default_rng(1)
    view.set_points(rng.normal(size=(500, 2)) * 2e-4, None)  # a collapsed posterior: a tiny map
    qtbot.wait(10)
    for side in ("left", "bottom"):
        axis = view.plot_widget().getPlotItem().getAxis(side)
        lo, hi = axis.range
        levels = axis.tickValues(lo, hi, 400)
        strings = axis.tickStrings(levels[0][1], 1.0, levels[0][0])
        assert strings and all("e" not in s and "\u00d7" not in s for s in strings), strings
        assert "x0." not in axis.labelString() and "x1e" not in axis.labelString()


# --- crosshair, selection, far-from-data, message -------------------------------------------

@pytest.mark.parametrize("palette", [theme._light, theme._dark])
def test_crosshair_and_selected_example_look_different(view, qtbot, palette):
    view.setPalette(palette())
    xy, labels = clusters()
    view.set_points(xy, labels)
    view.set_highlight(7)
    view.set_crosshair(*xy[300])
    qtbot.wait(10)
    ring, sel = view._cross_ring, view._highlight
    assert ring.opts["symbol"] != sel.opts["symbol"]
    bg = view.palette().color(QtGui.QPalette.ColorRole.Base)
    for far in (False, True):
        view.set_far_indicator(far)
        c_cross, c_sel = view.crosshair_colour(), view.selection_colour()
        assert ring.opts["pen"].color() == c_cross and sel.opts["pen"].color() == c_sel
        rgb = lambda c: (c.red(), c.green(), c.blue())  # noqa: E731
        assert contrast(rgb(c_cross), rgb(c_sel)) > 1.4 or abs(c_cross.hueF() - c_sel.hueF()) > 0.15
        # Both stand out from the background.
        assert contrast(rgb(c_cross), rgb(bg)) > 2.5 and contrast(rgb(c_sel), rgb(bg)) > 2.5


@pytest.mark.parametrize("corner", [(0.98, 0.98), (0.02, 0.98), (0.98, 0.02), (0.02, 0.02), (0.5, 0.5)])
def test_far_from_data_text_stays_inside_the_plot(view, qtbot, corner):
    xy, labels = clusters()
    view.set_points(xy, labels)
    x0, x1, y0, y1 = view.view_range()
    fx, fy = corner
    view.set_crosshair(x0 + fx * (x1 - x0), y0 + fy * (y1 - y0))
    view.set_far_indicator(True)
    qtbot.wait(10)
    area = view.view_box().sceneBoundingRect()
    assert view._far_text.isVisible()
    assert inside(view.far_text_rect(), area)
    # Panning keeps it inside as the crosshair nears an edge.
    view.view_box().setRange(xRange=(x0 + 0.45 * (x1 - x0), x1 + 0.45 * (x1 - x0)), padding=0)
    if view.view_box().viewRect().contains(QtCore.QPointF(*view.crosshair())):
        assert inside(view.far_text_rect(), view.view_box().sceneBoundingRect())


@pytest.mark.parametrize("size", [(640, 480), (260, 220)])
def test_message_sits_on_the_plotting_area_not_over_an_axis(qtbot, size):
    v = LatentView()
    qtbot.addWidget(v)
    v.resize(*size)
    v.show()
    qtbot.waitExposed(v)
    v.set_message("Choose a dataset and press Train to see its latent map")
    qtbot.wait(10)
    msg, area = v.message_rect(), v.plot_area_rect()
    assert msg.isValid() and area.contains(msg)
    left_axis = v.plot_widget().getPlotItem().getAxis("left")
    axis_rect = v.plot_widget().mapFromScene(left_axis.sceneBoundingRect()).boundingRect()
    axis_rect.translate(v.viewport().pos())
    assert not msg.intersects(axis_rect)
    label = v.findChild(QtWidgets.QLabel, "latentMapMessage")
    assert label.height() >= label.heightForWidth(label.width())  # every wrapped line shows


# --- mouse: double click, click, drag ---------------------------------------------------------

def _record(view):
    events: list[tuple] = []
    view.pointPicked.connect(lambda x, y: events.append(("picked", x, y)))
    view.exampleClicked.connect(lambda i: events.append(("clicked", i)))
    view.dragFinished.connect(lambda: events.append(("finished",)))
    return events


def test_double_click_fits_the_view_and_undoes_its_first_click(view, qtbot):
    xy, labels = clusters()
    view.set_points(xy, labels)
    view.view_box().setRange(xRange=(3.0, 5.0), yRange=(-1.0, 1.0), padding=0)  # zoomed in on a cluster
    events = _record(view)
    undone: list[tuple] = []
    view.pickUndone.connect(lambda point, example: undone.append((point, example)))
    target = int(np.argmin(np.hypot(xy[:, 0] - 4.0, xy[:, 1])))
    pos = view.map_from_data(*xy[target]).toPoint()
    window = view.window().windowHandle()
    # Nothing was picked before: the double click asks for nothing to be shown again.
    QTest.mouseDClick(window, LEFT, NOMOD, view.viewport().mapTo(view.window(), pos))
    assert [e[0] for e in events] == ["picked", "clicked", "finished"]  # its first click landed at once
    assert undone == [(None, None)]
    x0, x1, y0, y1 = view.view_range()
    assert x0 <= xy[:, 0].min() and x1 >= xy[:, 0].max()
    # With a decoded point and a selected example, the same from events sent to the viewport
    # (the double click as a second press): it asks for both to be put back.
    view.set_crosshair(-1.5, 0.25)
    view.set_highlight(7)
    view.view_box().setRange(xRange=(3.0, 5.0), yRange=(-1.0, 1.0), padding=0)
    vp = view.viewport()
    pos = view.map_from_data(*xy[target])
    for kind in (QtCore.QEvent.Type.MouseButtonPress, QtCore.QEvent.Type.MouseButtonRelease):
        send_mouse(vp, kind, pos, buttons=LEFT if kind == QtCore.QEvent.Type.MouseButtonPress else NOBUTTON)
    view.set_crosshair(*xy[target])  # the first click's answer may arrive before the second press
    view.set_highlight(target)
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonPress, pos)
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, pos, buttons=NOBUTTON)
    assert undone[-1] == ((-1.5, 0.25), 7)
    assert view.view_range()[0] <= xy[:, 0].min()
    assert not view.dragging() and not view.click_pending()
    # Once the double-click interval is over, a press is a click of its own again.
    n = len(undone)
    qtbot.wait(QtWidgets.QApplication.doubleClickInterval() + 50)
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonPress, pos)
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, pos, buttons=NOBUTTON)
    assert len(undone) == n and view.click_pending()


def test_a_single_click_lands_at_once(view, qtbot):
    xy, labels = clusters()
    view.set_points(xy, labels)
    events = _record(view)
    pos = view.map_from_data(*xy[123]).toPoint()
    qtbot.mousePress(view.viewport(), LEFT, pos=pos)
    assert [e[0] for e in events] == ["picked"] and view.dragging()
    qtbot.mouseRelease(view.viewport(), LEFT, pos=pos)
    assert [e[0] for e in events] == ["picked", "clicked", "finished"]
    assert events[1][1] == view.hit_test(events[0][1], events[0][2])
    # A second press within the double-click interval would make it a double click.
    assert view.click_pending()
    qtbot.waitUntil(lambda: not view.click_pending(), timeout=2000)
    assert len(events) == 3


def test_a_drag_picks_as_the_mouse_moves(view, qtbot):
    xy, labels = clusters()
    view.set_points(xy, labels)
    events = _record(view)
    vp = view.viewport()
    a, b = view.map_from_data(-3.0, -2.0), view.map_from_data(2.0, 1.0)
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonPress, a)
    assert [e[0] for e in events] == ["picked"] and view.dragging()  # the press
    send_mouse(vp, QtCore.QEvent.Type.MouseMove, b, button=NOBUTTON, buttons=LEFT)
    assert [e[0] for e in events] == ["picked", "picked"]  # then the move
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, b, buttons=NOBUTTON)
    assert events[-1] == ("finished",) and not view.dragging()
    assert "clicked" not in [e[0] for e in events], "a drag selects no example"


def test_a_press_held_still_starts_a_drag(view, qtbot):
    xy, labels = clusters()
    view.set_points(xy, labels)
    events = _record(view)
    vp = view.viewport()
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonPress, view.map_from_data(0.0, 0.0))
    qtbot.waitUntil(lambda: len(events) == 1, timeout=2000)
    assert events[0][0] == "picked" and view.dragging()
    send_mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, view.map_from_data(0.0, 0.0), buttons=NOBUTTON)
    assert events[-1] == ("finished",)


# --- the map's menu: legend, point size and opacity -------------------------------------------

def _action(view, name: str) -> QtGui.QAction:
    act = view.findChild(QtGui.QAction, name)
    assert act is not None, name
    return act


def test_right_click_opens_the_menu_and_its_entries_change_the_map(view, qtbot):
    xy, labels = clusters()
    view.set_points(xy, labels, ["a", "b", "c"])
    qtbot.wait(10)
    options: list[dict] = []
    view.viewOptionsChanged.connect(options.append)
    QTest.mouseClick(view.viewport(), RIGHT, NOMOD, view.map_from_data(0.0, -3.0).toPoint())
    qtbot.waitUntil(lambda: view.context_menu().isVisible(), timeout=2000)
    view.context_menu().hide()

    assert view.legend_visible()
    _action(view, "mapLegendShownAction").trigger()
    assert not view.legend_visible() and options[-1]["legend_visible"] is False
    _action(view, "mapLegendShownAction").trigger()
    assert view.legend_visible()

    _action(view, "mapLegendCorner_bottom_left").trigger()
    qtbot.wait(10)
    assert view.legend_corner() == "bottom-left" and options[-1]["legend_corner"] == "bottom-left"
    legend = view.legend_item().sceneBoundingRect()
    area = view.view_box().sceneBoundingRect()
    assert legend.left() - area.left() < 30 and area.bottom() - legend.bottom() < 30

    _action(view, "mapPointSize8Action").trigger()
    assert view.point_size() == 8 and options[-1]["point_size"] == 8
    assert _action(view, "mapPointSize8Action").isChecked()
    _action(view, "mapPointOpacity25Action").trigger()
    assert view.point_opacity() == pytest.approx(0.25) and options[-1]["point_opacity"] == pytest.approx(0.25)
    # Fit view is in the menu as well.
    view.view_box().setRange(xRange=(10, 11), yRange=(10, 11), padding=0)
    _action(view, "mapFitViewAction").trigger()
    assert view.view_range()[0] <= xy[:, 0].min()


def test_view_options_round_trip_and_ignore_what_they_do_not_know(view):
    view.set_view_options({"legend_visible": False, "legend_corner": "top-left", "point_size": 6,
                           "point_opacity": 0.5, "unknown": 1})
    assert view.view_options() == {"legend_visible": False, "legend_corner": "top-left",
                                   "point_size": 6.0, "point_opacity": 0.5}
    view.set_view_options({"legend_corner": "middle", "point_size": "big"})
    assert view.legend_corner() == "top-left" and view.point_size() == 6.0
    # As QSettings (INI) gives them back: strings.
    view.set_view_options({"legend_visible": "true", "point_size": "3.0", "point_opacity": "0.75"})
    assert view.legend_corner() == "top-left" and view.point_size() == 3.0
    assert view.view_options()["legend_visible"] is True and view.point_opacity() == 0.75
    view.set_view_options({"legend_visible": "false"})
    assert view.view_options()["legend_visible"] is False
    with pytest.raises(ValueError):
        view.set_legend_corner("middle")
    assert set(LEGEND_CORNERS) == {"top-right", "top-left", "bottom-left", "bottom-right"}


def test_hidden_legend_stays_hidden_across_new_points(view):
    xy, labels = clusters()
    view.set_legend_visible(False)
    view.set_points(xy, labels, ["a", "b", "c"])
    view.set_points(xy, labels, ["x", "y", "z"])
    assert not view.legend_visible() and view.legend_labels() == ["x", "y", "z"]
    view.set_legend_visible(True)
    assert view.legend_visible()


def _distance_to(view, colour: QtGui.QColor) -> np.ndarray:
    """Per pixel of the plot, the distance (sum over R, G, B) to ``colour``."""
    img = rendered(view.plot_widget()).astype(np.int32)
    return np.abs(img - np.array([colour.red(), colour.green(), colour.blue()])).sum(axis=2)


def test_point_size_and_opacity_change_what_is_drawn(view, qtbot):
    view.set_legend_visible(False)
    xy = np.array([[0.37, 0.41], [10.3, 10.2], [-10.1, -9.7]])  # off the grid lines
    view.set_points(xy, np.zeros(3, dtype=int))
    qtbot.wait(10)
    centre = view.map_from_data(*xy[0])
    cx, cy = int(centre.x()), int(centre.y())
    bg = view.palette().color(QtGui.QPalette.ColorRole.Base)
    counts, distances = {}, {}
    for px in (2, 12):
        view.set_point_size(px)
        # Pixels painted by the point: unlike the background and the grid lines.
        d = np.min([_distance_to(view, c) for c in (bg, *view._grid.line_colours())], axis=0)
        counts[px] = int(np.count_nonzero(d[cy - 15:cy + 16, cx - 15:cx + 16] > 60))
    assert counts[2] >= 1 and counts[12] > 10 * counts[2]
    for opacity in (1.0, 0.25):
        view.set_point_opacity(opacity)
        distances[opacity] = int(_distance_to(view, bg)[cy, cx])  # how far the centre is from the background
    assert distances[0.25] < 0.5 * distances[1.0]


# --- loss curves: smoothing and wall time -----------------------------------------------------

def tensorboard_smoothing(values, weight):
    """The smoothing TensorBoard's scalar dashboard applies (its reference loop)."""
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight ** n))
    return np.array(out)


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.9, 0.99, 0.999])
def test_debiased_ema_matches_tensorboard_in_one_piece_and_in_parts(weight):
    rng = np.random.default_rng(4)
    y = 100 * np.exp(-np.arange(3000) / 500) + rng.normal(size=3000)
    y[[10, 11, 1500]] = np.nan
    ref = tensorboard_smoothing(y, weight)
    whole, _, _ = debiased_ema(y, weight)
    np.testing.assert_allclose(whole, ref, rtol=1e-9, atol=1e-9)
    parts, state, count = [], 0.0, 0
    for chunk in np.array_split(y, 7):
        s, state, count = debiased_ema(chunk, weight, state, count)
        parts.append(s)
    np.testing.assert_allclose(np.concatenate(parts), ref, rtol=1e-9, atol=1e-9)


@pytest.fixture
def loss_plot(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.resize(900, 300)
    lp.show()
    qtbot.waitExposed(lp)
    return lp


def _run(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    s = np.arange(n, dtype=float)
    recon = 100 * np.exp(-s / 400) + 80 + 3 * rng.normal(size=n)
    kl = 20 * (1 - np.exp(-s / 300)) + rng.normal(size=n)
    return s, recon, kl, recon + kl


def test_smoothing_slider_draws_the_smoothed_curve_over_a_faint_raw_one(loss_plot, qtbot):
    s, recon, kl, loss = _run()
    half = len(s) // 2
    loss_plot.append(s[:half], recon[:half], kl[:half], loss[:half])
    loss_plot.flush()
    assert len(loss_plot.curve_data("recon_smoothed")[0]) == 0  # 0 = raw
    value = loss_plot.findChild(QtWidgets.QLabel, "smoothingValue")
    assert value.width() >= value.fontMetrics().horizontalAdvance(value.text())  # not clipped
    raw_pen = loss_plot._curves["recon"].opts["pen"].color()
    slider = loss_plot.findChild(QtWidgets.QSlider, "smoothingSlider")
    weights: list[float] = []
    loss_plot.smoothingChanged.connect(weights.append)
    slider.setValue(900)
    assert weights == [pytest.approx(0.9)] and loss_plot.smoothing() == pytest.approx(0.9)
    loss_plot.append(s[half:], recon[half:], kl[half:], loss[half:])  # more points: the average goes on
    loss_plot.flush()
    x, y = loss_plot.curve_data("recon_smoothed")
    ref = tensorboard_smoothing(recon, 0.9)
    assert x[-1] == s[-1]
    np.testing.assert_allclose(y, ref[x.astype(int)], rtol=1e-9)
    # The raw curve stays, in a faint shade; the smoothed line in the curve's colour.
    assert len(loss_plot.curve_data("recon")[0]) > 0
    faint = loss_plot._curves["recon"].opts["pen"].color()
    bg = loss_plot.palette().color(QtGui.QPalette.ColorRole.Base)
    rgb = lambda c: (c.red(), c.green(), c.blue())  # noqa: E731
    assert contrast(rgb(faint), rgb(bg)) < contrast(rgb(raw_pen), rgb(bg))
    assert loss_plot._smooth_curves["recon"].opts["pen"].color() == raw_pen
    slider.setValue(0)
    loss_plot.flush()
    assert len(loss_plot.curve_data("recon_smoothed")[0]) == 0
    assert loss_plot._curves["recon"].opts["pen"].color() == raw_pen


def test_wall_time_axis_is_offered_only_when_times_are_known(loss_plot, qtbot):
    s, recon, kl, loss = _run(1000)
    combo = loss_plot.findChild(QtWidgets.QComboBox, "xAxisCombo")
    wall_index = combo.findData("wall")
    loss_plot.append(s, recon, kl, loss)
    loss_plot.flush()
    assert not loss_plot.wall_time_available()
    assert not combo.model().item(wall_index).isEnabled()
    assert "no wall-clock times" in combo.toolTip().lower()
    loss_plot.set_x_axis("wall")
    assert loss_plot.x_axis() == "step"  # kept as the wish, shown once times arrive

    wall = 0.25 * s + 3.0
    loss_plot.set_history(s, recon, kl, loss, epochs=[(499, 90.0, 18.0, 108.0)],
                          markers=[(600, "lr 1e-3 -> 1e-4")], wall_s=wall)
    assert loss_plot.wall_time_available() and combo.model().item(wall_index).isEnabled()
    assert loss_plot.x_axis() == "wall" and combo.currentData() == "wall"
    x, _ = loss_plot.curve_data("recon")
    assert x[0] == pytest.approx(3.0) and x[-1] == pytest.approx(wall[-1])
    ex, _ = loss_plot.curve_data("epoch_loss")
    assert ex[0] == pytest.approx(0.25 * 499 + 3.0)
    top_line, bottom_line = loss_plot.marker_lines()[0]
    assert top_line.value() == pytest.approx(0.25 * 600 + 3.0) == bottom_line.value()
    top, _ = loss_plot.plots()
    axis = top.getAxis("bottom")
    assert axis.time_format() and "wall time" in axis.labelString()
    lo, hi = top.getViewBox().viewRange()[0]
    assert lo <= 3.0 and hi >= wall[-1]
    # Back to steps from the combo box.
    axes: list[str] = []
    loss_plot.xAxisChanged.connect(axes.append)
    combo.setCurrentIndex(combo.findData("step"))
    assert axes == ["step"] and loss_plot.x_axis() == "step"
    assert loss_plot.curve_data("recon")[0][-1] == s[-1] and top_line.value() == 600
    # Cleared (a new model): no times, back to steps.
    loss_plot.set_x_axis("wall")
    loss_plot.clear()
    assert loss_plot.x_axis() == "step" and not combo.model().item(wall_index).isEnabled()


def test_marker_labels_stay_inside_their_plots(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.resize(640, 260)
    lp.show()
    qtbot.waitExposed(lp)
    s, recon, kl, loss = _run(3000)
    lp.append(s, recon, kl, loss)
    lp.add_marker(120, "lr 1e-3 \u2192 1e-4 (plateau)")
    lp.add_marker(2990, "diverged: rolled back to step 2800")
    lp.flush()
    qtbot.wait(50)
    for lines in lp.marker_lines():
        for plot, line in zip(lp.plots(), lines):
            area = plot.getViewBox().sceneBoundingRect()
            rect = line.label.scene_rect()
            assert rect.width() > 30
            if rect.width() <= area.width():
                assert inside(rect, area, tol=1.0), (line.label.textItem.toPlainText(), rect, area)


def test_log_scale_ticks_are_plain_numbers(loss_plot, qtbot):
    s, recon, kl, loss = _run()
    loss_plot.append(s, recon, kl, loss)
    loss_plot.set_log_y(True)
    loss_plot.flush()
    qtbot.wait(10)
    for plot in loss_plot.plots():
        axis = plot.getAxis("left")
        lo, hi = axis.range
        levels = axis.tickValues(lo, hi, 200)
        strings = [t for spacing, values in levels for t in axis.tickStrings(values, 1.0, spacing)]
        assert strings and all("\u00b7" not in t and "10\u00b2" not in t for t in strings), strings
        assert all(float(t) > 0 for t in strings)


def test_log_scale_refits_the_vertical_range_after_a_zoom(loss_plot):
    s, recon, kl, loss = _run()
    loss_plot.append(s, recon, kl, loss)
    loss_plot.flush()
    top, _ = loss_plot.plots()
    top.getViewBox().sigRangeChangedManually.emit([True, True])
    top.getViewBox().setXRange(100, 200, padding=0)
    loss_plot.set_log_y(True)
    y0, y1 = top.getViewBox().viewRange()[1]
    shown = np.concatenate([recon[100:201], loss[100:201]])
    assert y0 < math.log10(shown.min()) and y1 > math.log10(shown.max())  # log units, around what is shown
    assert y1 < 3.0
    assert not any(top.getViewBox().autoRangeEnabled())


def test_titles_give_way_in_a_narrow_dock(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.resize(560, 240)
    lp.show()
    qtbot.waitExposed(lp)
    qtbot.wait(20)
    canvas = lp.findChild(QtWidgets.QWidget, "lossPlotCanvas")
    for plot in lp.plots():
        right = plot.mapRectToScene(plot.boundingRect()).right()
        assert right <= canvas.width() + 1
        assert plot.titleLabel.itemRect().width() <= plot.geometry().width() + 1



def _canvas_point(lp: LossPlot, plot, x: float, y: float) -> QtCore.QPoint:
    """Where the data point (x, y) of ``plot`` lies in ``lp``'s own pixels."""
    canvas = lp.findChild(QtWidgets.QWidget, "lossPlotCanvas")
    scene = plot.getViewBox().mapViewToScene(QtCore.QPointF(x, y))
    return canvas.viewport().mapTo(lp, canvas.mapFromScene(scene))


def _bluish(img: np.ndarray, at: QtCore.QPoint, r: int = 3) -> int:
    """How many pixels within ``r`` of ``at`` are clearly blue (the reconstruction's colour)."""
    patch = img[max(0, at.y() - r): at.y() + r + 1, max(0, at.x() - r): at.x() + r + 1].astype(int)
    return int(np.count_nonzero(patch[..., 2] - patch[..., 0] > 60))


def test_curves_break_at_non_finite_values_and_held_out_points_are_dots(loss_plot, qtbot):
    assert QtGui.QColor(CURVE_COLOURS["recon"]).blue() > QtGui.QColor(CURVE_COLOURS["recon"]).red() + 60
    s = np.arange(200, dtype=float)
    recon = np.full(200, 50.0)
    recon[80:120] = np.nan  # a stretch of diverged batches
    kl = np.full(200, 2.0)
    loss_plot.append(s, recon, kl, recon + kl)
    loss_plot.add_epoch(150, 60.0, 2.0, 62.0)
    loss_plot.flush()
    qtbot.wait(10)
    top, _ = loss_plot.plots()
    img = rendered(loss_plot)
    assert _bluish(img, _canvas_point(loss_plot, top, 40, 50.0)) > 0  # the line
    assert _bluish(img, _canvas_point(loss_plot, top, 100, 50.0)) == 0  # the gap
    assert _bluish(img, _canvas_point(loss_plot, top, 150, 60.0), r=1) >= 4  # the held-out dot
    assert _bluish(img, _canvas_point(loss_plot, top, 150, 56.0), r=1) == 0  # a dot, not a stripe


def test_held_out_points_join_the_next_redraw_and_are_thinned_to_the_width(loss_plot):
    s, recon, kl, loss = _run(500)
    loss_plot.append(s, recon, kl, loss)
    loss_plot.flush()
    loss_plot.add_epoch(499, 90.0, 18.0, 108.0)
    assert loss_plot.epochs() == [(499.0, 90.0, 18.0, 108.0)]
    assert loss_plot.redraw_pending() and len(loss_plot.curve_data("epoch_loss")[0]) == 0
    loss_plot.flush()
    x, y = loss_plot.curve_data("epoch_loss")
    assert list(x) == [499.0] and list(y) == [108.0]
    # Thousands of short epochs: no more dots than the plot has room for, the extremes and the newest kept.
    rng = np.random.default_rng(3)
    held = 100 + rng.normal(size=3000)
    for k, v in enumerate(held):
        loss_plot.add_epoch(500 + k, v - 10, 10.0, v)
    loss_plot.flush()
    top, _ = loss_plot.plots()
    x, y = loss_plot.curve_data("epoch_loss")
    assert 20 < len(x) <= top.getViewBox().width() / 2
    every = np.concatenate([[108.0], held])
    assert x[-1] == 3499 and y.max() == every.max() and y.min() == every.min()
    assert len(loss_plot.epochs()) == 3001


def test_a_hidden_plot_keeps_its_points_until_it_is_shown(loss_plot, qtbot):
    s, recon, kl, loss = _run(300)
    loss_plot.hide()
    loss_plot.append(s, recon, kl, loss)
    qtbot.wait(3 * loss_plot.redraw_interval())
    assert loss_plot.redraw_pending() and len(loss_plot.curve_data("recon")[0]) == 0
    loss_plot.show()
    qtbot.waitUntil(lambda: not loss_plot.redraw_pending(), timeout=2000)
    assert loss_plot.curve_data("recon")[0][-1] == s[-1]


def test_points_arriving_fast_get_room_ahead_on_the_x_axis(loss_plot, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(loss_plot_module, "time", type("Clock", (), {"monotonic": staticmethod(lambda: now[0])}))
    vb = loss_plot.plots()[0].getViewBox()

    def feed(a: int, b: int) -> None:
        s = np.arange(a, b, dtype=float)
        loss_plot.append(s, 50 + 0 * s, 5 + 0 * s, 55 + 0 * s)
        loss_plot.flush()

    feed(0, 1000)
    assert vb.viewRange()[0] == [0, 1250]  # no pace known yet: the next round number
    now[0] += 1.0
    feed(1000, 1200)  # 200 steps a second, inside the range: kept
    assert vb.viewRange()[0] == [0, 1250]
    now[0] += 0.5
    feed(1200, 1300)  # past its end: room for two more seconds of points
    lo, hi = vb.viewRange()[0]
    assert lo == 0 and hi >= 1299 + loss_plot_module.LOOKAHEAD_S * 200 and hi <= nice_ceil(2.04 * 1299)
    now[0] += 100.0
    feed(1300, 2100)  # slow now: the next round number past the points
    assert vb.viewRange()[0] == [0, nice_ceil(1.02 * 2099)]
    now[0] += 1.0
    feed(2100, 20000)  # a burst: at most about twice the points' span
    lo, hi = vb.viewRange()[0]
    assert 19999 * 1.02 <= hi <= nice_ceil(2.04 * 19999)


def test_a_vertical_refit_leaves_room_on_the_side_the_data_left_through():
    lo, hi = sticky_range(1.0, 3.0, (1.5, 3.5), lead=0.25)  # out through the bottom
    assert lo < 1.0 and hi > 3.0 and (1.0 - lo) > 2 * (hi - 3.0)
    lo, hi = sticky_range(1.0, 3.0, (0.5, 2.5), lead=0.25)  # out through the top
    assert (hi - 3.0) > 2 * (1.0 - lo)
    assert sticky_range(1.0, 3.0, None, lead=0.25) == sticky_range(1.0, 3.0, None)  # a first fit: even


def test_the_curves_menu_offers_the_view_but_not_pyqtgraphs_transforms(loss_plot):
    for plot in loss_plot.plots():
        assert plot.getContextMenus(None) is None  # "Plot Options": FFT, log axes, downsampling
        assert plot.getViewBox().menuEnabled()

# --- themes ---------------------------------------------------------------------------------

@pytest.fixture
def themed_app(qapp):
    """Apply a theme to the application for one test, then put the application back as it was."""
    style, palette, sheet = qapp.style().name(), QtGui.QPalette(qapp.palette()), qapp.styleSheet()
    yield qapp
    qapp.setStyleSheet(sheet)
    qapp.setStyle(style)
    qapp.setPalette(palette)


def _elbo_panel_like() -> tuple[QtWidgets.QWidget, QtWidgets.QLabel]:
    panel = QtWidgets.QWidget()
    panel.setObjectName("elboPanel")
    lay = QtWidgets.QVBoxLayout(panel)
    lay.addWidget(QtWidgets.QLabel("ELBO (higher is better)"))
    note = QtWidgets.QLabel("All figures in nats for this one example.")
    note.setEnabled(False)
    lay.addWidget(note)
    return panel, note


def _text_contrast(widget: QtWidgets.QWidget) -> float:
    img = rendered(widget).reshape(-1, 3)
    bg = np.median(img, axis=0)
    return float(contrast(img, bg).max())


@pytest.mark.parametrize("key", ["light", "dark", "system"])
def test_theme_footnote_readable_disabled_fields_look_disabled(themed_app, qtbot, key):
    theme.apply(themed_app, key)
    panel, note = _elbo_panel_like()
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    assert _text_contrast(note) >= 4.5  # WCAG AA for body text
    if key == "system":
        return  # the platform's own fields

    box = QtWidgets.QWidget()
    qtbot.addWidget(box)
    lay = QtWidgets.QHBoxLayout(box)
    on, off = QtWidgets.QLineEdit("0.001"), QtWidgets.QLineEdit("0.001")
    off.setEnabled(False)
    lay.addWidget(on)
    lay.addWidget(off)
    box.show()
    qtbot.waitExposed(box)
    inner = lambda w: rendered(w)[w.height() // 2, -6]  # noqa: E731 - the field's fill, right of the text
    assert np.abs(inner(on).astype(int) - inner(off).astype(int)).sum() > 15


def test_dark_theme_check_box_is_clearly_visible(themed_app, qtbot):
    theme.apply(themed_app, "dark")
    assert theme.resource_dir() is not None and (theme.resource_dir() / "icons" / "check.svg").is_file()
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.show()
    qtbot.waitExposed(lp)
    check = lp.findChild(QtWidgets.QCheckBox, "logScaleCheck")
    opt = QtWidgets.QStyleOptionButton()
    check.initStyleOption(opt)
    r = check.style().subElementRect(QtWidgets.QStyle.SubElement.SE_CheckBoxIndicator, opt, check)
    img = rendered(check)
    window = check.palette().color(QtGui.QPalette.ColorRole.Window)
    box = img[r.top():r.bottom() + 1, r.left():r.right() + 1].reshape(-1, 3)
    assert float(contrast(box, (window.red(), window.green(), window.blue())).max()) >= 3.0


# --- drawing at every size: exact points, raster, progressive panning -----------------------

def mixture(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.5, (10, 2))
    labels = rng.integers(0, 10, n)
    return centres[labels] + rng.normal(0.0, 0.6, (n, 2)), labels


def layer_pixel(view, x: float, y: float) -> tuple[int, int]:
    """Where data point (x, y) lies in the image the points were last rendered into."""
    p = view.map_from_data(x, y)
    rect, image = view.rendered_layer_rect(), view.rendered_layer()
    scale = image.width() / rect.width()
    return int((p.x() - rect.left()) * scale), int((p.y() - rect.top()) * scale)


def unpremultiplied(image: QtGui.QImage, px: int, py: int) -> tuple[float, float, float, float]:
    c = image.pixelColor(px, py)  # QImage gives the colour back unpremultiplied
    return c.redF(), c.greenF(), c.blueF(), c.alphaF()


def test_many_points_in_view_are_rasterized_and_few_drawn_one_by_one(view, qtbot):
    xy, labels = mixture(20_000)
    view.set_raster_threshold(2_000)
    view.set_points(xy, labels, [str(i) for i in range(10)])
    view.viewport().repaint()
    assert view.render_mode() == "raster"
    assert view.legend_labels() == [str(i) for i in range(10)]
    # Zoomed in on a corner with few points: one by one again.
    cx, cy = xy[0]
    view.view_box().setRange(xRange=(cx - 0.2, cx + 0.2), yRange=(cy - 0.2, cy + 0.2), padding=0)
    view.viewport().repaint()
    assert view.render_mode() == "exact"
    view.auto_range()
    view.viewport().repaint()
    assert view.render_mode() == "raster"
    view.set_raster_threshold(None)
    view.viewport().repaint()
    assert view.render_mode() == "exact"


def test_raster_pixels_mix_their_classes_by_count(view, qtbot):
    view.set_legend_visible(False)
    rng = np.random.default_rng(5)
    background = rng.uniform(-10, 10, (3000, 2))  # enough points to rasterize
    spot = np.array([[2.31, 1.73]])
    xy = np.concatenate([background, np.repeat(spot, 400, axis=0)])
    labels = np.concatenate([np.full(3000, 2), np.zeros(300, dtype=int), np.ones(100, dtype=int)])
    view.set_raster_threshold(500)
    view.set_points(xy, labels)
    view.viewport().repaint()
    assert view.render_mode() == "raster"
    layer = view.rendered_layer()
    r, g, b, a = unpremultiplied(layer, *layer_pixel(view, *spot[0]))
    c0, c1 = view._clouds[0].colour(), view._clouds[1].colour()
    expect = [(3 * u + v) / 4 for u, v in ((c0.redF(), c1.redF()), (c0.greenF(), c1.greenF()),
                                           (c0.blueF(), c1.blueF()))]
    np.testing.assert_allclose((r, g, b), expect, atol=0.03)
    assert a == pytest.approx(c0.alphaF(), abs=0.02)  # the densest pixels are as opaque as a point


@pytest.mark.parametrize("n_classes", [3, 40])  # class counts per pixel, and weighted sums per channel
def test_rasterizer_mixes_each_pixel_by_its_counts(n_classes):
    from app.widgets.latent_view import Rasterizer

    rng = np.random.default_rng(12)
    colours = np.c_[rng.random((n_classes, 3)), np.full(n_classes, 0.8)].astype(np.float32)
    # Pixel (2, 1): 3 points of class 0 and 1 of class 2; pixel (5, 4): 2 of class 1.
    x = np.array([2.5, 2.5, 2.5, 2.5, 5.5, 5.5], dtype=np.float32)
    y = np.array([1.5, 1.5, 1.5, 1.5, 4.5, 4.5], dtype=np.float32)
    cls = np.array([0, 0, 0, 2, 1, 1], dtype=np.int16)
    img = Rasterizer().render(x, y, cls, colours, 0.0, 0.0, 1.0, 1.0, 8, 6, diameter=1)
    assert img.shape == (6, 8) and np.count_nonzero(img) == 2

    def rgba(v):
        v = int(v)
        a = (v >> 24) / 255.0
        return np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255]) / 255.0 / a, a

    rgb, a = rgba(img[1, 2])
    np.testing.assert_allclose(rgb, (3 * colours[0, :3] + colours[2, :3]) / 4, atol=0.02)
    assert a == pytest.approx(0.8, abs=0.01)
    rgb, _ = rgba(img[4, 5])
    np.testing.assert_allclose(rgb, colours[1, :3], atol=0.02)
    # Spread over a disc: a 4-pixel point covers the 12 pixels of a 4-wide octagon.
    img = Rasterizer().render(x[4:], y[4:], cls[4:], colours, 0.0, 0.0, 1.0, 1.0, 8, 6, diameter=4)
    assert np.count_nonzero(img) == 12


def test_raster_shades_sparse_pixels_fainter_than_dense_ones(view, qtbot):
    view.set_legend_visible(False)
    rng = np.random.default_rng(11)
    xy = np.concatenate([rng.normal(0.0, 0.4, (40_000, 2)), [[5.2, 5.1]]])  # a dense cluster, a lone point
    view.set_points(xy, np.zeros(len(xy), dtype=int))
    view.set_raster_threshold(1000)
    view.viewport().repaint()
    layer = view.rendered_layer()
    colour = view._clouds[0].colour()
    *_, dense = unpremultiplied(layer, *layer_pixel(view, 0.0, 0.0))
    r, g, b, lone = unpremultiplied(layer, *layer_pixel(view, 5.2, 5.1))
    np.testing.assert_allclose((r, g, b), (colour.redF(), colour.greenF(), colour.blueF()), atol=0.03)
    assert dense == pytest.approx(colour.alphaF(), abs=0.02)
    assert 0.3 < lone < 0.8 * dense
    # With only lone points nothing is dense: they look as drawn one by one.
    view.set_points(rng.uniform(-10, 10, (3000, 2)), np.zeros(3000, dtype=int))
    view.viewport().repaint()
    assert view.render_mode() == "raster"
    alphas = np.frombuffer(view.rendered_layer().constBits(), dtype=np.uint32) >> 24
    assert alphas.max() == round(255 * colour.alphaF())


def test_a_class_hidden_from_the_legend_leaves_the_raster(view, qtbot):
    rng = np.random.default_rng(6)
    xy = np.concatenate([rng.normal(-3, 0.5, (3000, 2)), rng.normal(3, 0.5, (3000, 2))])
    labels = np.repeat([0, 1], 3000)
    view.set_raster_threshold(1000)
    view.set_points(xy, labels, ["left", "right"])
    view.viewport().repaint()
    assert view.render_mode() == "raster"
    assert view.rendered_layer().pixelColor(*layer_pixel(view, 3.0, 3.0)).alpha() > 0
    # A click on the legend's sample for "right" hides the class.
    sample = view.legend_item().items[1][0]
    scene_pos = sample.mapToScene(sample.boundingRect().center())
    pos = view.plot_widget().mapFromScene(scene_pos)
    QTest.mouseClick(view.viewport(), LEFT, NOMOD, pos)
    qtbot.waitUntil(lambda: not view._clouds[1].isVisible(), timeout=2000)
    view.viewport().repaint()
    assert view.rendered_layer().pixelColor(*layer_pixel(view, 3.0, 3.0)).alpha() == 0
    assert view.rendered_layer().pixelColor(*layer_pixel(view, -3.0, -3.0)).alpha() > 0
    assert view.hit_test(*xy[4000]) is None and view.hit_test(*xy[10]) is not None


def test_the_raster_is_made_at_the_device_pixel_ratio(view, qtbot):
    from app.widgets.latent_view import RENDER_MARGIN

    xy, labels = mixture(20_000)
    view.set_raster_threshold(1000)
    view.set_points(xy, labels)
    view.viewport().repaint()
    area = view.view_box().sceneBoundingRect()
    assert view.rendered_layer().width() == pytest.approx(area.width() + 2 * RENDER_MARGIN, abs=1)
    # Rendered into an image of pixel ratio 2 (as on a HiDPI screen): twice the pixels.
    image = QtGui.QImage(2 * view.width(), 2 * view.height(), QtGui.QImage.Format.Format_ARGB32_Premultiplied)
    image.setDevicePixelRatio(2.0)
    image.fill(0)
    view.render(image)
    assert view.render_mode() == "raster"
    layer = view.rendered_layer()
    assert layer.width() == pytest.approx(2 * (area.width() + 2 * RENDER_MARGIN), abs=2)
    assert layer.height() == pytest.approx(2 * (area.height() + 2 * RENDER_MARGIN), abs=2)
    x, y = xy[0]
    px, py = layer_pixel(view, x, y)
    assert max(layer.pixelColor(px + dx, py + dy).alpha() for dx in (-1, 0, 1) for dy in (-1, 0, 1)) > 0
    # The points are where the axes say they are in that image too.
    p = view.viewport().mapTo(view, view.map_from_data(x, y).toPoint())
    c = image.pixelColor(2 * p.x(), 2 * p.y())
    bg = view.palette().color(QtGui.QPalette.ColorRole.Base)
    assert abs(c.red() - bg.red()) + abs(c.green() - bg.green()) + abs(c.blue() - bg.blue()) > 60


def test_point_size_sets_the_raster_spread(view, qtbot):
    rng = np.random.default_rng(7)
    xy = np.concatenate([rng.normal(0, 0.3, (5000, 2)), [[6.3, 6.1]]])
    view.set_raster_threshold(100)
    view.set_points(xy, np.zeros(len(xy), dtype=int))
    areas = {}
    for px in (2, 8):
        view.set_point_size(px)
        view.viewport().repaint()
        assert view.render_mode() == "raster"
        image = view.rendered_layer()
        cx, cy = layer_pixel(view, 6.3, 6.1)
        areas[px] = sum(image.pixelColor(cx + dx, cy + dy).alpha() > 0
                        for dx in range(-8, 9) for dy in range(-8, 9))
    assert 2 <= areas[2] <= 9 and 36 <= areas[8] <= 70


def test_hover_click_and_highlight_behave_the_same_when_rasterized(view, qtbot):
    xy, labels = mixture(100_000, seed=3)
    view.set_points(xy, labels, [str(i) for i in range(10)])
    view.set_images(np.random.default_rng(0).random((len(xy), 4, 4)))
    view.viewport().repaint()
    assert view.render_mode() == "raster"
    qtbot.wait(200)  # the axes take their final widths after the first paints: the view range settles
    pw, ph = view.pixel_size()
    rng = np.random.default_rng(8)
    for q in np.concatenate([xy[rng.integers(0, len(xy), 60)] + rng.normal(0, 0.02, (60, 2)),
                             rng.uniform(-12, 12, (60, 2))]):
        d2 = ((xy[:, 0] - q[0]) / pw) ** 2 + ((xy[:, 1] - q[1]) / ph) ** 2
        j = int(np.argmin(d2))
        assert view.hit_test(*q) == (j if d2[j] <= 36 else None)
    i = int(np.argmax(np.hypot(*(xy - xy.mean(axis=0)).T)))  # an outlier: alone under the cursor
    with qtbot.waitSignal(view.exampleClicked, timeout=2000) as sig:
        pos = view.map_from_data(*xy[i]).toPoint()
        qtbot.mousePress(view.viewport(), LEFT, pos=pos)
        qtbot.mouseRelease(view.viewport(), LEFT, pos=pos)
    assert sig.args == [i]
    with qtbot.waitSignal(view.hovered, timeout=2000) as sig:
        send_mouse(view.viewport(), QtCore.QEvent.Type.MouseMove, view.map_from_data(*xy[i]),
                   button=NOBUTTON, buttons=NOBUTTON)
    assert sig.args == [i] and f"#{i}" in view.hover_preview().text()
    view.set_highlight(i)
    assert view.highlight() == i and tuple(view._highlight.getData()[0]) == (xy[i, 0],)


def test_new_codes_keep_labels_grouping_and_indices(view):
    rng = np.random.default_rng(9)
    n = 5000
    labels = rng.integers(-3, 6, n)  # unsorted, with unlabelled points
    xy = rng.normal(size=(n, 2)) * 4
    xy[17] = (np.nan, 1.0)  # never drawn, never hit
    view.set_points(xy, labels, [str(i) for i in range(6)])
    assert view.legend_labels() == ["unlabelled"] + [str(i) for i in range(6)]
    for k in range(3):
        codes = xy + k * 0.5
        view.set_points(codes, labels, [str(i) for i in range(6)], autorange=False)
        for i in (0, 1, 999, 4999):
            assert view.hit_test(*codes[i], radius_px=0.5) == i
        assert view.hit_test(np.nan, 1.0) is None
    x0, x1, y0, y1 = view.view_range()
    assert np.isfinite([x0, x1, y0, y1]).all()
    # Points with no position are left out of both drawings, without a numpy warning.
    xy[20] = (np.inf, 0.0)
    import warnings

    for threshold in (100, None):
        view.set_raster_threshold(threshold)
        view.set_points(xy, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            view.viewport().repaint()
        assert view.render_mode() == ("raster" if threshold else "exact")


def test_underlay_shows_under_the_raster(view, qtbot):
    view.set_legend_visible(False)
    rng = np.random.default_rng(10)
    xy = rng.normal(0, 0.5, (5000, 2))
    view.set_raster_threshold(100)
    view.set_points(xy, None)
    red = np.zeros((8, 8, 3))
    red[..., 0] = 1.0
    view.set_underlay(red, rect=(-6.0, -6.0, 12.0, 12.0))
    qtbot.wait(10)
    img = rendered(view.plot_widget())
    empty = view.map_from_data(-4.5, 4.5)
    centre = view.map_from_data(0.0, 0.0)
    r, g, b = img[int(empty.y()), int(empty.x())].astype(int)
    assert r > g + 80 and r > b + 80  # the underlay where there are no points
    r, g, b = img[int(centre.y()), int(centre.x())].astype(int)
    assert not (r > g + 80 and r > b + 80)  # points over it where they are dense
    assert view.render_mode() == "raster"


class _Clock:
    """A perf_counter the test moves: each call returns ``t`` and adds ``step``."""

    def __init__(self):
        self.t = 100.0
        self.step = 0.0

    def perf_counter(self) -> float:
        value = self.t
        self.t += self.step
        return value


def test_a_pan_shows_the_last_rendering_moved_until_the_next_is_due(view, qtbot, monkeypatch):
    import app.widgets.latent_view as lv

    clock = _Clock()
    monkeypatch.setattr(lv, "time", clock)
    xy, labels = mixture(20_000)
    view.set_raster_threshold(1000)
    view.set_points(xy, labels)
    vp = view.viewport()
    clock.step = 0.05  # a rendering "takes" 50 ms
    vp.repaint()
    renders = view.render_count()
    layer = view.rendered_layer()
    clock.t -= 0.04  # the next reading: 10 ms after the rendering ended
    clock.step = 0.001
    x0, x1, y0, y1 = view.view_range()
    view.view_box().setRange(xRange=(x0 + 0.3, x1 + 0.3), yRange=(y0, y1), padding=0)
    vp.repaint()  # 1 ms after a 50 ms rendering: the last one, moved
    assert view.render_count() == renders and view.rendered_layer() is layer
    img = rendered(vp)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # the points are on screen meanwhile
    clock.t += 1.0  # the next rendering is due: the scheduled repaint makes it
    qtbot.waitUntil(lambda: view.render_count() == renders + 1, timeout=2000)
    assert view.rendered_layer() is not layer
    # Without progressive drawing every moved frame renders.
    view.set_progressive(False)
    clock.step = 0.05
    view.view_box().setRange(xRange=(x0 + 0.4, x1 + 0.4), yRange=(y0, y1), padding=0)
    vp.repaint()
    renders = view.render_count()
    clock.t -= 0.04
    clock.step = 0.001
    view.view_box().setRange(xRange=(x0 + 0.6, x1 + 0.6), yRange=(y0, y1), padding=0)
    vp.repaint()
    assert view.render_count() == renders + 1
