"""The latent map: a 2-D scatter of encoded examples that the user clicks and drags on.

One item draws every point (:class:`_PointsItem`).  Up to ``EXACT_MAX_POINTS``
points in view are drawn one by one, a pre-rendered dot sprite per point
stamped with ``QPainter.drawPixmapFragments``; past that, as a raster of counts
per pixel and class (numpy ``bincount``, as datashader does), each pixel the
count-weighted mix of its classes' colours, shaded by a log scaling of its
count, spread over the point size (:class:`Rasterizer`).  Either way the points
are rendered into an image of the view plus a margin, which is reused while
nothing changes and shown moved into place while the user pans (at most half
of the time goes to rendering), so a map of a million points pans at 30
frames a second and more on two cores (``bench/bench_map.py``).  One stand-in item per class
(:class:`_ClassItem`) carries its colour, its visibility and its legend entry.
Hit tests need no index: a box test on float32 copies of the coordinates, about
a millisecond at a million points.

Both axes share one scale (the aspect ratio is locked), so distances on screen
are distances in the plane of the map, and the tick labels are plain numbers.

Mouse:

* a left press and a move past the drag distance (or a press held for the
  double-click interval) starts a drag: ``pointPicked(x, y)`` (data
  coordinates) for the press, then for each move, ``dragFinished()`` on the
  release;
* a left click lands once the double-click interval has passed without a
  second click: ``pointPicked(x, y)``, ``exampleClicked(index)`` when it is on
  a point, then ``dragFinished()``;
* a left double click fits the view to the points and emits none of these;
* middle drag pans, right drag zooms, the wheel zooms; a right click opens the
  map's menu (fit the view, the legend's visibility and corner, point size and
  opacity; ``viewOptionsChanged(dict)`` reports changes of the latter);
* hovering (no button) emits ``hovered(index)`` or ``hovered(-1)`` and shows a
  small preview of the example's image when images were given.
"""

from __future__ import annotations

import colorsys
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6 import QtCore, QtGui, QtWidgets

from .decode_canvas import array_to_qimage

__all__ = ["LatentView", "PlainAxis", "GridLines", "class_colour", "plain_number", "CLASS_COLOURS",
           "UNLABELLED_COLOUR", "LEGEND_CORNERS"]

#: Colours of the selected examples and of marked ones (neighbours) on the map: a core and
#: an edge round it, so that they stand out of every class colour on either theme (the
#: selection's core is a light veil: its points keep their class colours inside a dark edge).
SELECTION_COLOUR = QtGui.QColor(255, 255, 255, 110)
SELECTION_EDGE = QtGui.QColor(20, 20, 20)
MARKED_COLOUR = QtGui.QColor(220, 20, 120)
MARKED_EDGE = QtGui.QColor(255, 255, 255)

#: Qualitative class colours, readable on light and dark backgrounds (tab10 with
#: its grey swapped for gold, so grey stays free for unlabelled points; then the
#: light tab20 companions).
CLASS_COLOURS = [
    "#3b8bd0", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#f2c40f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d", "#6b6ecf",
]
UNLABELLED_COLOUR = "#8a8a8a"
FAR_COLOUR = "#ff4d1a"
POINT_ALPHA = 225
HOVER_INTERVAL_MS = 35
PREVIEW_PX = 96
#: New points whose bounds moved by less than this fraction of the view keep the view.
FOLLOW_TOLERANCE = 0.01
#: With more classes than this a legend is unreadable and is not shown.
MAX_LEGEND_ENTRIES = 30
#: Where the legend can sit: corner name -> pyqtgraph legend offset (its signs pick the corner).
LEGEND_CORNERS = {
    "top-right": (-10, 10),
    "top-left": (10, 10),
    "bottom-left": (10, -10),
    "bottom-right": (-10, -10),
}
CORNER_NAMES = {"top-right": "Top right", "top-left": "Top left",
                "bottom-left": "Bottom left", "bottom-right": "Bottom right"}
POINT_SIZES = (1, 2, 3, 4, 6, 8, 12)
POINT_OPACITIES = (0.1, 0.25, 0.5, 0.75, 1.0)
MIN_POINT_SIZE, MAX_POINT_SIZE = 1.0, 30.0
MIN_OPACITY = 0.05
#: Gap in pixels between the crosshair and its "far from data" text.
FAR_TEXT_GAP = 8.0


def plain_number(value: float, spacing: float) -> str:
    """``value`` written with as many decimals as a tick ``spacing`` needs: "0.25", "-3", "1500".

    No exponent and no "-0": tick labels that read as the numbers they are.
    Values beyond about 1e15 (or spacings below 1e-12) fall back to "%g".
    """
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if not (spacing > 0 and math.isfinite(spacing)) or abs(v) >= 1e15 or spacing < 1e-12:
        return f"{v:g}"
    places = max(0, math.ceil(-math.log10(spacing) - 1e-9))
    # A spacing such as 0.25 needs one more decimal than its order of magnitude says.
    while places < 12 and abs(spacing * 10 ** places - round(spacing * 10 ** places)) > 1e-6:
        places += 1
    text = f"{v:.{places}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text


def plain_log_value(value: float) -> str:
    """A tick of a logarithmic axis as the number it stands for: "200", "0.05" (not "2·10²")."""
    v = float(value)
    if not math.isfinite(v) or v == 0.0:
        return f"{v:g}"
    if 1e-5 <= abs(v) < 1e7:
        return np.format_float_positional(v, precision=4, unique=True, fractional=False, trim="-")
    return f"{v:.3g}"


#: Tick spacings (seconds) of a time axis: round numbers of seconds, minutes and hours.
TIME_STEPS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
              1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0)


def format_duration(seconds: float, spacing: float = 1.0) -> str:
    """Seconds as "m:ss" or "h:mm:ss" (with tenths when ``spacing`` is under a second)."""
    s = float(seconds)
    if not math.isfinite(s):
        return str(s)
    sign = "-" if s < 0 else ""
    s = abs(s)
    decimals = 1 if spacing < 1.0 else 0
    s = round(s, decimals)
    h, rem = divmod(s, 3600.0)
    m, sec = divmod(rem, 60.0)
    sec_text = f"{sec:04.1f}" if decimals else f"{int(round(sec)):02d}"
    if h:
        return f"{sign}{int(h)}:{int(m):02d}:{sec_text}"
    return f"{sign}{int(m)}:{sec_text}"


class PlainAxis(pg.AxisItem):
    """An axis whose tick labels read as plain numbers.

    * no SI multiplier ("(x0.001)") is ever added to the axis label;
    * linear ticks carry as many decimals as their spacing needs
      (:func:`plain_number`), logarithmic ones the number they stand for
      (:func:`plain_log_value`);
    * with :meth:`set_time_format` the values are seconds, ticked at round
      times and written "1:30" or "1:02:03".
    """

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)
        self._time = False

    def set_time_format(self, on: bool) -> None:
        """Values are seconds: ticks at round times, labels "m:ss" / "h:mm:ss"."""
        on = bool(on)
        if on != self._time:
            self._time = on
            self.picture = None
            self.update()

    def time_format(self) -> bool:
        return self._time

    def tickSpacing(self, minVal, maxVal, size):
        if not self._time or self.logMode:
            return super().tickSpacing(minVal, maxVal, size)
        span = float(maxVal) - float(minVal)
        if not (span > 0 and size > 0):
            return super().tickSpacing(minVal, maxVal, size)
        target = span / max(1.0, size / 90.0)  # a labelled tick every ~90 pixels
        major = next((s for s in TIME_STEPS if s >= target), None)
        if major is None:  # days
            days = target / 86400.0
            major = 86400.0 * next(m * 10 ** k for k in range(0, 12) for m in (1, 2, 5) if m * 10 ** k >= days)
            return [(major, 0), (major / 5, 0)]
        i = TIME_STEPS.index(major)
        minor = next((s for s in reversed(TIME_STEPS[:i]) if (major / s) % 1 < 1e-9 and major / s >= 2), major / 2)
        return [(major, 0), (minor, 0)]

    def tickStrings(self, values, scale, spacing):
        if self.logMode:
            return self.logTickStrings(values, scale, spacing)
        if self._time:
            return [format_duration(v * scale, spacing * scale) for v in values]
        return [plain_number(v * scale, spacing * scale) for v in values]

    def logTickStrings(self, values, scale, spacing):
        return [plain_log_value(10.0 ** float(v) * scale) for v in values]


def blend(bg: QtGui.QColor, fg: QtGui.QColor, amount: float) -> QtGui.QColor:
    """The opaque colour of ``fg`` drawn at opacity ``amount`` over ``bg``."""
    a = float(amount)
    return QtGui.QColor.fromRgbF(bg.redF() + (fg.redF() - bg.redF()) * a,
                                 bg.greenF() + (fg.greenF() - bg.greenF()) * a,
                                 bg.blueF() + (fg.blueF() - bg.blueF()) * a)


class GridLines(pg.GraphicsObject):
    """Grid lines under the data of a ViewBox, at the major and minor ticks of its axes.

    pyqtgraph's own grid is drawn by the axes, above the data and translucent;
    Qt's raster engine draws a translucent vertical line one pixel row at a
    time, which made that grid cost 15 ms a frame on a 900 x 700 map, and the
    grid made each axis cache a pixmap the size of the plot.  These lines are
    opaque (the grid colour blended onto the background beforehand), one pixel
    wide, and lie under everything in the view (add it with a low z value).
    """

    def __init__(self, x_axis: pg.AxisItem | None, y_axis: pg.AxisItem | None):
        super().__init__()
        self._axes = (x_axis, y_axis)
        self._pens = (QtGui.QPen(QtGui.QColor(0, 0, 0, 0)), QtGui.QPen(QtGui.QColor(0, 0, 0, 0)))

    def set_colours(self, bg: QtGui.QColor, fg: QtGui.QColor, major: float = 0.16, minor: float = 0.07) -> None:
        """Major lines ``fg`` at opacity ``major`` over ``bg``, minor ones at ``minor``."""
        pens = []
        for amount in (major, minor):
            pen = QtGui.QPen(blend(bg, fg, amount))
            pen.setCosmetic(True)
            pen.setWidth(1)
            pens.append(pen)
        self._pens = (pens[0], pens[1])
        self.update()

    def line_colours(self) -> tuple[QtGui.QColor, QtGui.QColor]:
        return self._pens[0].color(), self._pens[1].color()

    def boundingRect(self) -> QtCore.QRectF:
        vb = self.getViewBox()
        if vb is None or not hasattr(vb, "viewRect"):
            return QtCore.QRectF()
        return vb.viewRect()

    def viewRangeChanged(self) -> None:
        self.prepareGeometryChange()
        self.update()

    def dataBounds(self, ax, frac=1.0, orthoRange=None):
        return (None, None)

    def paint(self, p: QtGui.QPainter, option, widget=None) -> None:
        vb = self.getViewBox()
        if vb is None:
            return
        rect = vb.viewRect()
        tr = p.transform()
        dev = tr.mapRect(rect)
        if dev.width() <= 0 or dev.height() <= 0:
            return
        p.save()
        p.resetTransform()
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
        for k, axis in enumerate(self._axes):
            if axis is None:
                continue
            lo, hi = (rect.left(), rect.right()) if k == 0 else (rect.top(), rect.bottom())
            size = dev.width() if k == 0 else dev.height()
            levels = axis.tickValues(min(lo, hi), max(lo, hi), size)
            for level, (_spacing, values) in enumerate(levels[:2]):
                p.setPen(self._pens[min(level, 1)])
                lines = []
                for v in values:
                    if k == 0:
                        x = math.floor(tr.map(QtCore.QPointF(v, rect.top())).x()) + 0.5
                        lines.append(QtCore.QLineF(x, dev.top(), x, dev.bottom()))
                    else:
                        y = math.floor(tr.map(QtCore.QPointF(rect.left(), v)).y()) + 0.5
                        lines.append(QtCore.QLineF(dev.left(), y, dev.right(), y))
                if lines:
                    p.drawLines(lines)
        p.restore()


class _MapViewBox(pg.ViewBox):
    """The map's ViewBox: a right click opens the map's own menu instead of pyqtgraph's."""

    def __init__(self, **kwargs):
        super().__init__(enableMenu=False, **kwargs)
        self.context_menu_requested: Callable[[QtCore.QPoint], None] | None = None

    def mouseClickEvent(self, ev):
        if ev.button() == QtCore.Qt.MouseButton.RightButton and self.context_menu_requested is not None:
            ev.accept()
            self.context_menu_requested(ev.screenPos().toPoint())
            return
        super().mouseClickEvent(ev)


def theme_legend(legend: pg.LegendItem, bg: QtGui.QColor | str, fg: QtGui.QColor | str) -> None:
    """Give a legend the theme's colours: a translucent background, a faint frame, labels in ``fg``."""
    legend_bg = QtGui.QColor(bg)
    legend_bg.setAlpha(200)
    legend_pen = QtGui.QColor(fg)
    legend_pen.setAlpha(60)
    legend.setBrush(legend_bg)
    legend.setPen(legend_pen)
    legend.setLabelTextColor(fg)
    for _, label in legend.items:
        label.setText(label.text, color=fg)


def class_colour(label: int) -> QtGui.QColor:
    """Colour for class ``label``; negative labels are unlabelled."""
    if label < 0:
        c = QtGui.QColor(UNLABELLED_COLOUR)
        c.setAlpha(170)
        return c
    if label < len(CLASS_COLOURS):
        c = QtGui.QColor(CLASS_COLOURS[label])
    else:
        # Beyond the table: hues spaced by the golden ratio stay distinct.
        h = (label * 0.6180339887) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.9)
        c = QtGui.QColor.fromRgbF(r, g, b)
    c.setAlpha(POINT_ALPHA)
    return c


#: Up to this many points in view are drawn one by one (a sprite each); past it the map draws
#: them as a raster of counts per pixel and class.  About what this machine draws one by one in
#: 20 ms (drawPixmapFragments costs ~0.15 us a point, the numpy around it as much again).
EXACT_MAX_POINTS = 80_000
#: Logical pixels rendered beyond each edge of the view, so the last rendering can be shown
#: moved into place during a pan without empty strips at the edges.
RENDER_MARGIN = 48
#: Alpha (before each class colour's own alpha and the point opacity) of a raster pixel that
#: one point covers; pixels as dense as the RASTER_SATURATION quantile of the pixels with
#: points, or denser, get 1, with log scaling in between.
RASTER_MIN_ALPHA = 0.6
RASTER_SATURATION = 0.9
#: With more classes than this the raster mixes colours by weighted counts per channel instead
#: of counting each class in each pixel.
RASTER_MAX_CLASS_COUNTS = 32


def _max_run(a: np.ndarray, w: int, axis: int) -> np.ndarray:
    """m[i] = max(a[i], ..., a[i + w - 1]) along ``axis`` (shorter at the end), in log2(w) steps."""
    out = a.copy()
    covered = 1
    n = a.shape[axis]
    while covered < w:
        step = min(covered, w - covered)
        if step >= n:
            break
        dst = [slice(None)] * a.ndim
        src = [slice(None)] * a.ndim
        dst[axis] = slice(0, n - step)
        src[axis] = slice(step, n)
        np.maximum(out[tuple(dst)], out[tuple(src)], out=out[tuple(dst)])
        covered += step
    return out


def _centred_box_max(a: np.ndarray, wx: int, wy: int) -> np.ndarray:
    """The maximum of ``a`` over a wx x wy box centred on each pixel (zero beyond the edges)."""
    m = _max_run(_max_run(a, wx, 1), wy, 0)
    hx, hy = (wx - 1) // 2, (wy - 1) // 2
    if hx == 0 and hy == 0:
        return m
    out = np.zeros_like(m)
    h, w = m.shape
    out[hy:, hx:] = m[: h - hy, : w - hx]
    return out


def dilate_disc(img: np.ndarray, diameter: int) -> np.ndarray:
    """Spread every pixel of a packed ARGB32 image over a disc of ``diameter`` pixels.

    Each pixel takes the largest value around it: with alpha in the top byte,
    the most opaque (densest) neighbour wins.  The disc is drawn as the union
    of two boxes (an octagon), each a separable running maximum.
    """
    d = int(diameter)
    if d <= 1:
        return img
    if d == 2:
        return _centred_box_max(img, 2, 2)
    cut = max(1, round(0.146 * d))
    wide = _centred_box_max(img, d, d - 2 * cut)
    np.maximum(wide, _centred_box_max(img, d - 2 * cut, d), out=wide)
    return wide


class Rasterizer:
    """Points drawn as a raster of counts per pixel and class, as datashader does.

    Keeps its work buffers from one rendering to the next: on this machine a
    fresh buffer of a few megabytes costs more in page faults than the counting.
    """

    def __init__(self) -> None:
        self._lut = np.zeros(0, dtype=np.int32)

    def render(self, sx: np.ndarray, sy: np.ndarray, cls: np.ndarray | None, colours: np.ndarray,
               x0: float, y0: float, px_x: float, px_y: float, width: int, height: int,
               diameter: int) -> np.ndarray:
        """A (height, width) uint32 array of premultiplied ARGB32 pixels.

        ``sx``, ``sy``: float32 coordinates of the points to draw (all inside the
        image); ``cls``: each point's class (rows of ``colours``), or None when
        all are of class 0; ``colours``: (C, 4) RGBA floats in [0, 1].  A point
        lands in pixel floor((x - x0) * px_x), floor((y - y0) * px_y).  Each
        pixel's colour is the mix of its points' class colours weighted by their
        counts; its alpha the mean class alpha times a log scaling of the count
        (RASTER_MIN_ALPHA for one point, 1 from the RASTER_SATURATION quantile of
        the counts up); then every pixel spreads over a disc of ``diameter``
        pixels (:func:`dilate_disc`).
        """
        size = width * height
        # int32 indices: half the memory traffic of intp, and a layer has far fewer than 2**31 pixels.
        ix = np.subtract(sx, np.float32(x0), dtype=np.float32)
        ix *= np.float32(px_x)
        pix = ix.astype(np.int32)
        iy = np.subtract(sy, np.float32(y0), dtype=np.float32)
        iy *= np.float32(px_y)
        row = iy.astype(np.int32)
        # The points lie inside the image; rounding can put one on the far edge.
        np.minimum(pix, width - 1, out=pix)
        np.minimum(row, height - 1, out=row)
        row *= width
        pix += row
        total = np.bincount(pix, minlength=size)
        nz = np.flatnonzero(total)
        n = total[nz].astype(np.float32)
        ncls = len(colours)
        # mix: (4, pixels) mean RGBA of each pixel's points, channel by channel.
        if cls is None or ncls == 1:
            mix = np.repeat(colours[0].astype(np.float32)[:, None], len(nz), axis=1)
        elif ncls <= RASTER_MAX_CLASS_COUNTS:
            # Counts per (class, pixel) over the pixels that have points, class-major so that
            # mixing is a few passes over contiguous rows (a (pixels, classes) product is ten
            # times slower here, with BLAS or without).
            if len(self._lut) < size:
                self._lut = np.zeros(size, dtype=np.int32)
            lut = self._lut
            lut[nz] = np.arange(len(nz), dtype=np.int32)  # only these entries are read below
            key = lut[pix]
            if ncls * len(nz) >= 2 ** 31:
                key = key.astype(np.intp)
            key += cls * key.dtype.type(len(nz))
            counts = np.bincount(key, minlength=ncls * len(nz)).reshape(ncls, len(nz)).astype(np.float32)
            mix = np.empty((4, len(nz)), dtype=np.float32)
            for ch in range(4):
                acc = counts[0] * colours[0, ch]
                for c in range(1, ncls):
                    acc += counts[c] * colours[c, ch]
                np.divide(acc, n, out=mix[ch])
        else:
            mix = np.empty((4, len(nz)), dtype=np.float32)
            for ch in range(4):
                mix[ch] = np.bincount(pix, weights=colours[cls, ch], minlength=size)[nz] / n
        # Log scaling of the counts, saturating at the RASTER_SATURATION quantile (a few
        # very dense pixels must not leave everything else pale).
        log_n = np.log1p(n)
        q = min(len(n) - 1, int(RASTER_SATURATION * len(n)))
        top = float(np.partition(log_n, q)[q]) if len(n) else 0.0
        if top > math.log1p(1.0):
            shade = np.minimum(RASTER_MIN_ALPHA + (1.0 - RASTER_MIN_ALPHA) / top * log_n, 1.0)
        else:
            shade = np.float32(1.0)
        alpha = np.clip(mix[3] * shade, 0.0, 1.0)
        k = alpha * 255.0
        packed = (k + 0.5).astype(np.uint32) << 24
        for ch, shift in ((0, 16), (1, 8), (2, 0)):
            packed |= (np.clip(mix[ch], 0.0, 1.0) * k + 0.5).astype(np.uint32) << shift
        img = np.zeros(size, dtype=np.uint32)
        img[nz] = packed
        return dilate_disc(img.reshape(height, width), diameter)


class _ClassItem(pg.GraphicsObject):
    """One class of the map: its colour, whether it is shown, and its entry in the legend.

    The points themselves are drawn by :class:`_PointsItem`; this item draws
    nothing and stands in the legend (whose sample reads ``opts`` and whose
    click toggles the visibility, which is passed on to the map).
    """

    def __init__(self, colour: QtGui.QColor, on_visibility: Callable[[], None]):
        super().__init__()
        self._colour = QtGui.QColor(colour)
        self._on_visibility = on_visibility
        # Read by pyqtgraph's LegendItem to draw this item's sample.
        self.opts = {"pen": None, "brush": pg.mkBrush(self._colour), "symbol": "o",
                     "size": 9, "antialias": True}

    def set_colour(self, colour: QtGui.QColor) -> None:
        self._colour = QtGui.QColor(colour)
        self.opts["brush"] = pg.mkBrush(self._colour)

    def colour(self) -> QtGui.QColor:
        return QtGui.QColor(self._colour)

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF()

    def paint(self, p, option, widget=None) -> None:
        return

    def itemChange(self, change, value):
        result = super().itemChange(change, value)
        if change == QtWidgets.QGraphicsItem.GraphicsItemChange.ItemVisibleHasChanged:
            self._on_visibility()
        return result


class _PointsItem(pg.GraphicsObject):
    """Every point of the map, drawn one by one or as a raster, from a cached layer.

    Data: float32 coordinates sorted by class (contiguous runs, ``starts``),
    ``order`` mapping them back to the caller's indices, and the float64
    originals for exact positions.  A paint renders the points into an image
    covering the view plus RENDER_MARGIN (one sprite per point when at most
    ``exact_max`` are in it, else :func:`rasterize`) and draws that image; the
    image is reused while the view, the data and the style stay the same (a
    crosshair moving over the map repaints for the cost of one image).  While
    the view moves, a rendering made less than its own cost ago is drawn moved
    into place and the next one is scheduled, so at most half of the time goes
    to rendering.
    """

    def __init__(self):
        super().__init__()
        self._xy = np.zeros((0, 2), dtype=np.float64)
        self._sx = np.zeros(0, dtype=np.float32)
        self._sy = np.zeros(0, dtype=np.float32)
        self._order: np.ndarray | None = None  # sorted position -> point index (None: identity)
        self._starts = np.zeros(1, dtype=np.intp)  # run of class i: starts[i]:starts[i + 1]
        self._cls: np.ndarray | None = None  # sorted position -> class (None: one class)
        self._class_bounds = np.zeros((0, 4))  # per class: xmin, xmax, ymin, ymax (NaN if none)
        self._class_gaps = np.zeros(0, dtype=bool)  # per class: has points with no position (NaN)
        self._visible = np.zeros(0, dtype=bool)
        self._colours: list[QtGui.QColor] = []
        self._size = 4.0
        self._exact_max = EXACT_MAX_POINTS
        self._progressive = True
        self._version = 0
        self._br: QtCore.QRectF | None = None
        self._sprites: dict[tuple, QtGui.QPixmap] = {}
        self._frags = PrimitiveArray(QtGui.QPainter.PixmapFragment, 10)
        self._rasterizer = Rasterizer()
        # The cached layer: the image, what it shows, where, and what it cost.
        self._layer: QtGui.QImage | None = None
        self._layer_buffer: np.ndarray | None = None
        self._layer_key: tuple | None = None
        self._layer_view: tuple[float, float, float, float] | None = None
        self._layer_rect = QtCore.QRectF()
        self._layer_done = 0.0
        self._layer_cost = 0.0
        self._mode = "empty"
        self._renders = 0
        self._refresh = QtCore.QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.timeout.connect(self._on_refresh)

    # data and style

    def set_data(self, xy: np.ndarray, sx: np.ndarray, sy: np.ndarray, order: np.ndarray | None,
                 starts: np.ndarray, cls: np.ndarray | None, class_bounds: np.ndarray,
                 class_gaps: np.ndarray) -> None:
        """Points in class order (see the class docstring); ``class_gaps`` marks the classes
        with points whose float32 coordinates are NaN (never drawn)."""
        self.prepareGeometryChange()
        self._xy, self._sx, self._sy, self._order = xy, sx, sy, order
        self._starts, self._cls, self._class_bounds = starts, cls, class_bounds
        self._class_gaps = class_gaps
        if len(self._visible) != len(class_bounds):
            self._visible = np.ones(len(class_bounds), dtype=bool)
        self._br = None
        self._version += 1
        self.informViewBoundsChanged()
        self.update()

    def set_classes(self, colours: Sequence[QtGui.QColor], visible: Sequence[bool]) -> None:
        self._colours = [QtGui.QColor(c) for c in colours]
        self._visible = np.asarray(visible, dtype=bool)
        self._version += 1
        self.update()

    def set_size(self, size: float) -> None:
        self.prepareGeometryChange()
        self._size = float(size)
        self._br = None
        self._version += 1
        self.update()

    def set_exact_max(self, n: int | None) -> None:
        self._exact_max = np.iinfo(np.int64).max if n is None else max(0, int(n))
        self._version += 1
        self.update()

    def exact_max(self) -> int:
        return self._exact_max

    def set_progressive(self, on: bool) -> None:
        self._progressive = bool(on)

    def mode(self) -> str:
        """How the last rendering drew the points: "exact", "raster" or "empty"."""
        return self._mode

    def renders(self) -> int:
        """How many renderings were made (a moved reuse of one is not counted)."""
        return self._renders

    def layer_image(self) -> QtGui.QImage | None:
        """The last rendering (for inspection)."""
        return self._layer

    def bounds(self) -> tuple[float, float, float, float] | None:
        """xmin, xmax, ymin, ymax of the shown classes' points, or None."""
        b = self._class_bounds
        if len(b) == 0:
            return None
        b = b[self._visible] if len(self._visible) == len(b) else b
        b = b[np.isfinite(b).all(axis=1)]
        if len(b) == 0:
            return None
        return float(b[:, 0].min()), float(b[:, 1].max()), float(b[:, 2].min()), float(b[:, 3].max())

    def _shown_runs(self) -> list[tuple[int, int, int]]:
        """(class, start, stop) of the shown classes' runs in sorted order."""
        s = self._starts
        return [(c, int(s[c]), int(s[c + 1])) for c in range(len(s) - 1)
                if c < len(self._visible) and self._visible[c] and s[c + 1] > s[c]]

    # pyqtgraph protocol

    def dataBounds(self, ax, frac=1.0, orthoRange=None):
        b = self.bounds()
        if b is None:
            return (None, None)
        if frac >= 1.0 and orthoRange is None:
            return b[0:2] if ax == 0 else b[2:4]
        runs = self._shown_runs()
        d = np.concatenate([(self._sx if ax == 0 else self._sy)[a:z] for _, a, z in runs])
        o = np.concatenate([(self._sy if ax == 0 else self._sx)[a:z] for _, a, z in runs])
        with np.errstate(invalid="ignore"):
            m = np.isfinite(d)
            if orthoRange is not None:
                m &= (o >= orthoRange[0]) & (o <= orthoRange[1])
        d = d[m]
        if len(d) == 0:
            return (None, None)
        if frac >= 1.0:
            return (float(d.min()), float(d.max()))
        q = (1.0 - frac) * 50.0
        return (float(np.percentile(d, q)), float(np.percentile(d, 100.0 - q)))

    def pixelPadding(self) -> float:
        return self._size * 0.5 + 1.0

    def viewTransformChanged(self) -> None:
        self.prepareGeometryChange()
        self._br = None

    def boundingRect(self) -> QtCore.QRectF:
        b = self.bounds()
        if b is None:
            return QtCore.QRectF()
        if self._br is None:
            xmin, xmax, ymin, ymax = b
            pw, ph = self.pixelWidth() or 0.0, self.pixelHeight() or 0.0
            pad = self.pixelPadding()
            self._br = QtCore.QRectF(xmin - pad * pw, ymin - pad * ph,
                                     (xmax - xmin) + 2 * pad * pw, (ymax - ymin) + 2 * pad * ph)
        return QtCore.QRectF(self._br)

    # drawing

    @QtCore.Slot()
    def _on_refresh(self) -> None:
        self.update()

    def paint(self, p: QtGui.QPainter, option, widget=None) -> None:
        if len(self._sx) == 0 or not self._shown_runs():
            self._mode = "empty"
            return
        tr = p.transform()
        if tr.m12() != 0.0 or tr.m21() != 0.0 or tr.m11() == 0.0 or tr.m22() == 0.0:
            return  # views of the map are never rotated
        vb = self.getViewBox()
        if vb is None or not hasattr(vb, "viewRect"):
            return
        # The view box in the painter's coordinates, and device pixels per painter unit: the
        # screen's pixel ratio, or whatever scale the widget is rendered into an image at.
        area = tr.mapRect(vb.viewRect())
        dev = p.deviceTransform()
        dpr = abs(dev.m11() / tr.m11()) or 1.0
        if area.width() < 1 or area.height() < 1:
            return
        key = (self._version, round(area.width()), round(area.height()), round(dpr, 6))
        view = (tr.m11(), tr.m22(), tr.dx(), tr.dy())
        now = time.perf_counter()
        if self._layer is not None and self._layer_key == key and self._layer_view != view \
                and self._progressive and now - self._layer_done < self._layer_cost \
                and self._draw_moved(p, view, area):
            wait_ms = 1000.0 * (self._layer_cost - (now - self._layer_done))
            if not self._refresh.isActive():
                self._refresh.start(max(1, int(math.ceil(wait_ms))))
            return
        if self._layer is None or self._layer_key != key or self._layer_view != view:
            t0 = time.perf_counter()
            self._render(view, area, dpr)
            self._layer_key, self._layer_view = key, view
            self._layer_done = time.perf_counter()
            self._layer_cost = self._layer_done - t0
            self._renders += 1
        self._draw_layer(p, self._layer_rect)

    def _draw_layer(self, p: QtGui.QPainter, target: QtCore.QRectF) -> None:
        p.save()
        p.resetTransform()
        p.drawImage(target, self._layer, QtCore.QRectF(0, 0, self._layer.width(), self._layer.height()))
        p.restore()

    def _draw_moved(self, p: QtGui.QPainter, view: tuple[float, float, float, float],
                    area: QtCore.QRectF) -> bool:
        """Draw the cached layer where its points are in ``view``; False if that would not help
        (a zoom by more than a factor of two, or nothing of it inside ``area``)."""
        a0, d0, bx0, by0 = self._layer_view
        a1, d1, bx1, by1 = view
        sx, sy = a1 / a0, d1 / d0
        if not (0.5 <= sx <= 2.0 and 0.5 <= sy <= 2.0):
            return False
        r = self._layer_rect
        left, top = bx1 + sx * (r.left() - bx0), by1 + sy * (r.top() - by0)
        target = QtCore.QRectF(left, top, sx * r.width(), sy * r.height())
        if not target.intersects(area):
            return False
        self._draw_layer(p, target)
        return True

    def _render(self, view: tuple[float, float, float, float], area: QtCore.QRectF, dpr: float) -> None:
        """Render the points for ``view`` (painter units = a * x + bx) into a new layer image
        covering ``area`` (the view box, in painter units) and RENDER_MARGIN around it."""
        a, d, bx, by = view
        margin = RENDER_MARGIN
        rect = area.adjusted(-margin, -margin, margin, margin)
        self._layer_rect = rect
        pw, ph = int(math.ceil(rect.width() * dpr)), int(math.ceil(rect.height() * dpr))
        # Data coordinates of the layer's edges (d < 0: y points up).
        xa, xb = (rect.left() - bx) / a, (rect.right() - bx) / a
        ya, yb = (rect.top() - by) / d, (rect.bottom() - by) / d
        x_lo, x_hi = min(xa, xb), max(xa, xb)
        y_lo, y_hi = min(ya, yb), max(ya, yb)
        k, pieces = self._select((x_lo, x_hi, y_lo, y_hi))
        if k == 0:
            self._mode = "empty"
            self._layer_buffer = None
            self._layer = QtGui.QImage(1, 1, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
            self._layer.fill(0)
            self._layer_rect = QtCore.QRectF(0, 0, 0, 0)
            return
        if k <= self._exact_max:
            self._mode = "exact"
            self._render_exact(self._positions(pieces), a, d, bx - rect.left(), by - rect.top(), pw, ph, dpr)
        else:
            self._mode = "raster"
            colours = np.array([c.getRgbF() for c in self._colours] or [(0.5, 0.5, 0.5, 1.0)],
                               dtype=np.float32)
            img = self._rasterizer.render(self._take(self._sx, pieces), self._take(self._sy, pieces),
                                          self._take(self._cls, pieces), colours,
                                          xa, ya, a * dpr, d * dpr, pw, ph, int(round(self._size * dpr)))
            self._layer_buffer = img
            self._layer = QtGui.QImage(img.data, pw, ph, 4 * pw, QtGui.QImage.Format.Format_ARGB32_Premultiplied)

    def layer_rect(self) -> QtCore.QRectF:
        """Where the last rendering lies, in the coordinates of the painter it was made for."""
        return QtCore.QRectF(self._layer_rect)

    def _select(self, rect: tuple[float, float, float, float]) -> tuple[int, list]:
        """The shown points inside ``rect`` (x_lo, x_hi, y_lo, y_hi): (how many, pieces).

        Pieces are (start, stop, mask or None) over the sorted points.  Class by
        class: a class whose bounds lie inside is taken whole (no test), one
        outside is skipped, the others (and those with NaN points) are tested
        point by point.
        """
        x_lo, x_hi, y_lo, y_hi = rect
        pieces: list[tuple[int, int, np.ndarray | None]] = []  # (start, stop, mask or None)
        for c, s0, s1 in self._shown_runs():
            bx0, bx1, by0, by1 = self._class_bounds[c]
            if not (bx1 >= x_lo and bx0 < x_hi and by1 >= y_lo and by0 < y_hi):
                continue  # entirely outside (or no finite point)
            if bx0 >= x_lo and bx1 < x_hi and by0 >= y_lo and by1 < y_hi and not self._class_gaps[c]:
                pieces.append((s0, s1, None))
                continue
            xs, ys = self._sx[s0:s1], self._sy[s0:s1]
            with np.errstate(invalid="ignore"):
                m = (xs >= np.float32(x_lo)) & (xs < np.float32(x_hi))
                m &= (ys >= np.float32(y_lo)) & (ys < np.float32(y_hi))
            if m.any():
                pieces.append((s0, s1, m))
        # Whole runs next to each other are one slice.
        merged: list[tuple[int, int, np.ndarray | None]] = []
        for s0, s1, m in pieces:
            if m is None and merged and merged[-1][2] is None and merged[-1][1] == s0:
                merged[-1] = (merged[-1][0], s1, None)
            else:
                merged.append((s0, s1, m))
        k = sum(s1 - s0 if m is None else int(np.count_nonzero(m)) for s0, s1, m in merged)
        return k, merged

    @staticmethod
    def _take(a: np.ndarray | None, pieces: list) -> np.ndarray | None:
        """The entries of ``a`` (indexed by sorted position) that ``pieces`` select, in order."""
        if a is None:
            return None
        parts = [a[s0:s1] if m is None else a[s0:s1][m] for s0, s1, m in pieces]
        return parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else a[:0])

    @staticmethod
    def _positions(pieces: list) -> np.ndarray:
        """The sorted positions that ``pieces`` select, ascending."""
        parts = [np.arange(s0, s1) if m is None else s0 + np.flatnonzero(m) for s0, s1, m in pieces]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)

    def _sprite(self, colour: QtGui.QColor, dpr: float) -> QtGui.QPixmap:
        key = (colour.rgba(), self._size, dpr)
        sprite = self._sprites.get(key)
        if sprite is None:
            if len(self._sprites) > 64:
                self._sprites.clear()
            side = int(math.ceil((self._size + 2) * dpr))
            sprite = QtGui.QPixmap(side, side)
            sprite.fill(QtCore.Qt.GlobalColor.transparent)
            q = QtGui.QPainter(sprite)
            q.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
            q.setPen(QtCore.Qt.PenStyle.NoPen)
            q.setBrush(colour)
            diameter = self._size * dpr
            q.drawEllipse(QtCore.QRectF((side - diameter) / 2.0, (side - diameter) / 2.0, diameter, diameter))
            q.end()
            self._sprites[key] = sprite
        return sprite

    def _render_exact(self, idx: np.ndarray, a: float, d: float, bx: float, by: float,
                      pw: int, ph: int, dpr: float) -> None:
        """One sprite per point (``idx``: sorted positions, ascending), class by class (later
        classes on top), at float64 positions."""
        points = idx if self._order is None else self._order[idx]
        xy = self._xy[points]
        px = (a * xy[:, 0] + bx) * dpr
        py = (d * xy[:, 1] + by) * dpr
        image = QtGui.QImage(pw, ph, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(0)
        q = QtGui.QPainter(image)
        cuts = np.searchsorted(idx, self._starts)
        for c in range(len(self._starts) - 1):
            i0, i1 = int(cuts[c]), int(cuts[c + 1])
            if i1 <= i0 or c >= len(self._colours):
                continue
            sprite = self._sprite(self._colours[c], dpr)
            self._frags.resize(i1 - i0)
            f = self._frags.ndarray()
            f[:, 0] = px[i0:i1]
            f[:, 1] = py[i0:i1]
            f[:, 2:6] = (0.0, 0.0, sprite.width(), sprite.height())
            f[:, 6:10] = (1.0, 1.0, 0.0, 1.0)
            q.drawPixmapFragments(*self._frags.drawargs(), sprite)
        q.end()
        self._layer_buffer = None
        self._layer = image


class _HoverPreview(QtWidgets.QFrame):
    """Small floating window with an example's image and its label."""

    def __init__(self, parent: QtWidgets.QWidget):
        super().__init__(parent, QtCore.Qt.WindowType.ToolTip
                         | QtCore.Qt.WindowType.FramelessWindowHint)
        self.setObjectName("latentHoverPreview")
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_ShowWithoutActivating, True)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self._image = QtWidgets.QLabel()
        self._image.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self._text = QtWidgets.QLabel()
        self._text.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 3)
        lay.setSpacing(2)
        lay.addWidget(self._image)
        lay.addWidget(self._text)

    def show_at(self, global_pos: QtCore.QPoint, image: QtGui.QImage | None, text: str) -> None:
        if image is not None:
            scaled = image.scaled(PREVIEW_PX, PREVIEW_PX, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                  QtCore.Qt.TransformationMode.FastTransformation)
            self._image.setPixmap(QtGui.QPixmap.fromImage(scaled))
            self._image.show()
        else:
            self._image.clear()
            self._image.hide()
        self._text.setText(text)
        self.adjustSize()
        pos = global_pos + QtCore.QPoint(16, 16)
        screen = QtGui.QGuiApplication.screenAt(global_pos)
        if screen is not None:
            avail = screen.availableGeometry()
            if pos.x() + self.width() > avail.right():
                pos.setX(global_pos.x() - 16 - self.width())
            if pos.y() + self.height() > avail.bottom():
                pos.setY(global_pos.y() - 16 - self.height())
        self.move(pos)
        self.show()

    def text(self) -> str:
        return self._text.text()


class _MarkLayer(pg.GraphicsObject):
    """Map points drawn emphasised: an image of the viewport plus a margin, in which each point is a small disc.

    ``set_points(xy)`` takes the (M, 2) positions to mark (None for none).
    The image is rendered from the points (a few numpy passes over them,
    each mark spread over a disc only within the marks' bounding box) when
    the scale or the viewport changes, and reused, moved into place, while
    the view only pans within the margin or repaints for other reasons.
    """

    #: Extra image on each side of the viewport, as a fraction of its size, that a pan may uncover.
    MARGIN = 0.25

    def __init__(self, colour: QtGui.QColor, edge: QtGui.QColor, diameter: int):
        super().__init__()
        self._colour = int(colour.rgba())
        self._edge = int(edge.rgba())
        self._diameter = int(diameter)
        self._xy: np.ndarray | None = None
        self._rect = QtCore.QRectF()
        #: The rendered image and what it was rendered for: (m11, m12, m21, m22, w, h, dpr), dx, dy.
        self._cache: tuple[tuple, float, float, QtGui.QImage, np.ndarray] | None = None

    def set_points(self, xy: np.ndarray | None) -> None:
        self.prepareGeometryChange()
        self._cache = None
        self._xy, self._rect = None, QtCore.QRectF()
        if xy is not None and len(xy):
            pts = np.asarray(xy, dtype=np.float64)
            pts = pts[np.all(np.isfinite(pts), axis=1)]
            if len(pts):
                self._xy = pts
                (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
                mx, my = max(x1 - x0, 1e-9) * 0.05 + 1e-6, max(y1 - y0, 1e-9) * 0.05 + 1e-6
                self._rect = QtCore.QRectF(x0 - mx, y0 - my, (x1 - x0) + 2 * mx, (y1 - y0) + 2 * my)
        self.update()

    def count(self) -> int:
        return 0 if self._xy is None else len(self._xy)

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF(self._rect)

    def _render(self, t: QtGui.QTransform, dpr: float, w: int, h: int) -> tuple[QtGui.QImage, np.ndarray]:
        """The marks of the viewport (w, h device pixels) plus the margin, for device transform ``t``."""
        mx, my = int(w * self.MARGIN), int(h * self.MARGIN)
        W, H = w + 2 * mx, h + 2 * my
        x, y = self._xy[:, 0], self._xy[:, 1]
        with np.errstate(invalid="ignore", over="ignore"):
            fx = (t.m11() * x + t.m21() * y + t.dx()) * dpr + mx
            fy = (t.m12() * x + t.m22() * y + t.dy()) * dpr + my
        on = (fx >= 0) & (fx < W) & (fy >= 0) & (fy < H)
        sx, sy = fx[on].astype(np.intp), fy[on].astype(np.intp)
        img = np.zeros((H, W), dtype=np.uint32)
        if sx.size:
            r = max(1, round(self._diameter * dpr))
            e = r + 2 * max(1, round(dpr))  # the edge: a pixel (at 1x) round the core
            x0, x1 = max(0, int(sx.min()) - e), min(W, int(sx.max()) + e + 1)
            y0, y1 = max(0, int(sy.min()) - e), min(H, int(sy.max()) + e + 1)
            crop = np.zeros((y1 - y0, x1 - x0), dtype=np.uint32)
            crop[sy - y0, sx - x0] = 1
            outer = dilate_disc(crop, e)
            inner = dilate_disc(crop, r)
            img[y0:y1, x0:x1] = np.where(inner != 0, np.uint32(self._colour), np.where(outer != 0, np.uint32(self._edge), 0))
        q = QtGui.QImage(img.data, W, H, 4 * W, QtGui.QImage.Format.Format_ARGB32)
        return q, img

    def paint(self, p: QtGui.QPainter, option, widget=None) -> None:
        if self._xy is None or widget is None:
            return
        t = p.transform()
        dpr = widget.devicePixelRatioF()
        w, h = int(widget.width() * dpr), int(widget.height() * dpr)
        if w <= 0 or h <= 0:
            return
        key = (t.m11(), t.m12(), t.m21(), t.m22(), w, h, dpr)
        mx, my = int(w * self.MARGIN), int(h * self.MARGIN)
        c = self._cache
        if c is not None and c[0] == key:
            ox, oy = (t.dx() - c[1]) * dpr, (t.dy() - c[2]) * dpr
        if c is None or c[0] != key or abs(ox) > mx or abs(oy) > my:
            q, arr = self._render(t, dpr, w, h)
            c = self._cache = (key, t.dx(), t.dy(), q, arr)
            ox = oy = 0.0
        p.save()
        p.resetTransform()
        p.drawImage(QtCore.QRectF(ox / dpr - mx / dpr, oy / dpr - my / dpr, c[3].width() / dpr, c[3].height() / dpr),
                    c[3])
        p.restore()


class LatentView(QtWidgets.QWidget):
    """Scatter of latent codes coloured by class, with picking, hover preview and overlays."""

    pointPicked = QtCore.Signal(float, float)
    dragFinished = QtCore.Signal()
    exampleClicked = QtCore.Signal(int)
    hovered = QtCore.Signal(int)
    #: The visible data range changed (pan, zoom, resize, auto range): x0, x1, y0, y1.
    viewRangeChanged = QtCore.Signal(float, float, float, float)
    #: The user changed how the map is drawn (see :meth:`view_options`), e.g. from its menu.
    viewOptionsChanged = QtCore.Signal(dict)
    #: A double click undid its first click: the crosshair position (x, y) and the highlighted
    #: example as they were before that click (None where there was none), to be put back.
    pickUndone = QtCore.Signal(object, object)

    # Left-button states: nothing held, held (a click or a drag: it picks as it moves),
    # clicked (released; a second press within the double-click interval is a double click),
    # double-clicked (until the release).
    _IDLE, _DRAGGING, _CLICKED, _DOUBLE = range(4)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("latentMap")

        self._vb = _MapViewBox()
        self._vb.context_menu_requested = self._show_context_menu
        self._plot = pg.PlotWidget(viewBox=self._vb,
                                   axisItems={"left": PlainAxis("left"), "bottom": PlainAxis("bottom")})
        self._plot.setObjectName("latentPlot")
        self._item = self._plot.getPlotItem()
        self._item.setMenuEnabled(False, enableViewBoxMenu=None)
        self._item.hideButtons()  # "fit the view" is the double click and the menu's first entry
        # Room above and to the right, so the tick labels at the ends of the axes are not cut.
        self._item.layout.setContentsMargins(2, 8, 10, 2)
        # Left button belongs to picking: no left-drag pan or rubber band. Middle
        # drag pans (PanMode), right drag zooms, the wheel zooms.
        self._vb.setMouseMode(pg.ViewBox.PanMode)
        # One scale for both axes: a spread along one direction looks like one.
        self._vb.setAspectLocked(True, ratio=1.0)
        self._vb.disableAutoRange()
        # The grid lies under the manifold underlay and the points.
        self._grid = GridLines(self._item.getAxis("bottom"), self._item.getAxis("left"))
        self._grid.setZValue(-20)
        self._item.addItem(self._grid, ignoreBounds=True)
        # Axes are cached as pixmaps: replaying their drawing (tick labels
        # included) cost about as much as 70,000 points on each repaint.
        for side in ("left", "bottom"):
            self._item.getAxis(side).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._axis_labels = ("z1", "z2")
        self._legend_corner = "top-right"
        self._legend_wanted = True
        self._legend = self._item.addLegend(offset=LEGEND_CORNERS[self._legend_corner])
        self._legend.hide()
        self._legend_columns = 1
        self._legend_has_entries = False

        self._point_size = 4.0
        self._point_opacity = 1.0
        # One item draws every point; one stand-in per class carries its colour, its
        # visibility and its legend entry.
        self._points = _PointsItem()
        self._points.setZValue(1)
        self._item.addItem(self._points)
        self._clouds: list[_ClassItem] = []
        self._cloud_labels: list[int] = []
        self._n_classes = 0
        self._updating_classes = False
        self._legend_key: tuple | None = None
        self._xy = np.zeros((0, 2), dtype=np.float64)
        self._labels: np.ndarray | None = None
        self._names: list[str] | None = None
        # Points sorted by class: float32 coordinates (drawing and hit tests), the sorted
        # position -> point index (None while it is the identity) and the class runs.
        self._sx = np.zeros(0, dtype=np.float32)
        self._sy = np.zeros(0, dtype=np.float32)
        self._order: np.ndarray | None = None
        self._starts = np.zeros(1, dtype=np.intp)
        self._abs_max = (0.0, 0.0)  # largest |x| and |y|: the float32 rounding margin of hit tests
        # The grouping of the last labels, kept while the labels stay the same (every epoch).
        self._grouping_labels: np.ndarray | None = None
        self._grouping: tuple | None = None
        self._images: np.ndarray | None = None

        # Underlay: an image under the points filling a rectangle of the map
        # (e.g. the decoded manifold); not part of the data bounds.
        self._underlay = pg.ImageItem(axisOrder="row-major")
        self._underlay.setZValue(-10)
        # Dimmed, so the coloured points on top stay readable over bright strokes.
        self._underlay.setOpacity(0.6)
        self._underlay.hide()
        self._item.addItem(self._underlay, ignoreBounds=True)
        self._underlay_image: np.ndarray | None = None
        self._underlay_rect: tuple[float, float, float, float] | None = None

        # Overlays.
        self._path = pg.PlotDataItem(symbol="o", symbolSize=6)
        self._path.setZValue(20)
        self._ellipses = pg.PlotCurveItem(connect="finite")
        self._ellipses.setZValue(15)
        # The selected example: a square in the accent colour on a halo of the background
        # colour; the decoded point (crosshair) is a circle on dashed lines in the text colour.
        self._highlight_index: int | None = None
        self._highlight_halo = pg.ScatterPlotItem(size=15, symbol="s", brush=None)
        self._highlight_halo.setZValue(24)
        self._highlight = pg.ScatterPlotItem(size=15, symbol="s", brush=None)
        self._highlight.setZValue(25)
        self._cross_v = pg.InfiniteLine(angle=90, movable=False)
        self._cross_h = pg.InfiniteLine(angle=0, movable=False)
        self._cross_ring = pg.ScatterPlotItem(size=13, symbol="o", brush=None)
        self._far_text = pg.TextItem("far from data", anchor=(0, 1))
        self._far = False
        for it in (self._cross_v, self._cross_h, self._cross_ring, self._far_text):
            it.setZValue(30)
            it.hide()
        # Examples drawn emphasised: a selection (a boolean mask over the points) and marked
        # examples (e.g. neighbours), each one raster layer of the viewport.
        self._selection_mask: np.ndarray | None = None
        self._selection_layer = _MarkLayer(SELECTION_COLOUR, SELECTION_EDGE, 4)
        self._selection_layer.setZValue(10)
        self._marked: np.ndarray | None = None
        self._marked_of = 0  # how many points there were when the examples were marked
        self._marked_layer = _MarkLayer(MARKED_COLOUR, MARKED_EDGE, 8)
        self._marked_layer.setZValue(12)
        for it in (self._path, self._ellipses, self._highlight_halo, self._highlight, self._cross_v,
                   self._cross_h, self._cross_ring, self._far_text, self._selection_layer, self._marked_layer):
            self._item.addItem(it, ignoreBounds=True)
        self._crosshair_pos: tuple[float, float] | None = None

        # Message over an empty map, centred on the plotting area (not over the axes).
        self._message = QtWidgets.QLabel(self._plot)
        self._message.setObjectName("latentMapMessage")
        self._message.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self._message.setWordWrap(True)
        self._message.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self._message.hide()

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self._plot)

        # Mouse state.
        self._viewport = self._plot.viewport()
        self._viewport.setMouseTracking(True)
        self._viewport.installEventFilter(self)
        self._plot.installEventFilter(self)
        self._state = self._IDLE
        self._press_pos = QtCore.QPointF()
        self._press_data = (0.0, 0.0)
        # What a double click puts back: the crosshair and the highlight before its first press.
        self._before_click: tuple[tuple[float, float] | None, int | None] = (None, None)
        # A click lands at once; for the double-click interval after its press a second
        # press makes it a double click, which undoes it.
        self._press_clock = QtCore.QElapsedTimer()
        self._click_timer = QtCore.QTimer(self)
        self._click_timer.setSingleShot(True)
        self._click_timer.timeout.connect(self._on_click_window_over)
        self._last_hover = -1
        self._hover_pos: QtCore.QPointF | None = None
        self._hover_global = QtCore.QPoint()
        self._hover_timer = QtCore.QTimer(self)
        self._hover_timer.setSingleShot(True)
        self._hover_timer.setInterval(HOVER_INTERVAL_MS)
        self._hover_timer.timeout.connect(self._do_hover)
        self._preview = _HoverPreview(self)
        self._preview.hide()
        self._vb.sigRangeChanged.connect(self._on_range_changed)
        self._vb.sigResized.connect(self._on_view_resized)
        # Once the user pans or zooms, new points no longer move the view.
        self._user_navigated = False
        self._vb.sigRangeChangedManually.connect(self._on_manual_range)
        self._fitted: tuple | None = None  # (points' bounds, view range) of the last auto range

        # The right-click menu (filled by _fill_menu).
        self._menu = QtWidgets.QMenu(self)
        self._menu.setObjectName("latentMapMenu")
        self._legend_shown_action = QtGui.QAction("Show legend", self)
        self._corner_actions: dict[str, QtGui.QAction] = {}
        self._size_actions: dict[float, QtGui.QAction] = {}
        self._opacity_actions: dict[float, QtGui.QAction] = {}
        self._size_menu = QtWidgets.QMenu("Point size", self._menu)
        self._opacity_menu = QtWidgets.QMenu("Point opacity", self._menu)
        self._fill_menu()
        self._apply_theme()

    # --- points -----------------------------------------------------------------------

    def set_points(self, xy, labels=None, label_names: Sequence[str] | None = None,
                   autorange: bool = True) -> None:
        """Show ``xy`` (N, 2) coloured by ``labels`` (N,) ints; negative labels are unlabelled.

        No per-point Python: a class sort that is reused while the labels stay the
        same, float32 copies in class order, per-class bounds.  About 30 ms at
        1,000,000 points; drawing happens on the next paint.
        """
        xy = np.array(xy, dtype=np.float64)  # own copy: hit tests and exact drawing read it later
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"xy must have shape (N, 2), got {xy.shape}")
        n = len(xy)
        if labels is not None:
            labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
            if len(labels) != n:
                raise ValueError("labels must have one entry per point")
            labels = np.where(labels < 0, -1, labels)  # every negative label means unlabelled
        self._xy = xy
        self._labels = labels
        self._names = list(label_names) if label_names is not None else None
        self._message.hide()

        order, starts, classes, cls = self._group(labels, n)
        with np.errstate(invalid="ignore"):
            sx = xy[:, 0].astype(np.float32)
            sy = xy[:, 1].astype(np.float32)
            if order is not None:
                sx, sy = sx[order], sy[order]
            finite = np.isfinite(sx) & np.isfinite(sy)
            gaps = np.zeros(len(classes), dtype=bool)
            if not finite.all():  # a point with any non-finite coordinate is never drawn or hit
                sx[~finite] = np.nan
                sy[~finite] = np.nan
                gaps = np.logical_or.reduceat(~finite, starts[:-1])
            if len(classes):
                bounds = np.stack([np.fmin.reduceat(sx, starts[:-1]), np.fmax.reduceat(sx, starts[:-1]),
                                   np.fmin.reduceat(sy, starts[:-1]), np.fmax.reduceat(sy, starts[:-1])],
                                  axis=1).astype(np.float64)
            else:
                bounds = np.zeros((0, 4))
        self._sx, self._sy, self._order, self._starts = sx, sy, order, starts
        finite_b = bounds[np.isfinite(bounds).all(axis=1)]
        self._abs_max = ((float(np.abs(finite_b[:, :2]).max()), float(np.abs(finite_b[:, 2:]).max()))
                         if len(finite_b) else (0.0, 0.0))

        self._updating_classes = True
        try:
            for i, c in enumerate(classes):
                cloud = self._cloud(i)
                cloud.set_colour(self._point_colour(c))
                if self._cloud_labels[i] != c:
                    # A class hidden from the legend stays hidden only while the
                    # same class occupies this item.
                    cloud.setVisible(True)
                self._cloud_labels[i] = c
            for i in range(len(classes), len(self._clouds)):
                self._cloud_labels[i] = -2
        finally:
            self._updating_classes = False
        self._n_classes = len(classes)
        self._points.set_data(xy, sx, sy, order, starts, cls, bounds, gaps)
        self._sync_classes()
        self._update_legend(classes, labels is not None)

        if self._highlight_index is not None:
            self.set_highlight(self._highlight_index if self._highlight_index < n else None)
        # A selection and marks follow their examples to the new positions (gone with another number of them).
        self.set_selection_mask(self._selection_mask if self._selection_mask is not None
                                and len(self._selection_mask) == n else None)
        self.set_marked(self._marked if self._marked is not None and self._marked_of == n else None)
        if self._last_hover >= n:
            self._last_hover = -1
            self._preview.hide()
        if autorange and n:
            self._follow_points()

    def _group(self, labels: np.ndarray | None, n: int):
        """(order or None, run starts (len C + 1), class labels, class per sorted point or None).

        A stable sort by label (a radix sort on 16-bit keys when the labels allow),
        kept and reused while the labels are the same.
        """
        if labels is None or n == 0:
            return None, np.array([0, n] if n else [0], dtype=np.intp), ([-1] if n else []), None
        if (self._grouping is not None and self._grouping_labels is not None
                and len(self._grouping_labels) == n and np.array_equal(self._grouping_labels, labels)):
            return self._grouping
        lo, hi = int(labels.min()), int(labels.max())
        if np.all(labels[1:] >= labels[:-1]):
            order = None
            sorted_labels = labels
        else:
            key = (labels - lo).astype(np.int16) if hi - lo < 32767 else labels
            order = np.argsort(key, kind="stable")
            sorted_labels = labels[order]
        cuts = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
        starts = np.concatenate(([0], cuts, [n])).astype(np.intp)
        classes = [int(v) for v in sorted_labels[starts[:-1]]]
        cls_type = np.int16 if len(classes) < 32767 else np.intp
        cls = None if len(classes) == 1 else np.repeat(np.arange(len(classes), dtype=cls_type), np.diff(starts))
        self._grouping_labels = labels
        self._grouping = (order, starts, classes, cls)
        return self._grouping

    def _cloud(self, i: int) -> _ClassItem:
        while len(self._clouds) <= i:
            c = _ClassItem(self._point_colour(len(self._clouds)), self._on_class_visibility)
            c.setZValue(1)
            self._clouds.append(c)
            self._cloud_labels.append(-2)
        return self._clouds[i]

    def _on_class_visibility(self) -> None:
        """A class was shown or hidden (from the legend): redraw, and hit tests follow."""
        if not self._updating_classes:
            self._sync_classes()

    def _sync_classes(self) -> None:
        k = self._n_classes
        self._points.set_classes([c.colour() for c in self._clouds[:k]],
                                 [c.isVisible() for c in self._clouds[:k]])

    def _point_colour(self, label: int) -> QtGui.QColor:
        """The class colour with its alpha scaled by the point opacity."""
        c = class_colour(label)
        c.setAlphaF(c.alphaF() * self._point_opacity)
        return c

    def class_name(self, label: int) -> str:
        if label < 0:
            return "unlabelled"
        if self._names is not None and label < len(self._names):
            return str(self._names[label])
        return str(label)

    def _update_legend(self, classes: list[int], labelled: bool) -> None:
        key = (tuple(classes), tuple(self._names or ()), labelled)
        if key == self._legend_key:
            return
        self._legend_key = key
        self._legend.clear()
        self._legend_has_entries = labelled and len(classes) <= MAX_LEGEND_ENTRIES
        if not self._legend_has_entries:
            self._legend.hide()
            return
        self._legend_columns = 1
        self._legend.setColumnCount(1)
        for i, c in enumerate(classes):
            self._legend.addItem(self._clouds[i], self.class_name(c))
        self._fit_legend()
        self._apply_legend_theme()
        # Entries are painted from pixmaps: the map repaints after every epoch and each entry's
        # sample and text are costly to draw from scratch.
        cache = QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache
        self._legend.setCacheMode(cache)
        for sample, label in self._legend.items:
            for item in (sample, label, getattr(label, "item", None)):
                if item is not None:
                    item.setCacheMode(cache)
        self._legend.setVisible(self._legend_wanted)

    def _fit_legend(self) -> None:
        """As many legend columns as keep the legend within 80% of the plot's height (it is never cut off)."""
        n = len(self._legend.items)
        if not n:
            return
        rows = -(-n // self._legend_columns)
        entry = max(1.0, (self._legend.boundingRect().height() - 10.0) / rows)
        room = 0.8 * self._vb.sceneBoundingRect().height()
        columns = 1
        while columns < n and -(-n // columns) * entry > room:
            columns += 1
        if columns != self._legend_columns:
            self._legend_columns = columns
            self._legend.setColumnCount(columns)

    def legend_columns(self) -> int:
        return self._legend_columns

    def legend_labels(self) -> list[str]:
        """Texts of the legend entries, in order."""
        return [label.text for _, label in self._legend.items]

    def point_count(self) -> int:
        return len(self._xy)

    def points(self) -> np.ndarray:
        return self._xy

    def labels(self) -> np.ndarray | None:
        return self._labels

    # --- view options (legend, point size and opacity) ----------------------------------

    def view_options(self) -> dict:
        """How the map is drawn, as the window stores it: ``legend_visible`` (bool),
        ``legend_corner`` (a key of ``LEGEND_CORNERS``), ``point_size`` (pixels) and
        ``point_opacity`` (0-1, a factor on each class colour's alpha)."""
        return {"legend_visible": self._legend_wanted, "legend_corner": self._legend_corner,
                "point_size": self._point_size, "point_opacity": self._point_opacity}

    def set_view_options(self, options: dict) -> None:
        """Apply the keys of ``options`` that :meth:`view_options` knows; others are ignored.

        Values may come back from QSettings as strings ("true", "4.0"). Values that
        do not fit (a corner that does not exist, a size that is not a number) are
        ignored too, so options stored by another version never fail.
        """
        try:
            if "legend_visible" in options:
                shown = options["legend_visible"]
                if isinstance(shown, str):
                    shown = shown.strip().lower() in ("1", "true", "yes", "on")
                self.set_legend_visible(bool(shown))
            if options.get("legend_corner") in LEGEND_CORNERS:
                self.set_legend_corner(str(options["legend_corner"]))
            if "point_size" in options:
                self.set_point_size(float(options["point_size"]))
            if "point_opacity" in options:
                self.set_point_opacity(float(options["point_opacity"]))
        except (TypeError, ValueError):
            pass

    def _options_changed(self) -> None:
        self._sync_menu()
        self.viewOptionsChanged.emit(self.view_options())

    def set_legend_visible(self, visible: bool) -> None:
        """Show or hide the legend (it is shown only for labelled maps of up to MAX_LEGEND_ENTRIES classes)."""
        visible = bool(visible)
        if visible == self._legend_wanted:
            return
        self._legend_wanted = visible
        self._legend.setVisible(visible and self._legend_has_entries)
        self._options_changed()

    def legend_visible(self) -> bool:
        """Whether the legend is on the map now."""
        return self._legend.isVisible()

    def set_legend_corner(self, corner: str) -> None:
        """Move the legend to ``corner``: "top-right", "top-left", "bottom-left" or "bottom-right"."""
        if corner not in LEGEND_CORNERS:
            raise ValueError(f"unknown legend corner {corner!r}; one of {', '.join(LEGEND_CORNERS)}")
        if corner == self._legend_corner:
            return
        self._legend_corner = corner
        self._legend.setOffset(LEGEND_CORNERS[corner])
        self._options_changed()

    def legend_corner(self) -> str:
        return self._legend_corner

    def legend_item(self) -> pg.LegendItem:
        return self._legend

    def set_point_size(self, px: float) -> None:
        """Diameter of the points in screen pixels (1-30)."""
        px = float(min(MAX_POINT_SIZE, max(MIN_POINT_SIZE, float(px))))
        if px == self._point_size:
            return
        self._point_size = px
        self._points.set_size(px)
        self._options_changed()

    def point_size(self) -> float:
        return self._point_size

    def set_point_opacity(self, opacity: float) -> None:
        """Opacity of the points, 0.05-1: a factor on each class colour's own alpha (lower it to
        see the decoded manifold under dense points)."""
        opacity = float(min(1.0, max(MIN_OPACITY, float(opacity))))
        if opacity == self._point_opacity:
            return
        self._point_opacity = opacity
        for c, label in zip(self._clouds, self._cloud_labels):
            c.set_colour(self._point_colour(label if label != -2 else 0))
        self._sync_classes()
        for sample, _ in self._legend.items:
            sample.update()
        self._options_changed()

    def point_opacity(self) -> float:
        return self._point_opacity

    # --- the map's menu -----------------------------------------------------------------

    def _fill_menu(self) -> None:
        menu = self._menu
        fit = menu.addAction("Fit view to the points")
        fit.setObjectName("mapFitViewAction")
        fit.setToolTip("Also: double click on the map")
        fit.triggered.connect(self.auto_range)
        menu.addSeparator()

        legend = menu.addMenu("Legend")
        legend.setObjectName("mapLegendMenu")
        shown = self._legend_shown_action
        legend.addAction(shown)
        shown.setObjectName("mapLegendShownAction")
        shown.setCheckable(True)
        shown.toggled.connect(self.set_legend_visible)
        legend.addSeparator()
        corners = QtGui.QActionGroup(legend)
        for key, text in CORNER_NAMES.items():
            act = legend.addAction(text)
            act.setObjectName(f"mapLegendCorner_{key.replace('-', '_')}")
            act.setCheckable(True)
            corners.addAction(act)
            act.triggered.connect(lambda _checked=False, k=key: self.set_legend_corner(k))
            self._corner_actions[key] = act

        size = self._size_menu
        menu.addMenu(size)
        size.setObjectName("mapPointSizeMenu")
        sizes = QtGui.QActionGroup(size)
        for px in POINT_SIZES:
            act = size.addAction(f"{px} px")
            act.setObjectName(f"mapPointSize{px}Action")
            act.setCheckable(True)
            sizes.addAction(act)
            act.triggered.connect(lambda _checked=False, v=px: self.set_point_size(v))
            self._size_actions[float(px)] = act

        opacity = self._opacity_menu
        menu.addMenu(opacity)
        opacity.setObjectName("mapPointOpacityMenu")
        opacities = QtGui.QActionGroup(opacity)
        for f in POINT_OPACITIES:
            act = opacity.addAction(f"{round(100 * f)}%")
            act.setObjectName(f"mapPointOpacity{round(100 * f)}Action")
            act.setCheckable(True)
            opacities.addAction(act)
            act.triggered.connect(lambda _checked=False, v=f: self.set_point_opacity(v))
            self._opacity_actions[float(f)] = act
        self._sync_menu()

    def _sync_menu(self) -> None:
        """Check the menu entries that match the current options."""
        self._legend_shown_action.blockSignals(True)
        self._legend_shown_action.setChecked(self._legend_wanted)
        self._legend_shown_action.blockSignals(False)
        for key, act in self._corner_actions.items():
            act.setChecked(key == self._legend_corner)
        for px, act in self._size_actions.items():
            act.setChecked(px == self._point_size)
        for f, act in self._opacity_actions.items():
            act.setChecked(abs(f - self._point_opacity) < 1e-9)
        self._size_menu.setTitle(f"Point size ({self._point_size:g} px)")
        self._opacity_menu.setTitle(f"Point opacity ({round(100 * self._point_opacity)}%)")

    def context_menu(self) -> QtWidgets.QMenu:
        """The menu a right click on the map opens."""
        return self._menu

    def _show_context_menu(self, global_pos: QtCore.QPoint) -> None:
        self._hide_hover()
        self._sync_menu()
        self._menu.popup(global_pos)

    def set_images(self, images) -> None:
        """Images for the hover preview: (N, H, W) or (N, H, W, 3) floats in [0, 1], or None."""
        self._images = None if images is None else images

    # --- hit testing ----------------------------------------------------------------

    def pixel_size(self) -> tuple[float, float]:
        """Data units per screen pixel along x and y in the current view."""
        try:
            pw, ph = self._vb.viewPixelSize()
        except Exception:
            pw = ph = 0.0
        if not (pw > 0 and ph > 0 and math.isfinite(pw) and math.isfinite(ph)):
            (x0, x1), (y0, y1) = self._vb.viewRange()
            pw, ph = (x1 - x0) / 400.0 or 1.0, (y1 - y0) / 400.0 or 1.0
        return float(pw), float(ph)

    def hit_test(self, x: float, y: float, radius_px: float = 6) -> int | None:
        """Index of the nearest shown point within ``radius_px`` screen pixels of (x, y).

        No index to build: a box test on the float32 coordinates of the shown
        classes (widened by their rounding error) picks the candidates, and their
        float64 positions decide, ties going to the lowest index.  About 1 ms at
        1,000,000 points, and nothing to rebuild when new codes arrive.
        """
        if len(self._sx) == 0:
            return None
        pw, ph = self.pixel_size()
        rx, ry = radius_px * pw, radius_px * ph
        # float32 keeps 24 bits: a coordinate is off by at most |v| * 2**-24.
        ex = (self._abs_max[0] + abs(x) + rx) * 2.0 ** -20
        ey = (self._abs_max[1] + abs(y) + ry) * 2.0 ** -20
        runs = self._points._shown_runs()
        if not runs:
            return None
        cands = []
        x_lo, x_hi = np.float32(x - rx - ex), np.float32(x + rx + ex)
        with np.errstate(invalid="ignore"):
            for _, s0, s1 in self._merged(runs):
                # Two comparisons over the x column, then y only for the few left.
                m = self._sx[s0:s1] >= x_lo
                m &= self._sx[s0:s1] <= x_hi
                hits = np.flatnonzero(m)
                if len(hits):
                    hits = hits[np.abs(self._sy[s0:s1][hits] - np.float32(y)) <= np.float32(ry + ey)]
                if len(hits):
                    cands.append(hits + s0)
        if not cands:
            return None
        pos = np.concatenate(cands)
        pts = pos if self._order is None else self._order[pos]
        d = self._xy[pts]
        d2 = ((d[:, 0] - x) / pw) ** 2 + ((d[:, 1] - y) / ph) ** 2
        best = d2.min()
        if not best <= radius_px * radius_px:
            return None
        return int(pts[d2 == best].min())

    @staticmethod
    def _merged(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Adjacent class runs joined, so all shown classes are usually one slice."""
        out: list[list[int]] = []
        for c, s0, s1 in runs:
            if out and out[-1][2] == s0:
                out[-1][2] = s1
            else:
                out.append([c, s0, s1])
        return [(c, s0, s1) for c, s0, s1 in out]

    # --- drawing at every size -----------------------------------------------------------

    def set_raster_threshold(self, n: int | None) -> None:
        """Draw the points as a raster when more than ``n`` are in view (None: always one by one)."""
        self._points.set_exact_max(n)

    def raster_threshold(self) -> int:
        return self._points.exact_max()

    def set_progressive(self, on: bool) -> None:
        """While the view moves, show the last rendering moved into place until the next is due
        (at most half of the time goes to rendering).  On by default."""
        self._points.set_progressive(on)

    def render_mode(self) -> str:
        """How the points were last drawn: "exact" (one by one), "raster" or "empty"."""
        return self._points.mode()

    def render_count(self) -> int:
        """How many times the points were rendered (reusing a rendering does not count)."""
        return self._points.renders()

    def rendered_layer(self) -> QtGui.QImage | None:
        """The image of the points as last rendered (the view plus a margin)."""
        return self._points.layer_image()

    def rendered_layer_rect(self) -> QtCore.QRectF:
        """Where that image lies, in the coordinates of what it was painted on (the viewport's
        when painted on screen)."""
        return self._points.layer_rect()

    # --- coordinates ------------------------------------------------------------------

    def viewport(self) -> QtWidgets.QWidget:
        """The widget that receives mouse events (send synthetic events here)."""
        return self._viewport

    def plot_widget(self) -> pg.PlotWidget:
        return self._plot

    def view_box(self) -> pg.ViewBox:
        return self._vb

    def map_to_data(self, viewport_pos: QtCore.QPointF) -> tuple[float, float]:
        """Viewport pixel position -> data coordinates."""
        inv, _ = self._plot.viewportTransform().inverted()
        scene = inv.map(QtCore.QPointF(viewport_pos))
        p = self._vb.mapSceneToView(scene)
        return float(p.x()), float(p.y())

    def map_from_data(self, x: float, y: float) -> QtCore.QPointF:
        """Data coordinates -> viewport pixel position."""
        scene = self._vb.mapViewToScene(QtCore.QPointF(x, y))
        return self._plot.viewportTransform().map(scene)

    @QtCore.Slot(object)
    def _on_manual_range(self, *_args) -> None:
        self._user_navigated = True

    def user_navigated(self) -> bool:
        """True after the user panned or zoomed, until the next auto range."""
        return self._user_navigated

    @QtCore.Slot()
    def auto_range(self) -> None:
        """Fit the view to the points."""
        self._user_navigated = False
        b = self._points_bounds()
        if b is not None:
            xmin, xmax, ymin, ymax = b
            self._vb.setRange(QtCore.QRectF(xmin, ymin, xmax - xmin, ymax - ymin), padding=0.05)
        self._vb.disableAutoRange()
        self._fitted = (self._points_bounds(), self.view_range())

    def _points_bounds(self) -> tuple[float, float, float, float] | None:
        """xmin, xmax, ymin, ymax of the shown classes' points, or None."""
        return self._points.bounds()

    def _follow_points(self) -> None:
        """``auto_range``, unless the view is still the one fitted to points whose bounds
        differ from these by under ``FOLLOW_TOLERANCE`` of the view on every side.

        New codes every epoch move the map's bounds a little; refitting the view
        for that would redraw both axes (a third of the time of a refresh at
        70,000 points) to move it by a fraction of a pixel or two.
        """
        fitted = self._fitted
        b = self._points_bounds()
        if fitted is not None and b is not None and fitted[0] is not None and not self._user_navigated:
            (fb, fr), vr = fitted, self.view_range()
            sx, sy = fr[1] - fr[0], fr[3] - fr[2]
            same_view = np.allclose(vr, fr, rtol=0.0, atol=1e-9 * max(sx, sy, 1e-300))
            tol = FOLLOW_TOLERANCE * np.array([sx, sx, sy, sy])
            if same_view and np.all(np.abs(np.subtract(b, fb)) <= tol):
                return
        self.auto_range()

    def axis_labels(self) -> tuple[str, str]:
        """The axis titles shown (x, y)."""
        return self._axis_labels

    def set_axis_labels(self, x_label: str, y_label: str) -> None:
        if (x_label, y_label) == self._axis_labels and self._item.getAxis("bottom").labelText == x_label:
            return  # unchanged: setting it again would lay the axes out anew
        self._axis_labels = (x_label, y_label)
        fg = self._fg().name()
        self._item.setLabel("bottom", x_label, color=fg)
        self._item.setLabel("left", y_label, color=fg)

    # --- overlays ---------------------------------------------------------------------

    @QtCore.Slot(float, float)
    def set_crosshair(self, x: float, y: float) -> None:
        if self._crosshair_pos == (float(x), float(y)) and self._cross_ring.isVisible():
            return  # e.g. the same point decoded again by a new epoch's decoder: nothing to redraw
        self._crosshair_pos = (float(x), float(y))
        self._cross_v.setPos(float(x))
        self._cross_h.setPos(float(y))
        self._cross_ring.setData([float(x)], [float(y)])
        self._far_text.setPos(float(x), float(y))
        for it in (self._cross_v, self._cross_h, self._cross_ring):
            it.show()
        self._far_text.setVisible(self._far)
        self._place_far_text()

    @QtCore.Slot()
    def hide_crosshair(self) -> None:
        self._crosshair_pos = None
        for it in (self._cross_v, self._cross_h, self._cross_ring, self._far_text):
            it.hide()

    def crosshair(self) -> tuple[float, float] | None:
        return self._crosshair_pos

    @QtCore.Slot(bool)
    def set_far_indicator(self, far: bool) -> None:
        far = bool(far)
        if far == self._far:
            return
        self._far = far
        self._style_crosshair()
        self._far_text.setVisible(far and self._crosshair_pos is not None)
        self._place_far_text()

    def far_indicator(self) -> bool:
        return self._far

    @QtCore.Slot(str)
    def set_message(self, text: str) -> None:
        """Centred message over the map, e.g. "Train a model to see its latent map"."""
        self._message.setText(text or "")
        self._message.setVisible(bool(text))
        self._place_message()

    def message(self) -> str:
        return self._message.text() if self._message.isVisible() else ""

    def set_path(self, xy) -> None:
        """Polyline through (M, 2) points, or None to remove it."""
        if xy is None or len(xy) == 0:
            self._path.setData([], [])
            return
        xy = np.asarray(xy, dtype=np.float64)
        self._path.setData(xy[:, 0], xy[:, 1])

    def set_ellipses(self, ellipses) -> None:
        """Outline ellipses: a list of (center(2,), width, height, angle_deg), or None.

        ``width`` and ``height`` are full axis lengths in data units; the angle
        rotates the width axis counter-clockwise from +x.
        """
        if not ellipses:
            self._ellipses.setData([], [])
            return
        t = np.linspace(0.0, 2.0 * np.pi, 65)
        cos_t, sin_t = np.cos(t), np.sin(t)
        xs, ys = [], []
        for center, width, height, angle in ellipses:
            a = math.radians(float(angle))
            ex, ey = 0.5 * float(width) * cos_t, 0.5 * float(height) * sin_t
            xs.append(float(center[0]) + ex * math.cos(a) - ey * math.sin(a))
            ys.append(float(center[1]) + ex * math.sin(a) + ey * math.cos(a))
            xs.append([np.nan])
            ys.append([np.nan])
        self._ellipses.setData(np.concatenate(xs), np.concatenate(ys))

    def set_selection_mask(self, mask) -> None:
        """Draw the examples where the boolean ``mask`` (N,) is True emphasised (None: none).

        One raster layer of the viewport, redrawn from the selected points at
        each paint: as cheap at a million selected points as the map itself.
        """
        if mask is None:
            self._selection_mask = None
            self._selection_layer.set_points(None)
            return
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if len(m) != len(self._xy):
            raise ValueError(f"the mask has {len(m)} entries, the map {len(self._xy)} points")
        self._selection_mask = m
        self._selection_layer.set_points(self._xy[m] if m.any() else None)

    def selection_mask(self) -> np.ndarray | None:
        return self._selection_mask

    def selection_count(self) -> int:
        """How many points the selection layer draws."""
        return self._selection_layer.count()

    def set_marked(self, indices) -> None:
        """Mark the examples ``indices`` (e.g. a neighbourhood) in their own colour (None: none)."""
        if indices is None or len(indices) == 0:
            self._marked = None
            self._marked_layer.set_points(None)
            return
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.min() < 0 or idx.max() >= len(self._xy):
            raise ValueError(f"marked examples must lie in 0 .. {len(self._xy) - 1}")
        self._marked, self._marked_of = idx, len(self._xy)
        self._marked_layer.set_points(self._xy[idx])

    def marked_count(self) -> int:
        return self._marked_layer.count()

    def set_highlight(self, index: int | None) -> None:
        """Mark the example ``index`` as selected (None to remove): a square, unlike the crosshair's circle."""
        if index is None or not (0 <= int(index) < len(self._xy)):
            self._highlight_index = None
            self._highlight.setData([], [])
            self._highlight_halo.setData([], [])
            return
        self._highlight_index = int(index)
        x, y = self._xy[self._highlight_index]
        self._highlight.setData([x], [y])
        self._highlight_halo.setData([x], [y])

    def highlight(self) -> int | None:
        return self._highlight_index

    def set_underlay(self, image, rect=None) -> None:
        """Show ``image`` under the points, stretched over ``rect`` = (x0, y0, w, h) in data units.

        ``image`` is (H, W) grey or (H, W, 3) colour, floats in [0, 1], oriented
        as it should look on screen: its first row is the top edge of ``rect``
        (y0 + h) and its last row the bottom edge (y0).  None removes it.
        """
        if image is None:
            self._underlay_image = None
            self._underlay_rect = None
            self._underlay.hide()
            self._underlay.clear()
            return
        img = np.asarray(image)
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or img.size == 0:
            raise ValueError(f"an underlay is an (H, W) or (H, W, 3) image, got shape {img.shape}")
        if rect is None or len(rect) != 4:
            raise ValueError("set_underlay needs rect=(x0, y0, width, height)")
        x0, y0, w, h = (float(v) for v in rect)
        if not all(map(math.isfinite, (x0, y0, w, h))) or w <= 0 or h <= 0:
            raise ValueError(f"invalid underlay rectangle {rect}")
        self._underlay_image = img
        self._underlay_rect = (x0, y0, w, h)
        # uint8 is ImageItem's fast path; rows flipped because the map's y axis points up.
        u8 = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8) if img.dtype != np.uint8 else img
        self._underlay.setImage(np.ascontiguousarray(u8[::-1]), levels=(0, 255), autoLevels=False)
        self._underlay.setRect(QtCore.QRectF(x0, y0, w, h))
        self._underlay.show()

    def underlay(self) -> tuple[np.ndarray, tuple[float, float, float, float]] | None:
        """The image and rectangle given to ``set_underlay``, or None."""
        if self._underlay_image is None:
            return None
        return self._underlay_image, self._underlay_rect

    def view_range(self) -> tuple[float, float, float, float]:
        """The visible data range: x0, x1, y0, y1."""
        (x0, x1), (y0, y1) = self._vb.viewRange()
        return float(x0), float(x1), float(y0), float(y1)

    def plot_area_size(self) -> tuple[int, int]:
        """Width and height in pixels of the area the data is drawn in."""
        r = self._vb.sceneBoundingRect()
        return int(r.width()), int(r.height())

    def export_png(self, path) -> bool:
        """Save the plot as it looks now to a PNG file."""
        return bool(self._plot.grab().save(str(path), "PNG"))

    # --- mouse ------------------------------------------------------------------------

    def dragging(self) -> bool:
        """Whether the left button is held after a press on the plot (a click or a drag)."""
        return self._state == self._DRAGGING

    def click_pending(self) -> bool:
        """Whether a click was released so recently that a second press would make it a double click."""
        return self._state == self._CLICKED

    def _in_plot_area(self, viewport_pos: QtCore.QPointF) -> bool:
        inv, _ = self._plot.viewportTransform().inverted()
        scene = inv.map(QtCore.QPointF(viewport_pos))
        if not self._vb.sceneBoundingRect().contains(scene):
            return False
        # Leave clicks on the legend to pyqtgraph (toggle or move an entry).
        if self._legend.isVisible() and self._legend.sceneBoundingRect().contains(scene):
            return False
        return True

    def eventFilter(self, obj: QtCore.QObject, ev: QtCore.QEvent) -> bool:
        if obj is self._plot:
            if ev.type() == QtCore.QEvent.Type.Resize:
                self._place_message()
            return False
        if obj is not self._viewport:
            return False
        t = ev.type()
        Ev = QtCore.QEvent.Type
        left = QtCore.Qt.MouseButton.LeftButton
        if t == Ev.MouseButtonPress and ev.button() == left:
            pos = ev.position()
            if not self._in_plot_area(pos):
                return False
            if self._state == self._CLICKED:
                near = QtGui.QGuiApplication.styleHints().mouseDoubleClickDistance()
                if (pos - self._press_pos).manhattanLength() <= near:
                    # A second press soon after a click and close to it (platforms that
                    # send it as a press): a double click.
                    self._double_click()
                    return True
            self._before_click = (self._crosshair_pos, self._highlight_index)
            self._press_pos = QtCore.QPointF(pos)
            self._press_clock.start()
            self._hover_timer.stop()  # a hover asked for before the press must not show after it
            self._hover_pos = None
            self._hide_hover()
            self._press_data = self.map_to_data(pos)
            self._click_timer.stop()
            self._start_drag()
            return True
        if t == Ev.MouseButtonDblClick and ev.button() == left:
            if not self._in_plot_area(ev.position()) and self._state not in (self._DRAGGING, self._CLICKED):
                return False
            self._double_click()
            return True
        if t == Ev.MouseMove:
            if self._state == self._DRAGGING:
                if not ev.buttons() & left:
                    # The release went elsewhere (a popup took the mouse): end the drag.
                    self._end_press()
                    return True
                moved = ev.position() - self._press_pos
                if moved.manhattanLength() < QtWidgets.QApplication.startDragDistance():
                    return True  # a click's jitter: the press position stays picked
                x, y = self.map_to_data(ev.position())
                self.pointPicked.emit(x, y)
                return True
            if ev.buttons() == QtCore.Qt.MouseButton.NoButton:
                self._hover_pos = QtCore.QPointF(ev.position())
                self._hover_global = ev.globalPosition().toPoint()
                if not self._hover_timer.isActive():
                    self._hover_timer.start()
            else:
                self._hide_hover()
            return False
        if t == Ev.MouseButtonRelease and ev.button() == left:
            if self._state == self._DOUBLE:
                self._state = self._IDLE
                return True
            if self._state != self._DRAGGING:
                return False
            moved = ev.position() - self._press_pos
            self._state = self._IDLE
            if moved.manhattanLength() < QtWidgets.QApplication.startDragDistance():
                # A click: it has picked its point; it selects the example under it at once.
                idx = self.hit_test(*self._press_data)
                if idx is not None:
                    self.exampleClicked.emit(idx)
                left_ms = QtWidgets.QApplication.doubleClickInterval() - self._press_clock.elapsed()
                if left_ms > 0:
                    self._state = self._CLICKED
                    self._click_timer.start(int(left_ms))
            self.dragFinished.emit()
            return True
        if t == Ev.Leave:
            self._hover_timer.stop()
            self._hover_pos = None
            self._hide_hover()
        return False

    def _start_drag(self) -> None:
        """The left button went down: pick the press position at once (moves pick theirs)."""
        self._state = self._DRAGGING
        self.pointPicked.emit(*self._press_data)

    @QtCore.Slot()
    def _on_click_window_over(self) -> None:
        if self._state == self._CLICKED:
            self._state = self._IDLE

    def _end_press(self) -> None:
        was_dragging = self._state == self._DRAGGING
        self._state = self._IDLE
        if was_dragging:
            self.dragFinished.emit()

    def _double_click(self) -> None:
        """Fit the view, and undo what the first click of the double click picked (``pickUndone``)."""
        self._click_timer.stop()
        was_dragging = self._state == self._DRAGGING
        self._state = self._DOUBLE
        if was_dragging:
            self.dragFinished.emit()
        self.auto_range()
        point, example = self._before_click
        self.pickUndone.emit(point, example)

    def _hide_hover(self) -> None:
        self._preview.hide()
        if self._last_hover != -1:
            self._last_hover = -1
            self.hovered.emit(-1)

    @QtCore.Slot()
    def _do_hover(self) -> None:
        if self.dragging() or self._hover_pos is None:
            return
        pos = self._hover_pos
        idx = None
        if self._in_plot_area(pos):
            idx = self.hit_test(*self.map_to_data(pos))
        idx = -1 if idx is None else idx
        if idx == -1:
            self._hide_hover()
            return
        if idx != self._last_hover:
            self._last_hover = idx
            self.hovered.emit(idx)
        self._show_preview(idx, self._hover_global)

    def _show_preview(self, idx: int, global_pos: QtCore.QPoint) -> None:
        img = None
        if self._images is not None and idx < len(self._images):
            try:
                img = array_to_qimage(self._images[idx])
            except ValueError:
                img = None
        label = ""
        if self._labels is not None:
            label = self.class_name(int(self._labels[idx])) + "  \u00b7  "
        self._preview.show_at(global_pos, img, f"{label}#{idx}")

    def hideEvent(self, event: QtGui.QHideEvent) -> None:
        self._hover_timer.stop()
        self._hide_hover()
        super().hideEvent(event)

    def hover_preview(self) -> QtWidgets.QWidget:
        """The floating preview window (for inspection)."""
        return self._preview

    @QtCore.Slot(object, object, object)
    def _on_range_changed(self, *_args) -> None:
        if self._preview.isVisible():
            self._hide_hover()
        self._place_far_text()
        self.viewRangeChanged.emit(*self.view_range())

    @QtCore.Slot(object)
    def _on_view_resized(self, *_args) -> None:
        self._place_message()
        self._place_far_text()
        self._fit_legend()

    # --- theme --------------------------------------------------------------------------

    def _fg(self) -> QtGui.QColor:
        return self.palette().color(QtGui.QPalette.ColorRole.Text)

    def _bg(self) -> QtGui.QColor:
        return self.palette().color(QtGui.QPalette.ColorRole.Base)

    def plot_area_rect(self) -> QtCore.QRect:
        """The area the data is drawn in (inside the axes), in the coordinates of ``plot_widget()``."""
        scene_rect = self._vb.sceneBoundingRect()
        rect = self._plot.mapFromScene(scene_rect).boundingRect()
        return rect.translated(self._viewport.pos())

    def _place_message(self) -> None:
        """Centre the message on the plotting area, wrapped to its width, so it never covers an axis."""
        if not self._message.isVisible():
            return
        area = self.plot_area_rect()
        if area.width() < 10 or area.height() < 10:
            area = self._plot.rect()
        w = max(80, min(area.width() - 24, 420))
        h = min(self._message.heightForWidth(w), max(area.height(), 20))
        self._message.setFixedSize(w, max(h, self._message.fontMetrics().height()))
        self._message.move(area.left() + (area.width() - w) // 2,
                           area.top() + (area.height() - self._message.height()) // 2)

    def message_rect(self) -> QtCore.QRect:
        """Where the message is, in the coordinates of ``plot_widget()`` (empty when there is none)."""
        return self._message.geometry() if self._message.isVisible() else QtCore.QRect()

    def _place_far_text(self) -> None:
        """Put "far from data" beside the crosshair on the side where it fits inside the plot.

        Above and to the right by default; to the left when the right edge is
        nearer than the text is wide, below when the top edge is too near.
        """
        if not (self._far and self._crosshair_pos is not None):
            return
        area = self._vb.sceneBoundingRect()
        p = self._vb.mapViewToScene(QtCore.QPointF(*self._crosshair_pos))
        r = self._far_text.textItem.boundingRect()
        w, h = max(r.width(), 1.0), max(r.height(), 1.0)
        gap = FAR_TEXT_GAP
        room_right, room_left = area.right() - p.x(), p.x() - area.left()
        ax = -gap / w if (room_right >= w + gap or room_right >= room_left) else 1.0 + gap / w
        room_top = p.y() - area.top()
        ay = 1.0 + gap / h if room_top >= h + gap else -gap / h
        self._far_text.setAnchor((ax, ay))

    def far_text_rect(self) -> QtCore.QRectF:
        """Where "far from data" is drawn, in scene coordinates (for inspection)."""
        return self._far_text.mapRectToScene(self._far_text.boundingRect())

    def _style_crosshair(self) -> None:
        colour = self.crosshair_colour()
        width = 2.0 if self._far else 1.2
        pen = pg.mkPen(colour, width=width, style=QtCore.Qt.PenStyle.DashLine)
        self._cross_v.setPen(pen)
        self._cross_h.setPen(pen)
        self._cross_ring.setPen(pg.mkPen(colour, width=2.0))
        self._far_text.setColor(QtGui.QColor(FAR_COLOUR))
        fill = QtGui.QColor(self._bg())
        fill.setAlpha(215)
        self._far_text.fill = pg.mkBrush(fill)
        self._far_text.update()

    def _apply_legend_theme(self) -> None:
        theme_legend(self._legend, self._bg(), self._fg())

    def selection_colour(self) -> QtGui.QColor:
        """Colour of the selected example's square (the palette's accent)."""
        return self.palette().color(QtGui.QPalette.ColorRole.Highlight)

    def crosshair_colour(self) -> QtGui.QColor:
        """Colour of the crosshair: the text colour, or orange when the point is far from the data."""
        return QtGui.QColor(FAR_COLOUR) if self._far else self._fg()

    def _apply_theme(self) -> None:
        bg, fg = self._bg(), self._fg()
        self._plot.setBackground(bg)
        pen = pg.mkPen(fg)
        for side in ("left", "bottom"):
            ax = self._item.getAxis(side)
            ax.setPen(pen)
            ax.setTextPen(pen)
        self._grid.set_colours(bg, fg)
        x_label, y_label = self._axis_labels
        self._item.setLabel("bottom", x_label, color=fg.name())
        self._item.setLabel("left", y_label, color=fg.name())
        self._apply_legend_theme()
        accent = self.palette().color(QtGui.QPalette.ColorRole.Highlight)
        self._path.setPen(pg.mkPen(accent, width=2))
        self._path.setSymbolBrush(pg.mkBrush(accent))
        self._path.setSymbolPen(pg.mkPen(bg, width=1))
        ell = QtGui.QColor(fg)
        ell.setAlpha(190)
        self._ellipses.setPen(pg.mkPen(ell, width=1.5))
        self._highlight.setPen(pg.mkPen(self.selection_colour(), width=2.5))
        self._highlight_halo.setPen(pg.mkPen(bg, width=6.0))
        self._style_crosshair()
        msg_colour = self.palette().color(QtGui.QPalette.ColorRole.PlaceholderText)
        self._message.setStyleSheet(f"color: {msg_colour.name()}; font-size: 13pt;")

    def changeEvent(self, event: QtCore.QEvent) -> None:
        if event.type() in (QtCore.QEvent.Type.PaletteChange,
                            QtCore.QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)
