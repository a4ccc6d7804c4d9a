"""Widgets of the comparison window: a latent map per run, and the runs' loss curves on one plot.

Numpy in, signals out, as every widget: the window computes the codes, the
map positions and the curves, these only draw them.

* ``CompareMap``: one run's held-out examples in its own map space, coloured
  by class, with the prior's sigma circles around where z = 0 lands, a ring
  on the selected example and a click that names the nearest example.
* ``CompareCurves``: one line per run (training batches, smoothed) and
  symbols for its held-out epochs, a legend with the run names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from .latent_view import class_colour, theme_legend

__all__ = ["CompareCurves", "CompareMap", "RUN_COLOURS", "circle_points"]

#: One colour per compared run (curves, map titles, table headers); none is a class colour's twin.
RUN_COLOURS = ("#1f5fbf", "#c0392b", "#1e8449", "#8e44ad")
#: Point size on the maps, in screen pixels.
POINT_PX = 5
#: A click selects the nearest example within this many screen pixels.
CLICK_PX = 10.0
#: Vertices of a drawn prior circle.
CIRCLE_VERTICES = 181
#: Where on each circle (degrees from the x axis) its label sits: the first below the centre, the next above.
CIRCLE_LABEL_DEGREES = (-40.0, 40.0, 60.0)


def _theme(palette: QtGui.QPalette) -> tuple[QtGui.QColor, QtGui.QColor]:
    """(background, foreground) of plots, following the widget palette as the main window's plots do."""
    return palette.color(QtGui.QPalette.ColorRole.Base), palette.color(QtGui.QPalette.ColorRole.Text)


def circle_points(origin: Sequence[float], radius: float, n: int = CIRCLE_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """x and y of a closed polygon of ``n`` vertices on the circle of ``radius`` around ``origin``."""
    t = np.linspace(0.0, 2.0 * np.pi, n)
    return float(origin[0]) + radius * np.cos(t), float(origin[1]) + radius * np.sin(t)



def _style_plot(plot: pg.PlotWidget, bg: QtGui.QColor, fg: QtGui.QColor) -> None:
    """The theme's background and the axes' lines and numbers in its foreground colour."""
    plot.setBackground(bg)
    pen = pg.mkPen(fg)
    for side in ("left", "bottom"):
        ax = plot.plotItem.getAxis(side)
        ax.setPen(pen)
        ax.setTextPen(pen)


class CompareMap(pg.PlotWidget):
    """One run's map: examples coloured by label, the prior's circles, the selected example ringed."""

    #: The user clicked near an example: its index in the dataset.
    exampleClicked = QtCore.Signal(int)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setMinimumSize(160, 160)
        self.plotItem.setMenuEnabled(False)
        self.plotItem.hideButtons()
        self.plotItem.setAspectLocked(True)
        self.plotItem.showGrid(x=True, y=True, alpha=0.12)
        self._scatter = pg.ScatterPlotItem(pxMode=True, size=POINT_PX, pen=None)
        self._scatter.setZValue(1)
        self.plotItem.addItem(self._scatter)
        self._circles: list[pg.PlotCurveItem] = []
        self._circle_labels: list[pg.TextItem] = []
        self._ring = pg.ScatterPlotItem(pxMode=True, size=15, brush=None)
        self._ring.setZValue(5)
        self._ring_halo = pg.ScatterPlotItem(pxMode=True, size=15, brush=None)
        self._ring_halo.setZValue(4)
        self.plotItem.addItem(self._ring_halo)
        self.plotItem.addItem(self._ring)
        self._message = pg.TextItem("", anchor=(0.5, 0.5))
        self._message.setZValue(10)
        self.plotItem.addItem(self._message, ignoreBounds=True)
        self._xy = np.zeros((0, 2), dtype=np.float64)
        self._indices = np.zeros(0, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._origin = (0.0, 0.0)
        self._radii: tuple[float, ...] = ()
        self._highlighted: int | None = None
        self._title = ""
        self._title_colour = ""
        self._axes = ("", "")
        self.scene().sigMouseClicked.connect(self._on_scene_click)
        self._themed = True  # pyqtgraph changes the palette while it builds the view: no theme before this
        self._apply_theme()

    # ------------------------------------------------------------ content
    def set_title(self, text: str, colour: str = "") -> None:
        self._title, self._title_colour = text, colour
        self._apply_title()

    def set_axis_labels(self, x: str, y: str) -> None:
        self._axes = (x, y)
        _, fg = _theme(self.palette())
        self.plotItem.setLabel("bottom", x, color=fg.name())
        self.plotItem.setLabel("left", y, color=fg.name())

    def axis_labels(self) -> tuple[str, str]:
        return self._axes

    def set_message(self, text: str) -> None:
        """A line in the middle of the plot while it has no points (e.g. "Encoding…"); "" hides it."""
        self._message.setText(text)
        self._message.setVisible(bool(text))
        if text:
            vr = self.plotItem.vb.viewRect()
            self._message.setPos(vr.center())

    def set_points(self, xy: np.ndarray, indices: np.ndarray, labels: np.ndarray | None) -> None:
        """Examples ``indices`` at map positions ``xy`` (N, 2), coloured by ``labels`` (N,) (None: unlabelled)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(xy) != len(indices):
            raise ValueError(f"{len(xy)} positions for {len(indices)} examples")
        self._xy, self._indices = xy, indices
        self._row_of = {int(i): k for k, i in enumerate(indices)}
        labs = np.full(len(xy), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        brushes = {int(v): pg.mkBrush(class_colour(int(v))) for v in np.unique(labs)}
        self._scatter.setData(x=xy[:, 0], y=xy[:, 1], brush=[brushes[int(v)] for v in labs])
        self.set_message("")
        self._place_ring()
        self.fit()

    def set_prior(self, origin: Sequence[float], radii: Sequence[float]) -> None:
        """The prior's circles of ``radii`` (its sigma levels) around ``origin``, dashed and labelled "1σ", "2σ"."""
        for item in (*self._circles, *self._circle_labels):
            self.plotItem.removeItem(item)
        self._circles, self._circle_labels = [], []
        self._origin = (float(origin[0]), float(origin[1]))
        self._radii = tuple(float(r) for r in radii)
        for r in self._radii:
            x, y = circle_points(self._origin, r)
            curve = pg.PlotCurveItem(x, y)
            curve.setZValue(3)
            self.plotItem.addItem(curve)
            # 1σ below and 2σ above the centre's right, so the two never overlap however small the circles are.
            angle = np.deg2rad(CIRCLE_LABEL_DEGREES[min(len(self._circles), len(CIRCLE_LABEL_DEGREES) - 1)])
            label = pg.TextItem(f"{r:g}σ", anchor=(0.0, 1.0) if np.sin(angle) > 0 else (0.0, 0.0))
            label.setPos(self._origin[0] + r * np.cos(angle), self._origin[1] + r * np.sin(angle))
            label.setZValue(3)
            self.plotItem.addItem(label)
            self._circles.append(curve)
            self._circle_labels.append(label)
        self._style_circles()
        self.fit()

    def fit(self) -> None:
        """Show every example and the largest prior circle: how the codes sit against the prior, at a glance."""
        boxes = []
        if len(self._xy):
            finite = self._xy[np.isfinite(self._xy).all(axis=1)]
            if len(finite):
                boxes.append((finite.min(axis=0), finite.max(axis=0)))
        if self._radii:
            r = max(self._radii)
            o = np.asarray(self._origin)
            boxes.append((o - r, o + r))
        if not boxes:
            return
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        span = np.maximum(hi - lo, 1e-6)
        self.plotItem.vb.setRange(xRange=(lo[0], lo[0] + span[0]), yRange=(lo[1], lo[1] + span[1]), padding=0.06)

    def circle_labels(self) -> list[str]:
        return [label.textItem.toPlainText() for label in self._circle_labels]

    def prior(self) -> tuple[tuple[float, float], tuple[float, ...]]:
        """The circles' centre and radii."""
        return self._origin, self._radii

    def n_points(self) -> int:
        return len(self._indices)

    def indices(self) -> np.ndarray:
        return self._indices.copy()

    def position_of(self, index: int) -> tuple[float, float] | None:
        """Where example ``index`` is drawn (None when it is not on this map)."""
        k = self._row_of.get(int(index))
        return None if k is None else (float(self._xy[k, 0]), float(self._xy[k, 1]))

    def highlight(self, index: int | None) -> None:
        """Ring example ``index`` (None: no ring; an example not on the map gets none either)."""
        self._highlighted = None if index is None else int(index)
        self._place_ring()

    def highlighted(self) -> int | None:
        """The example ringed now (None when none is)."""
        if self._highlighted is None or self._highlighted not in self._row_of:
            return None
        return self._highlighted

    def _place_ring(self) -> None:
        pos = None if self._highlighted is None else self.position_of(self._highlighted)
        for item in (self._ring, self._ring_halo):
            if pos is None:
                item.setData(x=[], y=[])
            else:
                item.setData(x=[pos[0]], y=[pos[1]])

    def map_from_data(self, x: float, y: float) -> QtCore.QPointF:
        """The viewport position of the data point (x, y) (for tests that click)."""
        scene = self.plotItem.vb.mapViewToScene(QtCore.QPointF(x, y))
        return QtCore.QPointF(self.mapFromScene(scene))

    def example_near(self, x: float, y: float, px: float = CLICK_PX) -> int | None:
        """The example drawn nearest the data point (x, y), within ``px`` screen pixels; None when none is."""
        if not len(self._xy):
            return None
        sx, sy = self.plotItem.vb.viewPixelSize()
        if not (sx > 0 and sy > 0):
            return None
        d2 = ((self._xy[:, 0] - x) / sx) ** 2 + ((self._xy[:, 1] - y) / sy) ** 2
        k = int(np.argmin(d2))
        return int(self._indices[k]) if d2[k] <= px * px else None

    @QtCore.Slot(object)
    def _on_scene_click(self, ev) -> None:
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        vb = self.plotItem.vb
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = vb.mapSceneToView(ev.scenePos())
        index = self.example_near(p.x(), p.y())
        if index is not None:
            ev.accept()
            self.exampleClicked.emit(index)

    # -------------------------------------------------------------- theme
    def _apply_title(self) -> None:
        _, fg = _theme(self.palette())
        colour = self._title_colour or fg.name()
        self.plotItem.setTitle(self._title, color=colour, size="10pt", bold=True)
        self.plotItem.titleLabel.setMinimumWidth(0)

    def _style_circles(self) -> None:
        _, fg = _theme(self.palette())
        c = QtGui.QColor(fg)
        c.setAlpha(170)
        pen = pg.mkPen(c, width=1.3, style=QtCore.Qt.PenStyle.DashLine)
        for curve in self._circles:
            curve.setPen(pen)
        for label in self._circle_labels:
            label.setColor(c)

    def _apply_theme(self) -> None:
        bg, fg = _theme(self.palette())
        _style_plot(self, bg, fg)
        self.set_axis_labels(*self._axes)
        self._apply_title()
        self._style_circles()
        accent = self.palette().color(QtGui.QPalette.ColorRole.Highlight)
        self._ring.setPen(pg.mkPen(accent, width=2.5))
        self._ring_halo.setPen(pg.mkPen(bg, width=6.0))
        self._message.setColor(self.palette().color(QtGui.QPalette.ColorRole.PlaceholderText))

    def changeEvent(self, event: QtCore.QEvent) -> None:
        if getattr(self, "_themed", False) and event.type() in (QtCore.QEvent.Type.PaletteChange,
                                                                QtCore.QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)


class CompareCurves(pg.PlotWidget):
    """The runs' curves on one pair of axes: a line per run and its held-out epochs as symbols."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setMinimumSize(200, 150)
        self.plotItem.setMenuEnabled(False)
        self.plotItem.hideButtons()
        self.plotItem.showGrid(x=True, y=True, alpha=0.15)
        self.plotItem.setClipToView(True)
        self.plotItem.setDownsampling(auto=True, mode="peak")
        self._legend = self.plotItem.addLegend(offset=(-8, 8), labelTextSize="8pt")
        self._items: dict[str, tuple[pg.PlotDataItem, pg.ScatterPlotItem]] = {}
        self._labels = ("", "")
        self._title = ""
        self._themed = True
        self._apply_theme()

    def set_title(self, text: str) -> None:
        self._title = text
        _, fg = _theme(self.palette())
        self.plotItem.setTitle(text, color=fg.name(), size="9pt")
        self.plotItem.titleLabel.setMinimumWidth(0)  # a long title is cut at the plot's width, never widens it

    def title(self) -> str:
        return self._title

    def set_axis_labels(self, x: str, y: str) -> None:
        self._labels = (x, y)
        _, fg = _theme(self.palette())
        self.plotItem.setLabel("bottom", x, color=fg.name())
        self.plotItem.setLabel("left", y, color=fg.name())

    def axis_labels(self) -> tuple[str, str]:
        return self._labels

    def set_run(self, name: str, colour: str, x: np.ndarray, y: np.ndarray, epoch_x: np.ndarray,
                epoch_y: np.ndarray) -> None:
        """Draw run ``name``: its line (x, y) and its held-out points (epoch_x, epoch_y), in ``colour``."""
        self.remove_run(name)
        line = pg.PlotDataItem(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                               pen=pg.mkPen(colour, width=1.6), name=name)
        bg, _ = _theme(self.palette())
        dots = pg.ScatterPlotItem(np.asarray(epoch_x, dtype=np.float64), np.asarray(epoch_y, dtype=np.float64),
                                  symbol="o", size=8, brush=pg.mkBrush(colour), pen=pg.mkPen(bg, width=1.2))
        dots.setZValue(2)
        self.plotItem.addItem(line)
        self.plotItem.addItem(dots)
        self._items[name] = (line, dots)
        self._fit_y()

    def remove_run(self, name: str) -> None:
        old = self._items.pop(name, None)
        if old is not None:
            self._legend.removeItem(old[0])
            for item in old:
                self.plotItem.removeItem(item)

    def runs(self) -> list[str]:
        return list(self._items)

    def run_data(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, epoch x, epoch y) as drawn for run ``name``."""
        line, dots = self._items[name]
        x, y = line.getData()
        ex, ey = dots.getData()
        return (np.asarray(x if x is not None else []), np.asarray(y if y is not None else []),
                np.asarray(ex), np.asarray(ey))

    def legend_names(self) -> list[str]:
        return [label.text for _, label in self._legend.items]

    def _fit_y(self) -> None:
        """Show the bulk of every curve: the first batches of a run can lie far above the rest."""
        values = []
        for line, dots in self._items.values():
            _, y = line.getData()
            if y is not None and len(y):
                values.append(np.asarray(y, dtype=np.float64))
            _, ey = dots.getData()
            if ey is not None and len(ey):
                values.append(np.asarray(ey, dtype=np.float64))
        if not values:
            return
        v = np.concatenate(values)
        v = v[np.isfinite(v)]
        if not len(v):
            return
        lo, hi = float(np.min(v)), float(np.quantile(v, 0.98))
        tail = []
        for line, dots in self._items.values():  # every run's last value and held-out points stay in view
            _, y = line.getData()
            if y is not None and len(y) and np.isfinite(y[-1]):
                tail.append(float(y[-1]))
            _, ey = dots.getData()
            if ey is not None:
                tail.extend(float(e) for e in ey if np.isfinite(e))
        if tail:
            hi = max(hi, max(tail))
        if hi <= lo:
            hi = lo + 1.0
        pad = 0.05 * (hi - lo)
        self.plotItem.enableAutoRange(axis="x")
        self.plotItem.setYRange(lo - pad, hi + pad, padding=0)

    def _apply_theme(self) -> None:
        bg, fg = _theme(self.palette())
        _style_plot(self, bg, fg)
        self.set_axis_labels(*self._labels)
        if self._title:
            self.set_title(self._title)
        theme_legend(self._legend, bg, fg)
        for _, dots in self._items.values():
            dots.setPen(pg.mkPen(bg, width=1.2))

    def changeEvent(self, event: QtCore.QEvent) -> None:
        if getattr(self, "_themed", False) and event.type() in (QtCore.QEvent.Type.PaletteChange,
                                                                QtCore.QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)
