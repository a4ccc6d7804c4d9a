"""Live training curves: reconstruction and loss on top, KL below, x = training step.

Points are buffered cheaply by :meth:`LossPlot.append` and drawn from a timer at
about 10 Hz, only when something changed. Long runs are decimated for drawing
(min/max per bucket over the visible x range) so a 100,000-step run costs the
same to draw as a 2,000-step one, and spikes stay visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

__all__ = ["LossPlot", "decimate_minmax"]

#: Curve colours chosen to read on both light and dark backgrounds.
CURVE_COLOURS = {
    "recon": "#3d8fd6",
    "loss": "#e8710a",
    "kl": "#2ca05a",
}
CURVE_NAMES = {
    "recon": "reconstruction (train)",
    "loss": "loss = recon + \u03b2\u00b7KL (train)",
    "kl": "KL (train)",
}
EPOCH_NAMES = {
    "recon": "held-out reconstruction",
    "loss": "held-out \u2212ELBO",
    "kl": "held-out KL",
}
MARKER_COLOUR = "#9467bd"

#: Values at or below zero are drawn at this floor when the y axis is logarithmic.
LOG_FLOOR = 1e-6
#: At most about this many points are drawn per curve (fewer on a narrow plot: two per pixel).
MAX_DRAW_POINTS = 2000
MIN_DRAW_POINTS = 400
REDRAW_INTERVAL_MS = 100
#: While following new points the x axis ends at the next of these multiples of a power of ten,
#: so the axes (costly to lay out) change a few times per decade instead of on every redraw.
NICE_STEPS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
#: The y range is refitted when the data leave it or fill less than this share of it.
Y_FILL_MIN = 0.6
Y_PAD = 0.08
#: While following, the vertical range leaves out the first 3% of the steps (once there are enough points).
SETTLE_FRACTION = 0.03
SETTLE_MIN_POINTS = 50


def nice_ceil(v: float) -> float:
    """The smallest number of the form s * 10**k (s in NICE_STEPS) that is >= v (v > 0)."""
    if not np.isfinite(v) or v <= 0:
        return 1.0
    k = np.floor(np.log10(v))
    base = 10.0 ** k
    for step in NICE_STEPS:
        if step * base >= v * (1 - 1e-12):
            return float(step * base)
    return float(10.0 * base)


def sticky_range(lo: float, hi: float, cur: tuple[float, float] | None,
                 fill_min: float = Y_FILL_MIN, pad: float = Y_PAD) -> tuple[float, float] | None:
    """A new (lo, hi) view range for data spanning [lo, hi], or None to keep ``cur``.

    ``cur`` is kept while it holds the data and the data fill at least
    ``fill_min`` of it; otherwise the data plus ``pad`` of their span on each side.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    span = hi - lo
    if span <= 0:
        span = max(abs(hi) * 0.1, 1e-3)
        lo, hi = lo - span / 2, hi + span / 2
    if cur is not None:
        clo, chi = cur
        if clo <= lo and chi >= hi and (hi - lo) >= fill_min * (chi - clo):
            return None
    return lo - pad * span, hi + pad * span


def decimate_minmax(x: np.ndarray, y: np.ndarray, max_points: int = MAX_DRAW_POINTS,
                    lo: float | None = None, hi: float | None = None,
                    x_sorted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (x, y) to at most about ``max_points`` points, keeping each bucket's min and max.

    When ``x`` is sorted, only the part inside [lo, hi] (plus one point on each
    side) is kept first. The first and last points of what remains are always
    kept, so the drawn curve reaches the newest step.
    """
    n = len(x)
    if n and x_sorted and (lo is not None or hi is not None):
        i0 = 0 if lo is None else max(0, int(np.searchsorted(x, lo, side="left")) - 1)
        i1 = n if hi is None else min(n, int(np.searchsorted(x, hi, side="right")) + 1)
        x, y = x[i0:i1], y[i0:i1]
        n = len(x)
    if n <= max_points:
        return x, y
    nb = max(1, max_points // 2)
    b = -(-n // nb)
    k = n // b
    m = k * b
    blocks = y[:m].reshape(k, b)
    base = np.arange(k) * b
    i_min = base + np.argmin(blocks, axis=1)
    i_max = base + np.argmax(blocks, axis=1)
    parts = [np.array([0]), i_min, i_max]
    if m < n:
        tail = y[m:]
        parts.append(np.array([m + int(np.argmin(tail)), m + int(np.argmax(tail))]))
    parts.append(np.array([n - 1]))
    idx = np.unique(np.concatenate(parts))
    return x[idx], y[idx]


class _GrowingBuffer:
    """Columns of float64 in one preallocated array that doubles when full."""

    def __init__(self, ncols: int, capacity: int = 4096):
        self._data = np.empty((ncols, capacity), dtype=np.float64)
        self.n = 0

    def append(self, cols: Sequence[np.ndarray]) -> None:
        k = len(cols[0])
        need = self.n + k
        if need > self._data.shape[1]:
            cap = max(need, 2 * self._data.shape[1])
            grown = np.empty((self._data.shape[0], cap), dtype=np.float64)
            grown[:, : self.n] = self._data[:, : self.n]
            self._data = grown
        for i, c in enumerate(cols):
            self._data[i, self.n:need] = c
        self.n = need

    def column(self, i: int) -> np.ndarray:
        return self._data[i, : self.n]

    def clear(self) -> None:
        self.n = 0


def _theme(palette: QtGui.QPalette) -> tuple[QtGui.QColor, QtGui.QColor]:
    """(background, foreground) for plots, following the widget palette."""
    bg = palette.color(QtGui.QPalette.ColorRole.Base)
    fg = palette.color(QtGui.QPalette.ColorRole.Text)
    return bg, fg


class LossPlot(QtWidgets.QWidget):
    """Training curves with held-out epoch points, event markers and a log-scale toggle."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("lossPlot")

        self._buf = _GrowingBuffer(4)  # step, recon, kl, loss
        self._sorted = True
        self._last_step = -np.inf
        self._dirty = False
        self._log_y = False
        self._drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._epochs: list[tuple[float, float, float, float]] = []
        self._markers: list[tuple[float, str, pg.InfiniteLine, pg.InfiniteLine]] = []
        self._epoch_legend_added = False
        #: True while the view follows new points (ranges set here, in steps); False once the user pans or zooms.
        self._follow = True

        # Toolbar row.
        self._log_check = QtWidgets.QCheckBox("Log scale")
        self._log_check.setObjectName("logScaleCheck")
        self._log_check.setToolTip("Logarithmic y axes (values at or below zero are drawn at "
                                   f"{LOG_FLOOR:g})")
        self._log_check.toggled.connect(self.set_log_y)
        self._reset_btn = QtWidgets.QToolButton()
        self._reset_btn.setObjectName("lossResetViewButton")
        self._reset_btn.setText("Auto range")
        self._reset_btn.setToolTip("Fit both plots to the data and follow new points")
        self._reset_btn.clicked.connect(self.auto_range)
        bar = QtWidgets.QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 0)
        bar.addWidget(self._log_check)
        bar.addWidget(self._reset_btn)
        bar.addStretch(1)

        # Two plots side by side sharing the x axis (the dock is wide and short).
        self._glw = pg.GraphicsLayoutWidget()
        self._glw.setObjectName("lossPlotCanvas")
        self._top = self._glw.addPlot(row=0, col=0)
        self._bottom = self._glw.addPlot(row=0, col=1)
        self._bottom.setXLink(self._top)
        self._glw.ci.layout.setColumnStretchFactor(0, 3)
        self._glw.ci.layout.setColumnStretchFactor(1, 2)
        for plot in (self._top, self._bottom):
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setMenuEnabled(True)
            plot.hideButtons()  # the toolbar's Auto range button does this job
            vb = plot.getViewBox()
            vb.setMouseMode(pg.ViewBox.PanMode)
            # Ranges are set by _follow_ranges while following: pyqtgraph's own auto range
            # refits (and relays out both axes) on every redraw.
            vb.disableAutoRange()
            vb.sigRangeChangedManually.connect(self._on_user_range)
            for side in ("left", "bottom"):
                ax = plot.getAxis(side)
                ax.enableAutoSIPrefix(False)
                # Axes (ticks, labels, grid lines) are kept as a pixmap and redrawn only when
                # their range changes, not every time a curve under the grid moves.
                ax.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # The titles double as legends (a legend inside the plot covers the curves).
        self._top_keys = (("recon", "reconstruction"), ("loss", "loss = recon + β·KL"))
        self._bottom_keys = (("kl", "KL"),)
        self._bottom.setLabel("bottom", "training step")
        self._top.setLabel("bottom", "training step")
        # pyqtgraph's legends keep the list of what is drawn (hidden: the titles show it).
        self._top_legend = self._top.addLegend()
        self._bottom_legend = self._bottom.addLegend()
        for legend in (self._top_legend, self._bottom_legend):
            legend.setVisible(False)
        self._glw.setToolTip(
            "Lines: the training batches (recon = −E_q[log p(x|z)], loss = recon + β·KL, and KL).\n"
            "Dots: the held-out split after each epoch (its loss is −ELBO).\n"
            "Dashed lines: changes of β or the learning rate.  All in nats per example.")

        self._curves: dict[str, pg.PlotDataItem] = {}
        for name, plot in (("recon", self._top), ("loss", self._top), ("kl", self._bottom)):
            # A one-pixel pen: Qt strokes wider antialiased paths some fifty times slower.
            curve = pg.PlotDataItem(pen=pg.mkPen(CURVE_COLOURS[name], width=1),
                                    name=CURVE_NAMES[name], connect="finite",
                                    antialias=True)
            plot.addItem(curve)
            self._curves[name] = curve
        self._epoch_items: dict[str, pg.PlotDataItem] = {}
        for name, plot in (("recon", self._top), ("loss", self._top), ("kl", self._bottom)):
            item = pg.PlotDataItem(pen=pg.mkPen(CURVE_COLOURS[name], width=1,
                                                style=QtCore.Qt.PenStyle.DashLine),
                                   symbol="o", symbolSize=8,
                                   symbolBrush=pg.mkBrush(CURVE_COLOURS[name]))
            item.setZValue(5)
            # Held-out points change once per epoch: drawn from a pixmap in between.
            for part in (item.curve, item.scatter):
                part.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
            plot.addItem(item)  # no name: its legend entry is added with the first epoch
            self._epoch_items[name] = item

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self._glw, 1)

        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)
        self._top.getViewBox().sigXRangeChanged.connect(self._on_x_range_changed)

        self._apply_theme()

    # --- data -----------------------------------------------------------------------

    def append(self, steps, recon, kl, loss) -> None:
        """Buffer a batch of new points (1-D arrays of equal length); drawn on the next tick."""
        s = np.atleast_1d(np.asarray(steps, dtype=np.float64)).ravel()
        r = np.atleast_1d(np.asarray(recon, dtype=np.float64)).ravel()
        k = np.atleast_1d(np.asarray(kl, dtype=np.float64)).ravel()
        lo = np.atleast_1d(np.asarray(loss, dtype=np.float64)).ravel()
        if not (len(s) == len(r) == len(k) == len(lo)):
            raise ValueError("steps, recon, kl and loss must have the same length")
        if len(s) == 0:
            return
        if self._sorted:
            if s[0] < self._last_step or (len(s) > 1 and np.any(np.diff(s) < 0)):
                self._sorted = False
        self._last_step = max(self._last_step, float(s[-1]))
        self._buf.append((s, r, k, lo))
        self._schedule()

    @QtCore.Slot(float, float, float, float)
    def add_epoch(self, step: float, recon: float, kl: float, loss: float) -> None:
        """Add held-out values for one epoch (``loss`` is -ELBO, nats per example)."""
        self._epochs.append((float(step), float(recon), float(kl), float(loss)))
        if not self._epoch_legend_added:
            self._top_legend.addItem(self._epoch_items["recon"], EPOCH_NAMES["recon"])
            self._top_legend.addItem(self._epoch_items["loss"], EPOCH_NAMES["loss"])
            self._bottom_legend.addItem(self._epoch_items["kl"], EPOCH_NAMES["kl"])
            self._epoch_legend_added = True
        self._draw_epochs()
        self._follow_ranges()

    @QtCore.Slot(float, str)
    def add_marker(self, step: float, text: str) -> None:
        """A dashed vertical line on both plots with a label, e.g. ``"beta 1 -> 4"``."""
        bg, fg = _theme(self.palette())
        k = len(self._markers)
        lines = []
        for plot in (self._top, self._bottom):
            line = pg.InfiniteLine(pos=float(step), angle=90, movable=False,
                                   pen=self._marker_pen(), label=text,
                                   labelOpts=self._marker_label_opts(k, fg, bg))
            line.setZValue(3)
            line.setToolTip(f"step {step:g}: {text}")
            plot.addItem(line, ignoreBounds=True)
            lines.append(line)
        self._markers.append((float(step), text, lines[0], lines[1]))

    def clear(self) -> None:
        """Remove all points, epoch values and markers."""
        self._buf.clear()
        self._sorted = True
        self._last_step = -np.inf
        self._epochs.clear()
        for _, _, a, b in self._markers:
            self._top.removeItem(a)
            self._bottom.removeItem(b)
        self._markers.clear()
        for item in self._epoch_items.values():
            item.setData([], [])
        if self._epoch_legend_added:
            for name, legend in (("recon", self._top_legend), ("loss", self._top_legend),
                                 ("kl", self._bottom_legend)):
                legend.removeItem(self._epoch_items[name])
            self._epoch_legend_added = False
        self._dirty = True
        self._redraw()
        self.auto_range()

    def set_history(self, steps, recon, kl, loss,
                    epochs: Iterable[Sequence[float]] | None = None,
                    markers: Iterable[tuple[float, str]] | None = None) -> None:
        """Show a whole recorded run at once (replaces what is shown)."""
        self.clear()
        if len(np.atleast_1d(steps)):
            self.append(steps, recon, kl, loss)
        for e in epochs or ():
            self.add_epoch(*e)
        for step, text in markers or ():
            self.add_marker(step, text)
        self.flush()
        self.auto_range()

    # --- view -----------------------------------------------------------------------

    @QtCore.Slot(bool)
    def set_log_y(self, on: bool) -> None:
        on = bool(on)
        if self._log_check.isChecked() != on:
            self._log_check.blockSignals(True)
            self._log_check.setChecked(on)
            self._log_check.blockSignals(False)
        if on == self._log_y:
            return
        self._log_y = on
        # The data are floored first, so the log axes never see a zero.
        self._dirty = True
        self._redraw()
        self._draw_epochs()
        for plot in (self._top, self._bottom):
            plot.setLogMode(x=False, y=on)
        self._follow_ranges(force_y=True)

    def log_y(self) -> bool:
        return self._log_y

    @QtCore.Slot()
    def auto_range(self) -> None:
        """Fit both plots to the data and keep following new points."""
        was = self._follow
        self._follow = True
        if not was and self._buf.n > MAX_DRAW_POINTS:
            self._dirty = True  # draw the whole run again, not the part that was visible
            self._redraw()
        self._follow_ranges(force_y=True)

    def following(self) -> bool:
        """Whether the view follows new points (False after the user pans or zooms)."""
        return self._follow

    def set_redraw_interval(self, ms: int) -> None:
        """How often buffered points are drawn (the default ``REDRAW_INTERVAL_MS`` gives about 10 Hz)."""
        self._timer.setInterval(max(1, int(ms)))

    def redraw_interval(self) -> int:
        return self._timer.interval()

    @QtCore.Slot()
    def flush(self) -> None:
        """Draw buffered points now instead of on the next timer tick."""
        self._timer.stop()
        self._redraw()

    # --- introspection (tests, status bars) --------------------------------------------

    def point_count(self) -> int:
        return self._buf.n

    def curve_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) currently drawn for ``"recon"``, ``"loss"`` or ``"kl"``.

        ``"epoch_recon"``, ``"epoch_loss"`` and ``"epoch_kl"`` give the held-out
        points. Values are in data units (before the log mapping of the axis).
        """
        if name.startswith("epoch_"):
            key = name[len("epoch_"):]
            x, y = self._epoch_arrays(key)
            return x, y
        if name not in self._curves:
            raise KeyError(name)
        empty = np.zeros(0)
        return self._drawn.get(name, (empty, empty))

    def markers(self) -> list[tuple[float, str]]:
        return [(s, t) for s, t, _, _ in self._markers]

    def epochs(self) -> list[tuple[float, float, float, float]]:
        return list(self._epochs)

    def plots(self) -> tuple[pg.PlotItem, pg.PlotItem]:
        """The (top, bottom) PlotItems."""
        return self._top, self._bottom

    def redraw_pending(self) -> bool:
        return self._dirty

    # --- internals -------------------------------------------------------------------

    def _schedule(self) -> None:
        self._dirty = True
        if not self._timer.isActive():
            self._timer.start()

    @QtCore.Slot(object, object)
    def _on_x_range_changed(self, *_args) -> None:
        # Zoomed in: redraw at the finer detail the visible range allows.
        if not self._follow and self._buf.n > MAX_DRAW_POINTS:
            self._schedule()

    @QtCore.Slot(object)
    def _on_user_range(self, *_args) -> None:
        self._follow = False

    def _draw_points(self) -> int:
        width = self._top.getViewBox().width()
        if not np.isfinite(width) or width <= 0:
            return MAX_DRAW_POINTS
        return int(min(MAX_DRAW_POINTS, max(MIN_DRAW_POINTS, 2 * width)))

    @staticmethod
    def _settled(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The y values that set the vertical range: all but the first steps of a long run.

        The first few batches of a run are far above (or, for the KL, far off) where
        the curves settle; fitting the range to them squeezes the rest of the run
        into a sliver.  They are drawn, just allowed to leave the top of the plot.
        """
        if len(x) < 2 * SETTLE_MIN_POINTS:
            return y
        cut = x[0] + SETTLE_FRACTION * (x[-1] - x[0])
        keep = x >= cut
        return y[keep] if keep.sum() >= SETTLE_MIN_POINTS else y

    def _follow_ranges(self, force_y: bool = False) -> None:
        """While following: x from the first step to a round number past the last, y sticky around the data."""
        if not self._follow:
            return
        n = self._buf.n
        vb_top = self._top.getViewBox()
        if n:
            x = self._buf.column(0)
            x0, x1 = (float(x[0]), float(x[-1])) if self._sorted else (float(x.min()), float(x.max()))
            if self._epochs:
                x1 = max(x1, max(e[0] for e in self._epochs))
            span = x1 - x0
            hi = x0 + nice_ceil(span * 1.02) if span > 0 else x0 + 1.0
            cur = vb_top.viewRange()[0]
            if cur[0] != x0 or cur[1] != hi:
                vb_top.setXRange(x0, hi, padding=0)
        for plot, keys in ((self._top, ("recon", "loss")), (self._bottom, ("kl",))):
            ys = [self._settled(*self._drawn[k]) for k in keys if k in self._drawn]
            ys += [self._epoch_arrays(k)[1] for k in keys]
            y = np.concatenate(ys) if ys else np.zeros(0)
            if self._log_y:
                y = np.log10(y[y > 0])
            y = y[np.isfinite(y)]
            if not len(y):
                continue
            vb = plot.getViewBox()
            new = sticky_range(float(y.min()), float(y.max()), None if force_y else tuple(vb.viewRange()[1]))
            if new is not None:
                vb.setYRange(*new, padding=0)

    def _display_y(self, y: np.ndarray) -> np.ndarray:
        if self._log_y:
            return np.maximum(y, LOG_FLOOR)  # NaN stays NaN (a gap in the curve)
        return y

    @QtCore.Slot()
    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        n = self._buf.n
        x = self._buf.column(0)
        lo = hi = None
        vb = self._top.getViewBox()
        if n and not self._follow:
            lo, hi = vb.viewRange()[0]
        points = self._draw_points()
        for name, col in (("recon", 1), ("kl", 2), ("loss", 3)):
            y = self._display_y(self._buf.column(col))
            xd, yd = decimate_minmax(x, y, points, lo, hi, self._sorted)
            xd, yd = np.array(xd), np.array(yd)
            self._drawn[name] = (xd, yd)
            self._curves[name].setData(xd, yd)
        self._follow_ranges()

    def _epoch_arrays(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        col = {"recon": 1, "kl": 2, "loss": 3}[key]
        if not self._epochs:
            return np.zeros(0), np.zeros(0)
        e = np.asarray(self._epochs, dtype=np.float64)
        return e[:, 0], self._display_y(e[:, col])

    def _draw_epochs(self) -> None:
        for key, item in self._epoch_items.items():
            x, y = self._epoch_arrays(key)
            item.setData(x, y)

    def _marker_pen(self) -> QtGui.QPen:
        return pg.mkPen(MARKER_COLOUR, width=1, style=QtCore.Qt.PenStyle.DashLine)

    @staticmethod
    def _marker_label_opts(k: int, fg: QtGui.QColor, bg: QtGui.QColor) -> dict:
        fill = QtGui.QColor(bg)
        fill.setAlpha(210)
        # Staggered heights keep labels of nearby markers from covering each other.
        return {"position": (0.92, 0.74, 0.56)[k % 3], "color": QtGui.QColor(fg),
                "fill": fill, "movable": False, "anchors": [(0, 0.5), (0, 0.5)]}

    @staticmethod
    def _title_html(keys, fg: QtGui.QColor) -> str:
        parts = [f"<span style='color:{CURVE_COLOURS[k]}'>━ {text}</span>" for k, text in keys]
        parts.append(f"<span style='color:{fg.name()}'>● held-out</span>")
        return "&nbsp;&nbsp;&nbsp;".join(parts) + "&nbsp;&nbsp;&nbsp;(nats per example)"

    def _apply_theme(self) -> None:
        bg, fg = _theme(self.palette())
        self._glw.setBackground(bg)
        axis_pen = pg.mkPen(fg)
        for plot, keys in ((self._top, self._top_keys), (self._bottom, self._bottom_keys)):
            plot.setTitle(self._title_html(keys, fg), color=fg.name(), size="9pt")
            for side in ("left", "bottom"):
                ax = plot.getAxis(side)
                ax.setPen(axis_pen)
                ax.setTextPen(axis_pen)
        self._bottom.setLabel("bottom", "training step", color=fg.name())
        legend_bg = QtGui.QColor(bg)
        legend_bg.setAlpha(200)
        legend_pen = QtGui.QColor(fg)
        legend_pen.setAlpha(60)
        for legend in (self._top_legend, self._bottom_legend):
            legend.setBrush(legend_bg)
            legend.setPen(legend_pen)
            legend.setLabelTextColor(fg)
            for _, label in legend.items:
                label.setText(label.text, color=fg)
        for name, item in self._epoch_items.items():
            item.setSymbolPen(pg.mkPen(fg, width=1))
        for k, (_, _, a, b) in enumerate(self._markers):
            for line in (a, b):
                opts = self._marker_label_opts(k, fg, bg)
                line.label.setColor(opts["color"])
                line.label.fill = pg.mkBrush(opts["fill"])
                line.label.update()

    def changeEvent(self, event: QtCore.QEvent) -> None:
        if event.type() in (QtCore.QEvent.Type.PaletteChange,
                            QtCore.QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)
