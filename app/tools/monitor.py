"""Watching the training: KL per latent dimension, collapse and divergence warnings, the decoded manifold.

* A dock "KL per dimension" (beside the loss curves) shows the held-out KL of
  every latent dimension after each epoch, greys the unused ones and counts
  the active units (``EpochSummary.active``: the rule of
  ``app.display.active_dims``).  It warns, in the dock and once in the
  window's message bar, when the posterior collapses (from the second epoch
  on: no active unit, which includes every total held-out KL below
  ``COLLAPSE_KL`` nats) and shows the session's report when training
  diverged; each warning goes away when training recovers.
* "Decoded manifold" (Explore and View menus) tiles the map, under its points,
  with the images the decoder makes at a grid of map positions over the
  visible range: the classic picture of a VAE's latent space.  The grid is
  turned into codes by the projection's inverse (exact for two latent
  dimensions and PCA; interpolated for UMAP, where tiles far from any data
  are dimmed), decoded in one batch by the session's decoder and tiled on
  the tools' worker thread, and refreshed after pans and zooms (at most
  every ``MANIFOLD_THROTTLE_MS``), after every shown epoch and whenever the
  map changes.

The KL bars follow ``Session.epochShown``: while epochs are short they are
redrawn at most twice a second, with the newest epoch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from vae_core.explore import compose_grid

from ..display import ACTIVE_KL, ACTIVE_VARIANCE, decoded_for_display
from ..session import TRAINING, EpochSummary
from ..widgets.kl_bars import KLBars
from ..worker import LatestWins

if TYPE_CHECKING:
    from ..main_window import MainWindow

Slot = QtCore.Slot

#: Total held-out KL (nats per example) below which the posterior has collapsed: no
#: dimension can then reach ACTIVE_KL, so the count of active units is 0 too.
COLLAPSE_KL = ACTIVE_KL
#: Refreshes of the decoded manifold while panning or zooming are this far apart at least.
MANIFOLD_THROTTLE_MS = 60
#: On-screen size (pixels) a manifold tile aims for; the grid has between
#: MANIFOLD_MIN and MANIFOLD_MAX tiles along the longer side of the map, and
#: square tiles.
MANIFOLD_TILE_PX = 44
MANIFOLD_MIN, MANIFOLD_MAX = 12, 20
#: Brightness of manifold tiles far from any data on an interpolated (UMAP) map.
FAR_TILE_BRIGHTNESS = 0.35


def install(window: "MainWindow") -> "Monitor":
    """Add the KL dock and the decoded-manifold layer to ``window``."""
    return Monitor(window)


def collapse_text(test_kl: float, d: int) -> str:
    """The warning of a collapsed posterior: no active unit among ``d``, ``test_kl`` nats of KL in all."""
    dims = "the latent dimension is" if d == 1 else f"none of the {d} latent dimensions is"
    return (f"Posterior collapse: the held-out KL is {test_kl:.3f} nats and {dims} active (at least {ACTIVE_KL:g} "
            f"nats of KL and mean codes with a variance above {ACTIVE_VARIANCE:g}), so the decoder ignores z and "
            "every code decodes to about the same image. It can recover in the next epochs; if it does not, try a "
            "smaller β, a KL warm-up or free bits.")


def collapse_notice(test_kl: float) -> str:
    """The message bar's short form of the collapse warning (the KL dock gives the whole of it)."""
    return (f"Posterior collapse: no latent dimension is active (held-out KL {test_kl:.3f} nats), so the decoder "
            "ignores z. See KL per dimension for what to try.")


def manifold_grid(x0: float, x1: float, y0: float, y1: float, nx: int, ny: int) -> np.ndarray:
    """Centres of an ny x nx grid of cells over the range, (ny * nx, 2), top row first, left to right."""
    xs = x0 + (np.arange(nx) + 0.5) * ((x1 - x0) / nx)
    ys = y1 - (np.arange(ny) + 0.5) * ((y1 - y0) / ny)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


class Monitor(QtCore.QObject):
    """The KL dock and its warnings, and the decoded manifold under the map."""

    def __init__(self, window: "MainWindow"):
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
        self._collapse_text = ""  # the collapse warning now shown in the dock, if any
        self._collapse_notice = ""  # ... and its short form in the message bar
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
        window.view_menu.insertAction(window.log_action, self.kl_dock.toggleViewAction())
        window.view_menu.insertAction(window.log_action, act)
        self._manifold_timer = QtCore.QTimer(self)
        self._manifold_timer.setSingleShot(True)
        self._manifold_timer.timeout.connect(self.refresh_manifold)
        self._worker = LatestWins(self)
        self._worker.done.connect(self._on_manifold_done)
        self._worker.failed.connect(self._on_manifold_failed)
        self._manifold_token = 0  # identifies the newest refresh; older mosaics are dropped
        self._manifold_asked = 0.0
        #: Milliseconds from the last manifold request to its mosaic on the map (grid, inverse, decode, tiling, upload).
        self.last_manifold_ms = float("nan")
        self.manifold_refreshes = 0

        s = self.s
        s.epochShown.connect(self._on_epoch)
        s.markerAdded.connect(self._on_marker)
        s.stateChanged.connect(self._on_state)
        s.message.connect(self._on_message)
        s.historyReplaced.connect(self._on_history_replaced)
        s.mapReady.connect(self._on_map_changed)
        s.mapCleared.connect(self._on_map_cleared)
        s.exampleSelected.connect(self._on_example_selected)
        s.modelForgotten.connect(self._on_model_forgotten)
        self.view.viewRangeChanged.connect(self._on_view_range)

    def close(self) -> bool:
        """Stop the manifold's worker (the window closes); True when it ended in time."""
        return self._worker.close()

    # ------------------------------------------------------------------ KL
    @Slot(object)
    def _on_epoch(self, ev: EpochSummary) -> None:
        kl = np.asarray(ev.kl_per_dim, dtype=np.float64)
        self.kl_bars.set_kl(kl, ev.active)
        # An epoch completed after the user resumed from a divergence: training recovered.
        # (An epoch can also end right after a divergence, before the pause: that is no recovery.)
        if self._resumed_since_divergence:
            self._diverged_text = ""
            self._resumed_since_divergence = False
        self._check_collapse(float(ev.test_kl), ev.active_units, len(kl), int(ev.epoch))
        self._show_warning()

    def _check_collapse(self, test_kl: float, active_units: int, d: int, epoch: int) -> None:
        # The first epoch is not judged: a fresh decoder often learns the mean image
        # first and only then starts to use z.
        collapsed = epoch >= 2 and d > 0 and active_units == 0
        if collapsed:
            text, notice = collapse_text(test_kl, d), collapse_notice(test_kl)
            if not self._collapse_text:
                # Once per collapse in the message bar; the dock keeps it up to date.
                self.w.show_message("warning", notice)
            else:
                self.w.revise_message(self._collapse_notice, notice)  # still showing: keep its figures current
            self._collapse_text, self._collapse_notice = text, notice
        elif self._collapse_text:
            self.w.withdraw_message(self._collapse_notice)
            self._collapse_text = self._collapse_notice = ""

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
        if state == TRAINING and self._diverged_text:
            self._resumed_since_divergence = True

    def _show_warning(self) -> None:
        if self._diverged_text:
            self.kl_bars.set_warning(self._diverged_text, "error")
        elif self._collapse_text:
            self.kl_bars.set_warning(self._collapse_text, "warning")
        else:
            self.kl_bars.set_warning(None)

    def _forget(self) -> None:
        self.kl_bars.clear()
        if self._collapse_text:
            self.w.withdraw_message(self._collapse_notice)
        self._collapse_text = self._collapse_notice = ""
        self._diverged_text = ""
        self._resumed_since_divergence = False
        self._show_warning()

    @Slot()
    def _on_model_forgotten(self) -> None:
        self._forget()
        self._drop_manifold()

    @Slot(object)
    def _on_history_replaced(self, _h: Any) -> None:
        # A new model or an opened checkpoint: the bars start again.
        self._forget()

    # ------------------------------------------------------------ manifold
    def manifold_on(self) -> bool:
        return self.manifold_action.isChecked()

    def _schedule_manifold(self, delay_ms: int = MANIFOLD_THROTTLE_MS) -> None:
        # Throttle: a refresh runs at most every delay_ms and always after the last change.
        if self.manifold_on() and not self._manifold_timer.isActive():
            self._manifold_timer.start(delay_ms)

    def _drop_manifold(self) -> None:
        """No mosaic on the map, and none on its way."""
        self._manifold_timer.stop()
        self._manifold_token += 1
        self._worker.discard()
        self.view.set_underlay(None)

    @Slot(bool)
    def _on_manifold_toggled(self, on: bool) -> None:
        if on:
            self._schedule_manifold(0)
        else:
            self._drop_manifold()

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
        self._drop_manifold()

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
        """Ask for a grid over the visible range to be decoded and tiled; the mosaic goes under the points."""
        s = self.s
        if not self.manifold_on():
            return
        proj, decoder = s.projection, s.decoder
        if decoder is None or proj is None or s.latents is None:
            self._drop_manifold()
            return
        x0, x1, y0, y1 = self.view.view_range()
        if not (x1 > x0 and y1 > y0):
            return
        nx, ny = self.grid_shape()
        self._manifold_token += 1
        token = self._manifold_token
        self._manifold_asked = time.perf_counter()

        def job() -> tuple[int, np.ndarray | None, tuple[float, float, float, float]]:
            grid = manifold_grid(x0, x1, y0, y1, nx, ny)
            try:
                codes, dist = proj.inverse(grid)
            except (ValueError, RuntimeError):  # a projection of other codes
                return token, None, (x0, y0, x1 - x0, y1 - y0)
            images = decoded_for_display(decoder.decode(codes))
            if not proj.is_exact:
                far = np.asarray(dist) > proj.far_threshold
                images[far] *= FAR_TILE_BRIGHTNESS
            return token, compose_grid(images, nx, pad=0), (x0, y0, x1 - x0, y1 - y0)

        self._worker.submit("manifold", job)

    @Slot(str, object)
    def _on_manifold_done(self, _kind: str, result: tuple) -> None:
        token, mosaic, rect = result
        if token != self._manifold_token or not self.manifold_on():
            return  # a newer view, another model or the layer turned off meanwhile
        self.view.set_underlay(mosaic, rect=rect if mosaic is not None else None)
        self.last_manifold_ms = 1e3 * (time.perf_counter() - self._manifold_asked)
        self.manifold_refreshes += 1

    @Slot(str, str)
    def _on_manifold_failed(self, _kind: str, text: str) -> None:
        self.w.show_message("error", f"The decoded manifold could not be drawn: {text}")
