"""KL divergence per latent dimension as bars, refreshed after every epoch.

One bar per latent dimension, in dimension order (z1 on the left), height the
held-out KL(q(z_j|x) || N(0, 1)) averaged over examples, in nats.  The owner
says which dimensions are active (``app.display.active_dims``: KL of at least
``INACTIVE_KL`` nats and posterior means that vary over the data); the others
carry (almost) no information about x and are drawn grey.  A dashed line
marks the KL threshold.  The title gives the number of active units and the
total KL.  A warning line under the plot says when the
posterior collapsed or training diverged (the owner decides when).

Numpy in, no torch.  After every epoch only the bars change: the axis
ticks and ranges are set again only when the number of dimensions changes or
the tallest bar leaves the range (rounded up to 1, 2, 2.5 or 5 times a power
of ten), so an update costs one redraw of the bars.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from ..display import ACTIVE_KL, ACTIVE_VARIANCE

__all__ = ["KLBars", "INACTIVE_KL"]

#: Dimensions with a held-out KL below this many nats are inactive (the rule: ``app.display.active_dims``).
INACTIVE_KL = ACTIVE_KL
ACTIVE_COLOUR = "#3b8bd0"
INACTIVE_COLOUR = "#9a9a9a"
WARNING_COLOURS = {"error": ("#b3261e", "#fdecea"), "warning": ("#8a5a00", "#fff4d6")}


def round_up(v: float) -> float:
    """The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least ``v`` (> 0)."""
    exp = math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10.0 ** exp >= v * (1 - 1e-12):
            return m * 10.0 ** exp
    return 10.0 ** (exp + 1)


class KLBars(QtWidgets.QWidget):
    """Bars of KL per latent dimension with an "active units" title and a warning line."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("klBars")
        self._kl = np.zeros(0)
        self._active = np.zeros(0, dtype=bool)
        self._title = ""
        self._y_top = 0.0  # the top of the vertical range now shown (0: not set)
        self._ghost_key: tuple | None = None  # (inactive dims, y_top) the grey columns were drawn for

        self._plot = pg.PlotWidget()
        self._plot.setObjectName("klPlot")
        self._plot.setMenuEnabled(False)
        self._plot.setMouseEnabled(x=False, y=False)
        self._plot.hideButtons()
        item = self._plot.getPlotItem()
        item.showGrid(x=False, y=True, alpha=0.15)
        item.setLabel("left", "KL (nats)")
        item.getAxis("left").enableAutoSIPrefix(False)  # plain nats, no "(x0.001)"
        # Faint full-height columns behind the inactive dimensions, so that a
        # dimension with (almost) zero KL is still visibly there, greyed out.
        self._ghosts = pg.BarGraphItem(x=[], height=[], width=0.8, pen=None)
        self._ghosts.setZValue(-1)
        item.addItem(self._ghosts, ignoreBounds=True)
        self._bars = pg.BarGraphItem(x=[], height=[], width=0.8, pen=None)
        item.addItem(self._bars)
        self._threshold = pg.InfiniteLine(pos=INACTIVE_KL, angle=0, movable=False)
        self._threshold.setZValue(5)
        self._threshold.setToolTip(f"{INACTIVE_KL:g} nats: below it a dimension carries no information")
        item.addItem(self._threshold, ignoreBounds=True)

        # The title is a wrapping label, not the plot's own title, which would
        # force the plot to be as wide as the text.
        self._title_label = QtWidgets.QLabel()
        self._title_label.setObjectName("klTitle")
        self._title_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self._title_label.setWordWrap(True)

        self._warning = QtWidgets.QLabel()
        self._warning.setObjectName("klWarning")
        self._warning.setWordWrap(True)
        self._warning.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self._warning.hide()
        self._warning_level = ""

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        lay.addWidget(self._warning)
        lay.addWidget(self._title_label)
        lay.addWidget(self._plot, 1)
        self._plot.setToolTip(
            "Held-out KL(q(z_j|x) ‖ N(0, 1)) of each latent dimension, averaged over examples, in nats.\n"
            f"Blue: an active dimension, with at least {INACTIVE_KL:g} nats of KL (the dashed line) and posterior\n"
            f"means that vary over the data (variance above {ACTIVE_VARIANCE:g}). Grey: inactive, unused by the model.")
        self._apply_theme()
        self.clear()

    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(380, 260)

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(220, 160)

    # --- data ---------------------------------------------------------------------------

    def set_kl(self, kl_per_dim, active) -> None:
        """Show ``kl_per_dim`` (d,) in nats; ``active`` (d,) bool says which dimensions are active."""
        kl = np.asarray(kl_per_dim, dtype=np.float64).ravel()
        d = len(kl)
        if d == 0:
            self.clear()
            return
        active = np.asarray(active, dtype=bool).ravel()
        if active.shape != kl.shape:
            raise ValueError(f"{len(active)} active flags for {d} dimensions")
        new_d = d != len(self._kl)
        self._kl = kl.copy()
        self._active = active.copy()
        heights = np.where(np.isfinite(kl), np.maximum(kl, 0.0), 0.0)
        inactive = ~active
        active_brush, inactive_brush = pg.mkBrush(ACTIVE_COLOUR), pg.mkBrush(INACTIVE_COLOUR)
        brushes = [inactive_brush if off else active_brush for off in inactive]
        x = np.arange(1, d + 1, dtype=np.float64)
        self._bars.setOpts(x=x, height=heights, width=0.8, brushes=brushes, pen=None)
        item = self._plot.getPlotItem()
        if new_d:
            self._set_ticks(d)
            item.setXRange(0.4, d + 0.6, padding=0)
        want = max(float(heights.max()) * 1.08, 3 * INACTIVE_KL)
        if new_d or not (0.4 * self._y_top <= want <= self._y_top):
            self._y_top = round_up(want)
            item.setYRange(0.0, self._y_top, padding=0)
        ghost_key = (tuple(np.flatnonzero(inactive)), self._y_top)
        if ghost_key != self._ghost_key:
            self._ghost_key = ghost_key
            ghost = QtGui.QColor(INACTIVE_COLOUR)
            ghost.setAlpha(45)
            self._ghosts.setOpts(x=x[inactive], height=np.full(int(inactive.sum()), self._y_top), width=0.8,
                                 brush=pg.mkBrush(ghost), pen=None)
        total = float(np.nansum(kl))
        self._title = f"active units: {int(active.sum())} / {d} · total KL {total:.2f} nats"
        self._title_label.setText(self._title)

    def clear(self) -> None:
        self._kl = np.zeros(0)
        self._active = np.zeros(0, dtype=bool)
        self._y_top = 0.0
        self._ghost_key = None
        self._bars.setOpts(x=[], height=[], width=0.8, brushes=None, pen=None)
        self._ghosts.setOpts(x=[], height=[], width=0.8, pen=None)
        self._title = "KL per latent dimension: train a model to see it"
        self._title_label.setText(self._title)
        self._plot.getPlotItem().getAxis("bottom").setTicks(None)

    def _set_ticks(self, d: int) -> None:
        # Every label while they fit (about 36 px each), else z1 and every k-th
        # dimension for a round k, so labels never overlap at any width.
        fit = max(4, int(self._plot.width() // 36))
        step = next((k for k in (1, 2, 5, 10, 20, 50, 100) if d / k <= fit), 200)
        if step == 2:
            labelled = list(range(1, d + 1, 2))  # z1, z3, ...: z1 next to z2 would crowd
        else:
            labelled = [j for j in range(1, d + 1) if j == 1 or j % step == 0]
        major = [(j, f"z{j}") for j in labelled]
        minor = [(j, "") for j in range(1, d + 1) if j not in labelled]
        self._plot.getPlotItem().getAxis("bottom").setTicks([major, minor])

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        if len(self._kl):
            self._set_ticks(len(self._kl))

    def kl(self) -> np.ndarray:
        return self._kl.copy()

    def bar_heights(self) -> np.ndarray:
        h = self._bars.opts.get("height")
        return np.zeros(0) if h is None else np.asarray(h, dtype=np.float64)

    def inactive_dims(self) -> list[int]:
        """0-based indices of the dimensions drawn grey."""
        return [int(j) for j in np.flatnonzero(~self._active)]

    def bar_colours(self) -> list[str]:
        brushes = self._bars.opts.get("brushes") or []
        return [QtGui.QBrush(b).color().name() for b in brushes]

    def tick_labels(self) -> list[str]:
        ticks = self._plot.getPlotItem().getAxis("bottom")._tickLevels
        return [text for _, text in ticks[0]] if ticks else []

    def title(self) -> str:
        return self._title

    def plot_widget(self) -> pg.PlotWidget:
        return self._plot

    # --- warning ------------------------------------------------------------------------

    def set_warning(self, text: str | None, level: str = "warning") -> None:
        """Show ``text`` above the bars ("warning" or "error" colours); None or "" hides it."""
        if not text:
            self._warning.clear()
            self._warning.hide()
            self._warning_level = ""
            return
        fg, bg = WARNING_COLOURS.get(level, WARNING_COLOURS["warning"])
        self._warning_level = level
        self._warning.setStyleSheet(f"QLabel {{ color: {fg}; background: {bg}; border: 1px solid {fg};"
                                    " border-radius: 3px; padding: 3px; }")
        self._warning.setText("⚠ " + text)
        self._warning.show()

    def warning(self) -> str:
        return self._warning.text() if not self._warning.isHidden() else ""

    def warning_level(self) -> str:
        return self._warning_level

    # --- theme --------------------------------------------------------------------------

    def _fg(self) -> QtGui.QColor:
        return self.palette().color(QtGui.QPalette.ColorRole.Text)

    def _apply_theme(self) -> None:
        fg = self._fg()
        bg = self.palette().color(QtGui.QPalette.ColorRole.Base)
        self._plot.setBackground(bg)
        pen = pg.mkPen(fg)
        item = self._plot.getPlotItem()
        for side in ("left", "bottom"):
            ax = item.getAxis(side)
            ax.setPen(pen)
            ax.setTextPen(pen)
        item.setLabel("left", "KL (nats)", color=fg.name())
        line = QtGui.QColor(fg)
        line.setAlpha(160)
        self._threshold.setPen(pg.mkPen(line, width=1.2, style=QtCore.Qt.PenStyle.DashLine))

    def changeEvent(self, event: QtCore.QEvent) -> None:
        if event.type() in (QtCore.QEvent.Type.PaletteChange,
                            QtCore.QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)
