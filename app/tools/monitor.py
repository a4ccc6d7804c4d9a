"""Watching the training: KL per latent dimension, collapse and divergence warnings, the decoded manifold.

* A dock "KL per dimension" (beside the loss curves) shows the held-out KL of
  every latent dimension after each epoch, greys the unused ones and counts
  the active units.  It warns, in the dock and once in the window's message
  bar, when the posterior collapses (from the second epoch on: total
  held-out KL below ``COLLAPSE_KL`` nats, or no active unit) and shows the session's report
  when training diverged; each warning goes away when training recovers.
* "Decoded manifold" (Explore and View menus) tiles the map, under its points,
  with the images the decoder makes at a grid of map positions over the
  visible range: the classic picture of a VAE's latent space.  The grid is
  turned into codes by the projection's inverse (exact for two latent
  dimensions and PCA; interpolated for UMAP, where tiles far from any data
  are dimmed), decoded in one batch by the session's frozen decoder, and
  refreshed after pans and zooms (at most every ``MANIFOLD_THROTTLE_MS``),
  after every epoch and whenever the map changes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ..widgets.kl_bars import KLBars

Slot = QtCore.Slot

#: Total held-out KL (nats per example) below which the posterior has collapsed.
COLLAPSE_KL = 0.05
#: Refreshes of the decoded manifold while panning or zooming are this far apart at least.
MANIFOLD_THROTTLE_MS = 60
#: On-screen size (pixels) a manifold tile aims for; the grid has between
#: MANIFOLD_MIN and MANIFOLD_MAX tiles along the longer side of the map, and
#: square tiles.
MANIFOLD_TILE_PX = 44
MANIFOLD_MIN, MANIFOLD_MAX = 12, 20
#: Brightness of manifold tiles far from any data on an interpolated (UMAP) map.
FAR_TILE_BRIGHTNESS = 0.35


def install(window: Any) -> "Monitor":
    """Add the KL dock and the decoded-manifold layer to ``window``."""
    monitor = Monitor(window)
    window.monitor = monitor
    return monitor


def collapse_text(test_kl: float, active_units: int, d: int) -> str:
    return (f"Posterior collapse: the held-out KL is {test_kl:.3f} nats and {active_units} of {d} latent "
            "dimensions are active, so the decoder ignores z and every code decodes to about the same image. "
            "It can recover in the next epochs; if it does not, try a smaller β, a KL warm-up or free bits.")


def manifold_grid(x0: float, x1: float, y0: float, y1: float, nx: int, ny: int) -> np.ndarray:
    """Centres of an ny x nx grid of cells over the range, (ny * nx, 2), top row first, left to right."""
    xs = x0 + (np.arange(nx) + 0.5) * ((x1 - x0) / nx)
    ys = y1 - (np.arange(ny) + 0.5) * ((y1 - y0) / ny)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def compose_mosaic(images: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """(ny * nx, H, W[, 3]) images, row by row -> one (ny * H, nx * W[, 3]) picture."""
    m, h, w = images.shape[:3]
    rest = images.shape[3:]
    grid = images.reshape(ny, nx, h, w, *rest)
    grid = grid.transpose(0, 2, 1, 3, *range(4, 4 + len(rest)))
    return np.ascontiguousarray(grid.reshape(ny * h, nx * w, *rest))


class Monitor(QtCore.QObject):
    def __init__(self, window: Any):
        super().__init__(window)
        self.w = window
        self.s = window.session
        self.view = window.latent_view

        # KL per dimension, beside the loss curves.
        self.kl_bars = KLBars()
        self.kl_dock = QtWidgets.QDockWidget("KL per dimension", window)
        self.kl_dock.setObjectName("klDock")
        self.kl_dock.setWidget(self.kl_bars)
        window.addDockWidget(QtCore.Qt.BottomDockWidgetArea, self.kl_dock)
        window.splitDockWidget(window.loss_dock, self.kl_dock, QtCore.Qt.Horizontal)
        window.resizeDocks([window.loss_dock, self.kl_dock], [3, 1], QtCore.Qt.Horizontal)
        self._collapse_text = ""  # the collapse warning now shown, if any
        self._diverged_text = ""
        self._resumed_since_divergence = False
        self._last_error = ""

        # The decoded manifold under the map.
        act = QtGui.QAction("Decoded &manifold under the map", window)
        act.setObjectName("manifoldAction")
        act.setCheckable(True)
        tip = ("Tile the visible map, under its points, with what the decoder makes at each place "
               "(follows zoom and pan, refreshed after every epoch)")
        act.setStatusTip(tip)
        act.setToolTip(tip)
        act.toggled.connect(self._on_manifold_toggled)
        self.manifold_action = act
        window.tools_menu.addAction(act)
        v = window.view_menu
        before = getattr(window, "log_action", None)
        if before is not None and before in v.actions():
            v.insertAction(before, self.kl_dock.toggleViewAction())
            v.insertAction(before, act)
        else:
            v.addAction(self.kl_dock.toggleViewAction())
            v.addAction(act)
        self._manifold_timer = QtCore.QTimer(self)
        self._manifold_timer.setSingleShot(True)
        self._manifold_timer.timeout.connect(self.refresh_manifold)
        #: Milliseconds the last manifold refresh took (grid, inverse, decode, mosaic, upload).
        self.last_manifold_ms = float("nan")
        self.manifold_refreshes = 0

        s = self.s
        s.epochArrived.connect(self._on_epoch)
        s.markerAdded.connect(self._on_marker)
        s.stateChanged.connect(self._on_state)
        s.message.connect(self._on_message)
        s.historyReplaced.connect(self._on_history_replaced)
        s.modelLoaded.connect(self._on_model_loaded)
        s.mapReady.connect(self._on_map_changed)
        s.mapCleared.connect(self._on_map_cleared)
        s.exampleSelected.connect(self._on_example_selected)
        if hasattr(s, "modelForgotten"):
            s.modelForgotten.connect(self._on_model_forgotten)
        self.view.viewRangeChanged.connect(self._on_view_range)

    # ------------------------------------------------------------------ KL
    @Slot(object)
    def _on_epoch(self, ev: Any) -> None:
        kl = np.asarray(ev.kl_per_dim, dtype=np.float64)
        self.kl_bars.set_kl(kl, int(ev.active_units))
        # An epoch completed after the user resumed from a divergence: training recovered.
        # (An epoch can also end right after a divergence, before the pause: that is no recovery.)
        if self._resumed_since_divergence:
            self._diverged_text = ""
            self._resumed_since_divergence = False
        self._check_collapse(float(ev.test_kl), int(ev.active_units), len(kl), int(ev.epoch))
        self._show_warning()

    def _check_collapse(self, test_kl: float, active_units: int, d: int, epoch: int) -> None:
        # The first epoch is not judged: a fresh decoder often learns the mean image
        # first and only then starts to use z.
        collapsed = epoch >= 2 and d > 0 and (not test_kl >= COLLAPSE_KL or active_units == 0)
        if collapsed:
            text = collapse_text(test_kl, active_units, d)
            if not self._collapse_text:
                # Once per collapse in the message bar; the dock keeps it up to date.
                self.s.message.emit("warning", text)
            else:
                bar = getattr(self.w, "message_bar", None)
                if bar is not None and bar.isVisible() and bar.text.text() == self._collapse_text:
                    bar.text.setText(text)  # still showing: keep its figures current
            self._collapse_text = text
        elif self._collapse_text:
            self._hide_bar_message(self._collapse_text)
            self._collapse_text = ""

    @Slot(str, str)
    def _on_message(self, level: str, text: str) -> None:
        if level == "error":
            self._last_error = text

    @Slot(int, str)
    def _on_marker(self, step: int, text: str) -> None:
        if not text.startswith("diverged"):
            return
        # The session reports the divergence as an error message just before the marker.
        self._diverged_text = self._last_error or (
            f"Training diverged at step {step}; the model was rolled back. Lower the learning rate and resume.")
        self._resumed_since_divergence = False
        self._show_warning()

    @Slot(str)
    def _on_state(self, state: str) -> None:
        if state == "training" and self._diverged_text:
            self._resumed_since_divergence = True

    def _show_warning(self) -> None:
        if self._diverged_text:
            self.kl_bars.set_warning(self._diverged_text, "error")
        elif self._collapse_text:
            self.kl_bars.set_warning(self._collapse_text, "warning")
        else:
            self.kl_bars.set_warning(None)

    def _hide_bar_message(self, text: str) -> None:
        bar = getattr(self.w, "message_bar", None)
        if bar is not None and bar.isVisible() and bar.text.text() == text:
            bar.hide()
        # The status bar repeats warnings for a few seconds; the first figures may differ since.
        status = self.w.statusBar()
        current = status.currentMessage()
        if current and current.split(":", 1)[0] == text.split(":", 1)[0]:
            status.clearMessage()

    def _forget(self) -> None:
        self.kl_bars.clear()
        if self._collapse_text:
            self._hide_bar_message(self._collapse_text)
        self._collapse_text = ""
        self._diverged_text = ""
        self._resumed_since_divergence = False
        self._show_warning()

    @Slot()
    def _on_model_forgotten(self) -> None:
        self._forget()
        self.view.set_underlay(None)

    @Slot(object)
    def _on_history_replaced(self, h: dict) -> None:
        # A new model or an opened checkpoint: the bars start again.
        self._forget()

    @Slot(object, object, object)
    def _on_model_loaded(self, *_: Any) -> None:
        ckpt = getattr(self.s, "checkpoint", None)
        epochs = getattr(getattr(ckpt, "history", None), "epochs", None) or []
        if not epochs:
            return
        last = epochs[-1]
        kl = last.get("kl_per_dim")
        if kl is None:
            return
        self.kl_bars.set_kl(np.asarray(kl, dtype=np.float64), int(last.get("active_units", 0)))
        self._check_collapse(float(last.get("test_kl", np.sum(kl))), int(last.get("active_units", 0)),
                             len(kl), int(last.get("epoch", 1)))
        self._show_warning()

    # ------------------------------------------------------------ manifold
    def manifold_on(self) -> bool:
        return self.manifold_action.isChecked()

    def _schedule_manifold(self, delay_ms: int = MANIFOLD_THROTTLE_MS) -> None:
        # Throttle: a refresh runs at most every delay_ms and always after the last change.
        if self.manifold_on() and not self._manifold_timer.isActive():
            self._manifold_timer.start(delay_ms)

    @Slot(bool)
    def _on_manifold_toggled(self, on: bool) -> None:
        if on:
            self._schedule_manifold(0)
        else:
            self._manifold_timer.stop()
            self.view.set_underlay(None)

    @Slot(float, float, float, float)
    def _on_view_range(self, *_: float) -> None:
        self._schedule_manifold()

    @Slot(object)
    def _on_map_changed(self, *_: Any) -> None:
        self._schedule_manifold(0)

    @Slot(int, object, object)
    def _on_example_selected(self, *_: Any) -> None:
        # With more than two latent dims shown as two axes, the others are the selected example's.
        self._schedule_manifold(0)

    @Slot(str)
    def _on_map_cleared(self, *_: Any) -> None:
        self._manifold_timer.stop()
        self.view.set_underlay(None)

    def grid_shape(self) -> tuple[int, int]:
        """Tiles along x and y for the map's current size on screen."""
        wpx, hpx = self.view.plot_area_size()
        # Square tiles on screen: the longer side sets the tile size, the shorter one follows.
        long_px, short_px = max(wpx, hpx), min(wpx, hpx)
        n_long = int(np.clip(round(long_px / MANIFOLD_TILE_PX), MANIFOLD_MIN, MANIFOLD_MAX))
        n_short = int(np.clip(round(short_px * n_long / max(long_px, 1)), 1, MANIFOLD_MAX))
        return (n_long, n_short) if wpx >= hpx else (n_short, n_long)

    @Slot()
    def refresh_manifold(self) -> None:
        """Decode a grid over the visible range and lay the mosaic under the points (GUI thread)."""
        s = self.s
        if not self.manifold_on():
            return
        if s.decoder is None or s.projection is None or s.latents is None:
            self.view.set_underlay(None)
            return
        t0 = time.perf_counter()
        x0, x1, y0, y1 = self.view.view_range()
        if not (x1 > x0 and y1 > y0):
            return
        nx, ny = self.grid_shape()
        grid = manifold_grid(x0, x1, y0, y1, nx, ny)
        try:
            codes, dist = s.projection.inverse(grid)
        except (ValueError, RuntimeError):  # a projection being replaced or of other codes
            self.view.set_underlay(None)
            return
        images = s.decode_codes(codes)
        if not getattr(s.projection, "is_exact", True):
            far = np.asarray(dist) > getattr(s.projection, "far_threshold", 3.0)
            if far.any():
                images = images.copy()
                images[far] *= FAR_TILE_BRIGHTNESS
        mosaic = compose_mosaic(images, ny, nx)
        self.view.set_underlay(mosaic, rect=(x0, y0, x1 - x0, y1 - y0))
        self.last_manifold_ms = 1e3 * (time.perf_counter() - t0)
        self.manifold_refreshes += 1
