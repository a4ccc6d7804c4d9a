"""Live training curves: reconstruction and loss on top, KL below, x = training step or wall time.

Points (batches and held-out evaluations alike) are buffered cheaply by
:meth:`LossPlot.append` and :meth:`LossPlot.add_epoch` and drawn from a timer at
about 10 Hz, only when something changed and the plot is shown. Long runs are
decimated for drawing (min/max per bucket over the visible x range) so a
100,000-step run costs the same to draw as a 2,000-step one, and spikes stay
visible. Each curve is one light item (``_Series``) that paints ready Qt
polygons; the grid and marker labels are drawn from pixmaps between changes;
while following new points the ranges change seldom (each change lays out the
axes anew).

A row of controls above the plots: a log-scale box, a smoothing slider
(TensorBoard's debiased exponential moving average, drawn over the raw curve
in a faint shade of its colour; 0 draws the raw curve alone), the x axis (training
step, or wall time since the run started when the points carry times) and Auto
range.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from .latent_view import GridLines, PlainAxis, blend

__all__ = ["LossPlot", "decimate_minmax", "debiased_ema", "MAX_SMOOTHING"]

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
#: Diameter in pixels of a held-out point, and the least room a drawn one has (closer ones are
#: thinned to the extremes of each stretch, as the curves).
EPOCH_DOT_SIZE = 8.0
EPOCH_DOT_SPACING = 3.0
#: The raw curve under a smoothed one: its colour at this opacity over the background.
RAW_SHADE = 0.3
#: Smoothing weights run from 0 (raw) to this, in steps of 1/SMOOTHING_STEPS.
MAX_SMOOTHING = 0.999
SMOOTHING_STEPS = 1000
RAW_TEXT = "0 (raw)"
X_AXES = {"step": "Step", "wall": "Wall time"}
X_LABELS = {"step": "training step", "wall": "wall time (h:mm:ss)"}
NO_WALL_TIME_TIP = ("No wall-clock times were recorded with these points (for example a run saved "
                    "before times were kept), so the x axis can only show training steps.")
#: Pixels between a marker line and its label.
MARKER_LABEL_GAP = 4.0

#: Values at or below zero are drawn at this floor when the y axis is logarithmic.
LOG_FLOOR = 1e-6
#: At most about this many points are drawn per curve (fewer on a narrow plot: two per pixel).
MAX_DRAW_POINTS = 2000
MIN_DRAW_POINTS = 400
REDRAW_INTERVAL_MS = 100
#: While following new points the x axis ends at the next of these multiples of a power of ten,
#: so the axes (costly to lay out) change a few times per decade instead of on every redraw.
NICE_STEPS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
#: ... and, once the newest point outgrows the range, past where the points will be this many
#: seconds later at their pace (measured over PACE_WINDOW_S), but at most twice the points' span:
#: short epochs (several a second) would otherwise relayout the axes every second.
LOOKAHEAD_S = 2.0
PACE_WINDOW_S = 1.0
#: The y range is refitted when the data leave it or fill less than this share of it.
Y_FILL_MIN = 0.5
Y_PAD = 0.08
#: A refit after the data left the range through one side leaves this share of their span more
#: room on that side: falling losses and growing KLs leave again soon otherwise (each time both
#: axes of the plot are laid out anew).
Y_LEAD = 0.25
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
                 fill_min: float = Y_FILL_MIN, pad: float = Y_PAD,
                 lead: float = 0.0) -> tuple[float, float] | None:
    """A new (lo, hi) view range for data spanning [lo, hi], or None to keep ``cur``.

    ``cur`` is kept while it holds the data and the data fill at least
    ``fill_min`` of it; otherwise the data plus ``pad`` of their span on each
    side, and ``lead`` more on a side where the data left ``cur``.
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
        below, above = (pad + lead if lo < clo else pad), (pad + lead if hi > chi else pad)
        return lo - below * span, hi + above * span
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
    # Each block's two in order, the blocks in order: the indices come sorted (no np.unique).
    parts = [np.array([0]), np.column_stack((np.minimum(i_min, i_max), np.maximum(i_min, i_max))).ravel()]
    if m < n:
        tail = y[m:]
        parts.append(np.sort([m + int(np.argmin(tail)), m + int(np.argmax(tail))]))
    parts.append(np.array([n - 1]))
    idx = np.concatenate(parts)
    idx = idx[np.concatenate(([True], np.diff(idx) > 0))]
    return x[idx], y[idx]


def _ema(y: np.ndarray, w: float, s0: float) -> np.ndarray:
    """s_t = w s_{t-1} + (1 - w) y_t for t = 1..n, from s_0 (``y`` finite, 0 < w < 1).

    In closed form s_t = w^t (s_0 + (1 - w) sum_{j<=t} w^-j y_j), computed in
    blocks short enough that w^-j stays below e^200.
    """
    n = len(y)
    out = np.empty(n, dtype=np.float64)
    lw = math.log(w)
    block = max(1, int(200.0 / -lw))
    s = float(s0)
    for k in range(0, n, block):
        yb = y[k:k + block]
        powers = np.exp(lw * np.arange(1, len(yb) + 1))  # w^t
        sb = powers * (s + (1.0 - w) * np.cumsum(yb / powers))
        out[k:k + len(yb)] = sb
        s = float(sb[-1])
    return out


def debiased_ema(y, weight: float, state: float = 0.0, count: int = 0) -> tuple[np.ndarray, float, int]:
    """TensorBoard's smoothing of a curve: an exponential moving average, debiased.

    s_t = w s_{t-1} + (1 - w) y_t from s_0 = 0, shown as s_t / (1 - w^t), where
    t counts the finite values so far.  Non-finite values are passed through as
    they are (gaps stay gaps) and leave the average alone.  ``state`` and
    ``count`` continue a curve: pass what the previous call returned with the
    next values.  Returns (smoothed values, new state, new count).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    w = float(weight)
    out = np.array(y, dtype=np.float64)
    if w <= 0.0 or len(y) == 0:
        return out, state, count
    if not w < 1.0:
        raise ValueError(f"a smoothing weight is below 1, got {w}")
    finite = np.isfinite(y)
    yf = y[finite]
    if len(yf) == 0:
        return out, state, count
    ema = _ema(yf, w, state)
    t = count + np.arange(1, len(yf) + 1, dtype=np.float64)
    out[finite] = ema / -np.expm1(t * math.log(w))
    return out, float(ema[-1]), count + len(yf)


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


class _Series(pg.GraphicsObject):
    """One series of a plot: a line through its points, and round dots on them if asked for.

    While a run trains the curves change ten times a second, and pyqtgraph's
    PlotDataItem spends milliseconds of Python on each change and each paint
    (display transforms, data bounds, a bounding rect recomputed several times
    a paint, a scatter item of its own).  This item keeps what it draws as
    ready Qt polygons, covers its view box (no data bounds to compute for
    painting) and paints with one Qt call for the line, in a cosmetic pen, and
    one small image a dot (a round pen per dot is stroked anew on every paint,
    some microseconds each).  Non-finite values break the line (as pyqtgraph's
    ``connect="finite"``).

    It is a data item to pyqtgraph's PlotItem, legend and CSV exporter:
    ``name()``, ``getData()`` (the coordinates drawn: logarithms on a
    logarithmic axis), ``getOriginalDataset()`` (the values given),
    ``setLogMode()`` and ``opts["pen"]``.
    """

    def __init__(self, pen: QtGui.QPen, name: str | None = None, dot_size: float = 0.0,
                 dot_colour: QtGui.QColor | None = None):
        super().__init__()
        #: pyqtgraph's item options: the line's pen (read by legends).
        self.opts: dict[str, object] = {"pen": pen, "antialias": True}
        self._name = name
        self._x = np.zeros(0)
        self._y = np.zeros(0)
        self._shown_y = self._y
        self._log_y = False
        #: The line: a polygon when every point is finite, else a path with gaps; None when empty.
        self._line: QtGui.QPolygonF | QtGui.QPainterPath | None = None
        #: Dots: the finite points (x, y as drawn), and one dot's image at the paint device's pixel ratio.
        self._dot_size = float(dot_size)
        self._dots: tuple[np.ndarray, np.ndarray] | None = None
        self._dot_fill = QtGui.QColor(dot_colour or pen.color())
        self._dot_outline = QtGui.QColor(pen.color())
        self._dot_image: QtGui.QImage | None = None
        #: The view box's area in this item's coordinates; None until asked for again.
        self._rect: QtCore.QRectF | None = None

    # --- what pyqtgraph asks of a data item --------------------------------------------------

    def implements(self, interface=None):
        ints = ["plotData"]
        return ints if interface is None else interface in ints

    def name(self) -> str | None:
        return self._name

    def getData(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) as drawn: y is log10 of the values while the y axis is logarithmic."""
        return self._x, self._shown_y

    def getOriginalDataset(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) as given to :meth:`setData`."""
        return self._x, self._y

    def setLogMode(self, x_mode: bool, y_mode: bool) -> None:
        """Draw log10 of y (x is never logarithmic here); called by the PlotItem on a log-mode change."""
        if bool(y_mode) != self._log_y:
            self._log_y = bool(y_mode)
            self._build()

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange=None):
        v = self._x if ax == 0 else self._shown_y
        v = v[np.isfinite(v)]
        return (float(v.min()), float(v.max())) if len(v) else (None, None)

    # --- data and style -------------------------------------------------------------------

    def setData(self, x: np.ndarray, y: np.ndarray) -> None:
        """The points to draw (1-D float arrays of equal length, in the axes' units before any log)."""
        if len(x) == 0 and len(self._x) == 0:
            return  # empty before and after (a smoothed line while smoothing is off)
        self._x = np.array(x, dtype=np.float64)
        self._y = np.array(y, dtype=np.float64)
        self._build()

    def setPen(self, pen: QtGui.QPen) -> None:
        self.opts["pen"] = pen
        self.update()

    def set_dot_outline(self, colour: QtGui.QColor) -> None:
        """The colour of the rim around each dot."""
        self._dot_outline = QtGui.QColor(colour)
        self._dot_image = None
        self.update()

    def _build(self) -> None:
        x = self._x
        if self._log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.log10(self._y)
        else:
            y = self._y
        self._shown_y = y
        finite = np.isfinite(x) & np.isfinite(y)
        if len(x) < 2:
            self._line = None
        elif finite.all():
            self._line = pg.functions.arrayToQPolygonF(x, y)
        elif np.count_nonzero(finite[1:] & finite[:-1]):
            self._line = pg.functions.arrayToQPath(x, y, connect="finite")
        else:
            self._line = None
        if self._dot_size > 0.0:
            self._dots = (x[finite], y[finite]) if finite.any() else None
        self.update()

    # --- painting -------------------------------------------------------------------------

    def viewTransformChanged(self) -> None:
        self.prepareGeometryChange()
        self._rect = None
        super().viewTransformChanged()

    def boundingRect(self) -> QtCore.QRectF:
        if self._rect is None:
            vb = self.getViewBox()
            self._rect = vb.viewRect() if vb is not None and hasattr(vb, "viewRect") else QtCore.QRectF()
        return self._rect

    def paint(self, p: QtGui.QPainter, option, widget=None) -> None:
        line, dots = self._line, self._dots
        if line is None and dots is None:
            return
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        if line is not None:
            p.setPen(self.opts["pen"])
            if isinstance(line, QtGui.QPolygonF):
                p.drawPolyline(line)
            else:
                p.drawPath(line)
        if dots is not None:
            self._paint_dots(p, *dots)

    def _dot(self, ratio: float) -> QtGui.QImage:
        """One dot: a disc in the fill colour with a one-pixel rim, at ``ratio`` device pixels a pixel."""
        image = self._dot_image
        if image is None or image.devicePixelRatio() != ratio:
            side = self._dot_size + 2.0
            n = max(1, math.ceil(side * ratio))
            image = QtGui.QImage(n, n, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
            image.setDevicePixelRatio(ratio)
            image.fill(QtCore.Qt.GlobalColor.transparent)
            q = QtGui.QPainter(image)
            q.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
            q.setPen(QtGui.QPen(self._dot_outline, 1.0))
            q.setBrush(self._dot_fill)
            c = n / ratio / 2.0
            r = self._dot_size / 2.0
            q.drawEllipse(QtCore.QPointF(c, c), r, r)
            q.end()
            self._dot_image = image
        return image

    def _paint_dots(self, p: QtGui.QPainter, x: np.ndarray, y: np.ndarray) -> None:
        """The dots at their positions in pixels, the same size at every zoom."""
        device = p.device()
        image = self._dot(device.devicePixelRatioF() if device is not None else 1.0)
        tr = p.transform()
        half = image.width() / image.devicePixelRatio() / 2.0
        px = tr.m11() * x + tr.m21() * y + tr.dx() - half
        py = tr.m12() * x + tr.m22() * y + tr.dy() - half
        p.resetTransform()
        for u, v in zip(px.tolist(), py.tolist()):
            p.drawImage(QtCore.QPointF(u, v), image)
        p.setTransform(tr)


def _theme(palette: QtGui.QPalette) -> tuple[QtGui.QColor, QtGui.QColor]:
    """(background, foreground) for plots, following the widget palette."""
    bg = palette.color(QtGui.QPalette.ColorRole.Base)
    fg = palette.color(QtGui.QPalette.ColorRole.Text)
    return bg, fg


class _MarkerLabel(pg.InfLineLabel):
    """The label of a marker line, kept inside the plot.

    To the right of the line when it fits there, else to the left; a label
    wider than either side is shifted along until it lies inside the plot
    (over the line, on its own background).
    """

    def updatePosition(self):
        super().updatePosition()
        vb = self.getViewBox()
        if vb is None or not hasattr(vb, "sceneBoundingRect"):
            return
        area = vb.sceneBoundingRect()
        x = vb.mapViewToScene(QtCore.QPointF(self.line.value(), vb.viewRect().center().y())).x()
        w = max(self.textItem.boundingRect().width(), 1.0)
        gap = MARKER_LABEL_GAP
        if area.right() - x >= w + gap:
            left = x + gap
        elif x - area.left() >= w + gap:
            left = x - gap - w
        else:
            left = min(max(x - w / 2.0, area.left()), area.right() - w)
            left = max(left, area.left())
        ax = (x - left) / w
        if abs(ax - self.anchor.x()) > 1e-6:
            self.setAnchor((ax, self.anchor.y()))

    def scene_rect(self) -> QtCore.QRectF:
        """Where the label is drawn, in scene coordinates."""
        return self.mapRectToScene(self.boundingRect())


class LossPlot(QtWidgets.QWidget):
    """Training curves with held-out epoch points, event markers, smoothing and a choice of x axis."""

    #: The smoothing weight changed (0 = raw curves).
    smoothingChanged = QtCore.Signal(float)
    #: The x axis changed: "step" or "wall".
    xAxisChanged = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("lossPlot")

        self._buf = _GrowingBuffer(5)  # step, recon, kl, loss, wall time (NaN when unknown)
        self._sorted = True
        self._last_step = -np.inf
        self._wall_sorted = True
        self._last_wall = -np.inf
        self._wall_known = 0  # rows with a finite wall time
        self._dirty = False
        self._log_y = False
        self._epochs = _GrowingBuffer(4, 256)  # step, recon, kl, loss of each held-out evaluation
        #: Held-out points arrived since they were last drawn.
        self._epochs_dirty = False
        self._markers: list[tuple[float, str, pg.InfiniteLine, pg.InfiniteLine]] = []
        self._epoch_legend_added = False
        #: True while the view follows new points (ranges set here); False once the user pans or zooms.
        self._follow = True
        #: How fast the newest point moves along the x axis (units a second), and the (time, x)
        #: it is measured from.
        self._pace = 0.0
        self._pace_mark: tuple[float, float] | None = None
        # Smoothing: the weight, and the smoothed columns (recon, kl, loss) computed so far with it.
        self._smoothing = 0.0
        self._smooth = _GrowingBuffer(3)
        self._smooth_state = np.zeros(3)
        self._smooth_count = np.zeros(3, dtype=np.int64)
        # The x axis the user chose, and the one shown (steps while no wall times are known).
        self._x_wanted = "step"
        self._x_mode = "step"

        # Controls row.
        self._log_check = QtWidgets.QCheckBox("Log scale")
        self._log_check.setObjectName("logScaleCheck")
        self._log_check.setToolTip("Logarithmic y axes (values at or below zero are drawn at "
                                   f"{LOG_FLOOR:g})")
        self._log_check.toggled.connect(self.set_log_y)
        smooth_label = QtWidgets.QLabel("Smoothing")
        self._smooth_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self._smooth_slider.setObjectName("smoothingSlider")
        self._smooth_slider.setRange(0, round(MAX_SMOOTHING * SMOOTHING_STEPS))
        self._smooth_slider.setSingleStep(10)
        self._smooth_slider.setPageStep(100)
        self._smooth_slider.setFixedWidth(110)
        tip = ("Smoothing of the training curves: an exponential moving average, debiased as in "
               "TensorBoard, drawn over the raw curve.\n0 shows the raw values; 0.9 averages over "
               "about the last 10 points, 0.99 over about 100.")
        self._smooth_slider.setToolTip(tip)
        smooth_label.setToolTip(tip)
        self._smooth_value = QtWidgets.QLabel()
        self._smooth_value.setObjectName("smoothingValue")
        fm = self._smooth_value.fontMetrics()
        self._smooth_value.setMinimumWidth(max(fm.horizontalAdvance(t) for t in ("0.999", RAW_TEXT)) + 6)
        self._smooth_slider.valueChanged.connect(self._on_smoothing_slider)
        x_label = QtWidgets.QLabel("x:")
        self._x_combo = QtWidgets.QComboBox()
        self._x_combo.setObjectName("xAxisCombo")
        for key, text in X_AXES.items():
            self._x_combo.addItem(text, key)
        self._x_combo.currentIndexChanged.connect(self._on_x_combo)
        self._reset_btn = QtWidgets.QToolButton()
        self._reset_btn.setObjectName("lossResetViewButton")
        self._reset_btn.setText("Auto range")
        self._reset_btn.setToolTip("Fit both plots to the data and follow new points")
        self._reset_btn.clicked.connect(self.auto_range)
        bar = QtWidgets.QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 0)
        bar.setSpacing(6)
        bar.addWidget(self._log_check)
        bar.addSpacing(8)
        bar.addWidget(smooth_label)
        bar.addWidget(self._smooth_slider)
        bar.addWidget(self._smooth_value)
        bar.addSpacing(8)
        bar.addWidget(x_label)
        bar.addWidget(self._x_combo)
        bar.addWidget(self._reset_btn)
        bar.addStretch(1)

        # Two plots side by side sharing the x axis (the dock is wide and short).
        self._glw = pg.GraphicsLayoutWidget()
        self._glw.setObjectName("lossPlotCanvas")
        self._top = self._glw.addPlot(row=0, col=0, axisItems=self._axes())
        self._bottom = self._glw.addPlot(row=0, col=1, axisItems=self._axes())
        self._bottom.setXLink(self._top)
        self._glw.ci.layout.setColumnStretchFactor(0, 3)
        self._glw.ci.layout.setColumnStretchFactor(1, 2)
        self._grids: list[GridLines] = []
        for plot in (self._top, self._bottom):
            # Room above and to the right, so the tick labels at the ends of the axes are not cut.
            plot.layout.setContentsMargins(2, 6, 10, 2)
            grid = GridLines(plot.getAxis("bottom"), plot.getAxis("left"))
            grid.setZValue(-20)
            # The lines move only with the ranges: drawn from a pixmap while the curves change.
            grid.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
            plot.addItem(grid, ignoreBounds=True)
            self._grids.append(grid)
            # The view box's menu (view all, axis ranges, mouse mode, export), without pyqtgraph's
            # "Plot Options": its transforms, downsampling and log axes bypass the controls above.
            plot.setMenuEnabled(False, enableViewBoxMenu=True)
            plot.hideButtons()  # the toolbar's Auto range button does this job
            vb = plot.getViewBox()
            vb.setMouseMode(pg.ViewBox.PanMode)
            # Ranges are set by _follow_ranges while following: pyqtgraph's own auto range
            # refits (and relays out both axes) on every redraw.
            vb.disableAutoRange()
            vb.sigRangeChangedManually.connect(self._on_user_range)
            for side in ("left", "bottom"):
                # Axes (ticks and labels) are kept as a pixmap and redrawn only when
                # their range changes, not every time a curve moves.
                plot.getAxis(side).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # The titles double as legends (a legend inside the plot covers the curves); a
        # shorter one where the plot is too narrow for the full one.
        self._top_keys = (("recon", "reconstruction"), ("loss", "loss = recon + β·KL"))
        self._top_short_keys = (("recon", "recon"), ("loss", "loss"))
        self._bottom_keys = (("kl", "KL"),)
        # pyqtgraph's legends keep the list of what is drawn (hidden: the titles show it).
        self._top_legend = self._top.addLegend()
        self._bottom_legend = self._bottom.addLegend()
        for legend in (self._top_legend, self._bottom_legend):
            legend.setVisible(False)
        self._glw.setToolTip(
            "Lines: the training batches (recon = −E_q[log p(x|z)], loss = recon + β·KL, and KL).\n"
            "Dots: the held-out split after each epoch (its loss is −ELBO).\n"
            "Dashed lines: changes of β or the learning rate.  All in nats per example.")

        self._curves: dict[str, _Series] = {}
        self._smooth_curves: dict[str, _Series] = {}
        for name, plot in (("recon", self._top), ("loss", self._top), ("kl", self._bottom)):
            # A one-pixel pen: Qt strokes wider antialiased paths some fifty times slower.
            curve = _Series(pg.mkPen(CURVE_COLOURS[name], width=1), name=CURVE_NAMES[name])
            curve.setZValue(1)
            plot.addItem(curve)
            self._curves[name] = curve
            smooth = _Series(pg.mkPen(CURVE_COLOURS[name], width=1))
            smooth.setZValue(2)
            plot.addItem(smooth)
            self._smooth_curves[name] = smooth
        self._epoch_items: dict[str, _Series] = {}
        for name, plot in (("recon", self._top), ("loss", self._top), ("kl", self._bottom)):
            item = _Series(pg.mkPen(CURVE_COLOURS[name], width=1, style=QtCore.Qt.PenStyle.DashLine),
                           dot_size=EPOCH_DOT_SIZE, dot_colour=QtGui.QColor(CURVE_COLOURS[name]))
            item.setZValue(5)
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
        self._timer.timeout.connect(self._on_timer)
        self._top.getViewBox().sigXRangeChanged.connect(self._on_x_range_changed)
        self._title_timer = QtCore.QTimer(self)
        self._title_timer.setSingleShot(True)
        self._title_timer.setInterval(0)
        self._title_timer.timeout.connect(self._fit_titles)
        self._glw.installEventFilter(self)

        self._sync_smoothing_controls()
        self._sync_x_controls()
        self._apply_theme()

    @staticmethod
    def _axes() -> dict[str, PlainAxis]:
        return {"left": PlainAxis("left"), "bottom": PlainAxis("bottom")}

    # --- data -----------------------------------------------------------------------

    def append(self, steps, recon, kl, loss, wall_s=None) -> None:
        """Buffer a batch of new points (1-D arrays of equal length); drawn on the next tick.

        ``wall_s``: seconds since the run started for each point (same length), or
        None when the times are not known.
        """
        s = np.atleast_1d(np.asarray(steps, dtype=np.float64)).ravel()
        r = np.atleast_1d(np.asarray(recon, dtype=np.float64)).ravel()
        k = np.atleast_1d(np.asarray(kl, dtype=np.float64)).ravel()
        lo = np.atleast_1d(np.asarray(loss, dtype=np.float64)).ravel()
        if not (len(s) == len(r) == len(k) == len(lo)):
            raise ValueError("steps, recon, kl and loss must have the same length")
        if wall_s is None:
            w = np.full(len(s), np.nan)
        else:
            w = np.atleast_1d(np.asarray(wall_s, dtype=np.float64)).ravel()
            if len(w) != len(s):
                raise ValueError("wall_s must have one time per step")
        if len(s) == 0:
            return
        if self._sorted:
            if s[0] < self._last_step or (len(s) > 1 and np.any(np.diff(s) < 0)):
                self._sorted = False
        self._last_step = max(self._last_step, float(s[-1]))
        finite = np.isfinite(w)
        known = int(np.count_nonzero(finite))
        if known:
            wf = w[finite]
            if self._wall_sorted and (wf[0] < self._last_wall or (len(wf) > 1 and np.any(np.diff(wf) < 0))):
                self._wall_sorted = False
            self._last_wall = max(self._last_wall, float(wf.max()))
            first_times = self._wall_known == 0
            self._wall_known += known
            if first_times:
                self._sync_x_controls()
        self._buf.append((s, r, k, lo, w))
        self._schedule()

    @QtCore.Slot(float, float, float, float)
    def add_epoch(self, step: float, recon: float, kl: float, loss: float) -> None:
        """Add held-out values for one epoch (``loss`` is -ELBO, nats per example); drawn on the next tick.

        Short epochs end several times a second: their points join the curves'
        next redraw instead of drawing the plots once more each.
        """
        self._epochs.append([np.array([float(v)]) for v in (step, recon, kl, loss)])
        if not self._epoch_legend_added:
            self._top_legend.addItem(self._epoch_items["recon"], EPOCH_NAMES["recon"])
            self._top_legend.addItem(self._epoch_items["loss"], EPOCH_NAMES["loss"])
            self._bottom_legend.addItem(self._epoch_items["kl"], EPOCH_NAMES["kl"])
            self._epoch_legend_added = True
        self._epochs_dirty = True
        self._schedule()

    @QtCore.Slot(float, str)
    def add_marker(self, step: float, text: str) -> None:
        """A dashed vertical line on both plots with a label, e.g. ``"beta 1 -> 4"``."""
        bg, fg = _theme(self.palette())
        k = len(self._markers)
        lines = []
        x = float(self._x_of_steps(np.array([float(step)]))[0])
        for plot in (self._top, self._bottom):
            line = pg.InfiniteLine(pos=x, angle=90, movable=False, pen=self._marker_pen())
            opts = self._marker_label_opts(k, fg, bg)
            line.label = _MarkerLabel(line, text=text, **opts)
            # The label's box and text are drawn from pixmaps while the curves under them change.
            for part in (line.label, line.label.textItem):
                part.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
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
        self._wall_sorted = True
        self._last_wall = -np.inf
        self._wall_known = 0
        self._reset_smoothing()
        self._epochs.clear()
        self._epochs_dirty = False
        self._pace_mark = None
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
        self._sync_x_controls()
        self._dirty = True
        self._redraw()
        self.auto_range()

    def set_history(self, steps, recon, kl, loss,
                    epochs: Iterable[Sequence[float]] | None = None,
                    markers: Iterable[tuple[float, str]] | None = None,
                    wall_s=None) -> None:
        """Show a whole recorded run at once (replaces what is shown).

        ``wall_s``: seconds since the run started for each step, or None.
        """
        self.clear()
        if len(np.atleast_1d(steps)):
            self.append(steps, recon, kl, loss, wall_s=wall_s)
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
            # pyqtgraph turns its own auto range back on with a new log mode.
            plot.getViewBox().disableAutoRange()
        # The vertical ranges are in the other unit now: refit them even when the user had zoomed.
        if self._follow:
            self._follow_ranges(force_y=True)
        else:
            self._fit_y(force=True)

    def log_y(self) -> bool:
        return self._log_y

    @QtCore.Slot(float)
    def set_smoothing(self, weight: float) -> None:
        """Smooth the training curves with weight ``weight`` in [0, MAX_SMOOTHING] (0: raw curves)."""
        w = float(min(MAX_SMOOTHING, max(0.0, float(weight))))
        if not math.isfinite(w):
            w = 0.0
        if w == self._smoothing:
            self._sync_smoothing_controls()
            return
        self._smoothing = w
        self._reset_smoothing()
        self._sync_smoothing_controls()
        self._style_curves()
        self._schedule()
        self.smoothingChanged.emit(w)

    def smoothing(self) -> float:
        return self._smoothing

    @QtCore.Slot(str)
    def set_x_axis(self, mode: str) -> None:
        """The x axis: "step" (training steps) or "wall" (wall time since the run started).

        Wall time is shown only while the points carry times; until then the
        choice is kept and the axis shows steps.
        """
        if mode not in X_AXES:
            raise ValueError(f"unknown x axis {mode!r}; one of {', '.join(X_AXES)}")
        changed = mode != self._x_wanted
        self._x_wanted = mode
        self._sync_x_controls()
        if changed:
            self.xAxisChanged.emit(mode)

    def x_axis(self) -> str:
        """The x axis shown now: "step" or "wall"."""
        return self._x_mode

    def wall_time_available(self) -> bool:
        """Whether any point carries a wall time (the "Wall time" axis can be chosen)."""
        return self._wall_known > 0

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
        """(x, y) currently drawn for ``"recon"``, ``"loss"`` or ``"kl"`` (the raw curves).

        ``"recon_smoothed"``, ``"loss_smoothed"`` and ``"kl_smoothed"`` give the
        smoothed lines (empty while the smoothing is 0); ``"epoch_recon"``,
        ``"epoch_loss"`` and ``"epoch_kl"`` the held-out points (thinned where
        more than fit the plot's width). Values are in data units (before the
        log mapping of the axis); x is in the units of the x axis shown (steps,
        or seconds of wall time).
        """
        if name.startswith("epoch_"):
            item = self._epoch_items.get(name[len("epoch_"):])
        elif name.endswith("_smoothed"):
            item = self._smooth_curves.get(name[: -len("_smoothed")])
        else:
            item = self._curves.get(name)
        if item is None:
            raise KeyError(name)
        return item.getOriginalDataset()

    def markers(self) -> list[tuple[float, str]]:
        return [(s, t) for s, t, _, _ in self._markers]

    def marker_lines(self) -> list[tuple[pg.InfiniteLine, pg.InfiniteLine]]:
        """The (top, bottom) lines of each marker, in order."""
        return [(a, b) for _, _, a, b in self._markers]

    def epochs(self) -> list[tuple[float, float, float, float]]:
        """(step, recon, kl, loss) of each held-out evaluation, in order."""
        cols = [self._epochs.column(i).tolist() for i in range(4)]
        return list(zip(*cols))

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

    @QtCore.Slot()
    def _on_timer(self) -> None:
        # Hidden (a closed or covered dock): the points wait; showEvent draws them.
        if self.isVisible():
            self._redraw()

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        if self._dirty:
            self._schedule()

    @QtCore.Slot(object, object)
    def _on_x_range_changed(self, *_args) -> None:
        # Zoomed in: redraw at the finer detail the visible range allows.
        if not self._follow and self._buf.n > MAX_DRAW_POINTS:
            self._schedule()

    @QtCore.Slot(object)
    def _on_user_range(self, *_args) -> None:
        self._follow = False

    @QtCore.Slot(int)
    def _on_smoothing_slider(self, value: int) -> None:
        self.set_smoothing(value / SMOOTHING_STEPS)

    @QtCore.Slot(int)
    def _on_x_combo(self, index: int) -> None:
        mode = self._x_combo.itemData(index)
        if mode in X_AXES:
            self.set_x_axis(mode)

    def _sync_smoothing_controls(self) -> None:
        self._smooth_slider.blockSignals(True)
        self._smooth_slider.setValue(round(self._smoothing * SMOOTHING_STEPS))
        self._smooth_slider.blockSignals(False)
        self._smooth_value.setText(f"{self._smoothing:.3g}" if self._smoothing else RAW_TEXT)

    def _sync_x_controls(self) -> None:
        """Enable the wall-time entry when times are known; show the axis that can be shown."""
        available = self.wall_time_available()
        model = self._x_combo.model()
        item = model.item(self._x_combo.findData("wall")) if isinstance(model, QtGui.QStandardItemModel) else None
        if item is not None:
            item.setEnabled(available)
            item.setToolTip("" if available else NO_WALL_TIME_TIP)
        self._x_combo.setToolTip("The x axis: training steps, or wall time since the run started"
                                 if available else NO_WALL_TIME_TIP)
        mode = self._x_wanted if available else "step"
        self._x_combo.blockSignals(True)
        self._x_combo.setCurrentIndex(self._x_combo.findData(mode))
        self._x_combo.blockSignals(False)
        if mode == self._x_mode:
            return
        self._x_mode = mode
        for plot in (self._top, self._bottom):
            plot.getAxis("bottom").set_time_format(mode == "wall")
        self._set_x_labels()
        self._move_markers()
        self._dirty = True
        self._redraw()
        self._draw_epochs()
        self._follow = True  # the old range is in the other unit
        self._pace_mark = None
        self._follow_ranges(force_y=True)

    def _set_x_labels(self) -> None:
        _, fg = _theme(self.palette())
        for plot in (self._top, self._bottom):
            plot.setLabel("bottom", X_LABELS[self._x_mode], color=fg.name())

    def _reset_smoothing(self) -> None:
        self._smooth.clear()
        self._smooth_state[:] = 0.0
        self._smooth_count[:] = 0

    def _update_smoothing(self) -> None:
        """Extend the smoothed columns to the points buffered so far."""
        w = self._smoothing
        if w <= 0.0:
            return
        n0, n = self._smooth.n, self._buf.n
        if n <= n0:
            return
        cols = []
        for j, col in enumerate((1, 2, 3)):
            y, state, count = debiased_ema(self._buf.column(col)[n0:n], w,
                                           float(self._smooth_state[j]), int(self._smooth_count[j]))
            self._smooth_state[j], self._smooth_count[j] = state, count
            cols.append(y)
        self._smooth.append(cols)

    def _x_rows(self) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """(x of the drawn rows, the rows (None: all), whether x is sorted) for the current axis."""
        if self._x_mode == "wall":
            wall = self._buf.column(4)
            if self._wall_known == self._buf.n:
                return wall, None, self._wall_sorted
            rows = np.flatnonzero(np.isfinite(wall))
            return wall[rows], rows, self._wall_sorted
        return self._buf.column(0), None, self._sorted

    def _x_of_steps(self, steps: np.ndarray) -> np.ndarray:
        """Positions on the current x axis of training steps (wall time by interpolation)."""
        steps = np.asarray(steps, dtype=np.float64)
        if self._x_mode != "wall" or self._wall_known == 0:
            return steps
        s, w = self._buf.column(0), self._buf.column(4)
        known = np.isfinite(w)
        s, w = s[known], w[known]
        if not self._sorted:
            order = np.argsort(s, kind="stable")
            s, w = s[order], w[order]
        return np.interp(steps, s, w)

    def _move_markers(self) -> None:
        if not self._markers:
            return
        xs = self._x_of_steps(np.array([m[0] for m in self._markers]))
        for x, (_, _, a, b) in zip(xs, self._markers):
            for line in (a, b):
                if line.value() != float(x):
                    line.setValue(float(x))

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
        """While following: x from the first point to a round number past the last, y sticky around the data.

        The x range is kept while it holds the points and is at most about
        twice their span; a new one reaches past where fast points will be
        ``LOOKAHEAD_S`` later.
        """
        if not self._follow:
            return
        vb_top = self._top.getViewBox()
        x, _, x_sorted = self._x_rows()
        if len(x):
            x0, x1 = (float(x[0]), float(x[-1])) if x_sorted else (float(x.min()), float(x.max()))
            if self._epochs.n:
                ex = self._x_of_steps(self._epochs.column(0))
                x1 = max(x1, float(ex.max()))
            self._measure_pace(x1)
            span = x1 - x0
            lo, hi = vb_top.viewRange()[0]
            if span <= 0:
                if (lo, hi) != (x0, x0 + 1.0):
                    vb_top.setXRange(x0, x0 + 1.0, padding=0)
            elif lo != x0 or not x0 + 1.02 * span <= hi <= x0 + nice_ceil(2.04 * span):
                ahead = min(span + self._pace * LOOKAHEAD_S, 2.0 * span)
                vb_top.setXRange(x0, x0 + nice_ceil(1.02 * max(span, ahead)), padding=0)
        self._fit_y(force_y)

    def _measure_pace(self, x1: float) -> None:
        """Update how fast the newest point ``x1`` moves (x units a second of wall-clock time)."""
        now = time.monotonic()
        mark = self._pace_mark
        if mark is None or x1 < mark[1]:
            self._pace_mark = (now, x1)
            self._pace = 0.0
        elif now - mark[0] >= PACE_WINDOW_S:
            self._pace = (x1 - mark[1]) / (now - mark[0])
            self._pace_mark = (now, x1)

    def _fit_y(self, force: bool) -> None:
        """Vertical ranges around the drawn data: kept while they hold it well (sticky) unless ``force``."""
        for plot, keys in ((self._top, ("recon", "loss")), (self._bottom, ("kl",))):
            ys = [self._settled(*self._curves[k].getOriginalDataset()) for k in keys]
            ys += [self._epoch_arrays(k)[1] for k in keys]
            y = np.concatenate(ys) if ys else np.zeros(0)
            if self._log_y:
                y = np.log10(y[y > 0])
            y = y[np.isfinite(y)]
            if not len(y):
                continue
            vb = plot.getViewBox()
            new = sticky_range(float(y.min()), float(y.max()), None if force else tuple(vb.viewRange()[1]),
                               lead=Y_LEAD)
            if new is not None:
                vb.setYRange(*new, padding=0)
        for plot in (self._top, self._bottom):
            # A new range moves the items now: left to the next paint (as pyqtgraph does), the
            # move would dirty the plot once more and paint it twice.
            plot.getViewBox().updateMatrix()

    def _display_y(self, y: np.ndarray) -> np.ndarray:
        if self._log_y:
            return np.maximum(y, LOG_FLOOR)  # NaN stays NaN (a gap in the curve)
        return y

    @QtCore.Slot()
    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._update_smoothing()
        x, rows, x_sorted = self._x_rows()
        lo = hi = None
        vb = self._top.getViewBox()
        if len(x) and not self._follow:
            lo, hi = vb.viewRange()[0]
        points = self._draw_points()
        smoothed = self._smoothing > 0.0
        empty = np.zeros(0)
        for j, (name, col) in enumerate((("recon", 1), ("kl", 2), ("loss", 3))):
            y = self._buf.column(col)
            ys = self._smooth.column(j) if smoothed else None
            if rows is not None:
                y = y[rows]
                ys = ys[rows] if ys is not None else None
            self._curves[name].setData(*decimate_minmax(x, self._display_y(y), points, lo, hi, x_sorted))
            if ys is not None:
                self._smooth_curves[name].setData(*decimate_minmax(x, self._display_y(ys), points, lo, hi, x_sorted))
            else:
                self._smooth_curves[name].setData(empty, empty)
        if self._x_mode == "wall":
            self._move_markers()  # times of steps past the last known time move as times arrive
            self._draw_epochs()
        elif self._epochs_dirty:
            self._draw_epochs()
        self._follow_ranges()

    def _epoch_arrays(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        col = {"recon": 1, "kl": 2, "loss": 3}[key]
        if not self._epochs.n:
            return np.zeros(0), np.zeros(0)
        return self._x_of_steps(self._epochs.column(0)), self._display_y(self._epochs.column(col))

    def _draw_epochs(self) -> None:
        """Held-out points and their dashed line; thinned where more than fit the plot's width."""
        self._epochs_dirty = False
        for key, item in self._epoch_items.items():
            x, y = self._epoch_arrays(key)
            plot = self._bottom if key == "kl" else self._top
            width = plot.getViewBox().width()
            budget = max(2, int(width / EPOCH_DOT_SPACING)) if np.isfinite(width) and width > 0 else len(x)
            if len(x) > budget:
                x, y = decimate_minmax(x, y, budget)
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
    def _title_html(keys, fg: QtGui.QColor, short: bool = False) -> str:
        parts = [f"<span style='color:{CURVE_COLOURS[k]}'>━ {text}</span>" for k, text in keys]
        parts.append(f"<span style='color:{fg.name()}'>● held-out</span>")
        gap = "&nbsp;&nbsp;" if short else "&nbsp;&nbsp;&nbsp;"
        return gap.join(parts) + gap + ("(nats)" if short else "(nats per example)")

    @QtCore.Slot()
    def _fit_titles(self) -> None:
        """Full titles where they fit above their plot, short ones where not; never wider than the plot.

        pyqtgraph makes a title's width the plot's minimum width, which pushed
        the KL plot out of a narrow dock.
        """
        _, fg = _theme(self.palette())
        for plot, keys, short_keys in ((self._top, self._top_keys, self._top_short_keys),
                                       (self._bottom, self._bottom_keys, self._bottom_keys)):
            width = plot.geometry().width()
            for short in (False, True):
                html = self._title_html(short_keys if short else keys, fg, short)
                if plot.titleLabel.text != html:
                    plot.setTitle(html, color=fg.name(), size="9pt")
                plot.titleLabel.setMinimumWidth(0)
                if plot.titleLabel.itemRect().width() <= width:
                    break

    def eventFilter(self, obj: QtCore.QObject, ev: QtCore.QEvent) -> bool:
        if obj is self._glw and ev.type() == QtCore.QEvent.Type.Resize:
            self._title_timer.start()  # after the layout has given the plots their widths
        return False

    def _style_curves(self) -> None:
        """Raw curves in their colour, or in a faint shade of it under the smoothed ones."""
        bg, _ = _theme(self.palette())
        for name, curve in self._curves.items():
            colour = QtGui.QColor(CURVE_COLOURS[name])
            if self._smoothing > 0.0:
                colour = blend(bg, colour, RAW_SHADE)
            curve.setPen(pg.mkPen(colour, width=1))

    def _apply_theme(self) -> None:
        bg, fg = _theme(self.palette())
        self._glw.setBackground(bg)
        axis_pen = pg.mkPen(fg)
        for plot, keys in ((self._top, self._top_keys), (self._bottom, self._bottom_keys)):
            plot.setTitle(self._title_html(keys, fg), color=fg.name(), size="9pt")
            plot.titleLabel.setMinimumWidth(0)
            for side in ("left", "bottom"):
                ax = plot.getAxis(side)
                ax.setPen(axis_pen)
                ax.setTextPen(axis_pen)
        for grid in self._grids:
            grid.set_colours(bg, fg)
        self._set_x_labels()
        self._style_curves()
        self._fit_titles()
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
        for item in self._epoch_items.values():
            item.set_dot_outline(fg)
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
