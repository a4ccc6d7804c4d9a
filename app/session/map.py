"""The latent map: which projection puts the codes on it, its fits in the background, and when it is redrawn.

``LatentMap`` holds the codes the map shows, the projection that lays them
out (and maps any point back to a code) and the layout on screen.  Every fit
runs on the task pool; the GUI thread only receives finished layouts.  Three
kinds of staleness are guarded by tokens: a fit of codes that newer codes
replaced, a UMAP fit that was cancelled after it had already finished, and a
map asked for before the mode changed.  New epochs' codes are shown at most
every ``MAP_INTERVAL_S`` (newest first) and wait while the user drags on the
map, so the points never move under the cursor.

While training runs, a UMAP fit shares the cores with it.  So the layout is
fitted again only as often as keeps the fits within ``UMAP_TRAINING_SHARE``
of the training time: after a fit of ``f`` seconds, with epochs of ``e``
seconds, the next one starts ``ceil(f / (UMAP_TRAINING_SHARE * e))`` epochs
after it (a fit running when newer codes come finishes).  Meanwhile the new
codes are placed on the last layout (``UMAPProjection.transform``), or the
layout stays as it is where the projection cannot place codes.  When
training stops, a layout of older codes is fitted once more.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PySide6 import QtCore

from vae_core import projection as P

from ..worker import Reply, Task, TaskRunner, Tagged

Signal = QtCore.Signal
Slot = QtCore.Slot

#: The map's modes, as the engine names its projections.
MAP_MODES = P.PROJECTION_NAMES
#: From this many codes on, the current projection places new codes at once while the new fit runs.
LARGE_MAP = 20_000
#: While training, a newer epoch replaces a running UMAP fit, unless the map
#: has waited this long for a layout: then the fit finishes first.
UMAP_MAX_WAIT_S = 3.0
#: When the new points are already shown, their background fit waits this long.
FIT_AFTER_PAINT_S = 0.06
#: Seconds between two progress reports of a background projection.
PROGRESS_INTERVAL_S = 0.1
#: New epochs redraw the map at most this often.
MAP_INTERVAL_S = 0.5
#: While training, UMAP fits take at most this share of the training time.
UMAP_TRAINING_SHARE = 0.1


@dataclass(frozen=True)
class MapView:
    """What the map draws: positions, classes, axis titles, and whether to fit the view to them."""

    xy: np.ndarray  # (N, 2) float32
    labels: np.ndarray | None
    label_names: list[str] | None
    x_label: str
    y_label: str
    autorange: bool
    latent_dim: int


def captions(proj: "P.Projection") -> tuple[str, str]:
    """The map's axis titles: the projection's, and under a layout fitted on landmarks, how the others were placed."""
    x, y = proj.axis_labels()
    landmarks = proj.landmark_indices if isinstance(proj, P.UMAPProjection) else None
    if landmarks is not None:
        x = f"{x}  ·  fitted on {len(landmarks):,} landmarks, the other points placed by their nearest ones"
    return x, y


def every(progress: Callable[[float, str], None], interval_s: float) -> Callable[[float, str], None]:
    """``progress`` called at most once per ``interval_s`` (the first call always goes through).

    A UMAP fit reports after each of its epochs, a few milliseconds apart on
    small maps; every report is a queued signal whose handling in the GUI
    thread waits for the interpreter lock, so unthrottled they crowd out
    everything else the GUI thread has to do.
    """
    last = [-math.inf]

    def report(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - last[0] >= interval_s:
            last[0] = now
            progress(fraction, message)

    return report


class LatentMap(QtCore.QObject):
    """The codes on the map and the projection between them and the map's plane."""

    ready = Signal(object)  # MapView
    progress = Signal(float, str)  # fraction, text; fraction 1.0 hides the progress
    message = Signal(str, str)  # level, text

    def __init__(self, tasks: TaskRunner, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._tasks = tasks
        self.mode: str = "raw"
        self.dims: tuple[int, int] = (0, 1)
        self.projection: P.Projection | None = None
        self.xy: np.ndarray | None = None
        self._codes: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._label_names: list[str] | None = None
        self._selected: int | None = None
        self._token = 0  # identifies the newest map request; results of earlier fits are dropped
        self._fit_task: Task | None = None
        self._umap_task: Task | None = None
        self._umap_token = 0  # identifies the newest UMAP fit
        self._umap_again = False  # newer codes came while a fit that had to finish ran
        self._umap_cancelled: Task | None = None  # the last cancelled fit, perhaps still finishing an epoch
        self._umap_waiting_since = 0.0  # when the map last got a UMAP layout or UMAP was chosen
        self._prev_umap: np.ndarray | None = None
        self._warm: str | None = None
        self._last_shown = -math.inf
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timer)
        self._on_hold = False
        self._held_back = False
        self._training = False
        self._epoch_s = math.nan  # the latest epoch's duration
        self._umap_fit_s = math.nan  # the last UMAP fit's duration
        self._epochs_since_fit = 0  # epochs since the last UMAP fit started
        self._umap_for: np.ndarray | None = None  # the codes of the last UMAP fit (started or done)

    # ------------------------------------------------------------ inputs
    @property
    def codes(self) -> np.ndarray | None:
        return self._codes

    def set_codes(self, codes: np.ndarray, labels: np.ndarray | None, label_names: list[str] | None,
                  now: bool = False, epoch_s: float | None = None) -> None:
        """New codes: shown at once when ``now`` (and the view fitted to them), else at the next redraw.

        ``epoch_s``: the codes are a training epoch's, which took that many seconds.
        """
        if epoch_s is not None:
            self._epoch_s = float(epoch_s)
            self._epochs_since_fit += 1
        self._codes = codes
        self._labels = labels if labels is not None and len(labels) == len(codes) else None
        self._label_names = label_names
        if now:
            self.refresh(autorange=True)
        else:
            self.schedule()

    def clear(self) -> None:
        """No codes any more: drop the projection, the layout and every fit on its way."""
        self._codes = self._labels = self._label_names = None
        self.projection = None
        self.xy = None
        self._selected = None
        self._prev_umap = None
        self._umap_for = None
        self._umap_fit_s = math.nan
        self._epochs_since_fit = 0
        self._token += 1
        self._timer.stop()
        self._held_back = False
        if self._fit_task is not None:
            self._fit_task.cancel()
            self._fit_task = None
        self._cancel_umap()

    def set_training(self, on: bool, refit: bool = True) -> None:
        """Training runs (``on``) or has stopped; when it stops, a UMAP layout of older codes is fitted again
        (unless ``refit`` is False: newer codes are on their way)."""
        was, self._training = self._training, bool(on)
        if was and not on and refit and self.mode == "umap" and self._codes is not None \
                and self._codes is not self._umap_for and self._codes.shape[1] > 2:
            self.refresh()

    @property
    def training(self) -> bool:
        return self._training

    def select(self, index: int | None) -> None:
        """The selected example: a map of two latent dims keeps the others at its code."""
        self._selected = index
        self._update_base()

    def set_mode(self, mode: str, dims: tuple[int, int] | None = None) -> None:
        """Show the codes as two latent dims ("raw"), their PCA plane or a UMAP layout."""
        if mode not in MAP_MODES:
            raise ValueError(f"unknown map mode {mode!r}; choose one of {', '.join(MAP_MODES)}")
        if mode != "umap":
            self._cancel_umap()
        elif self.mode != "umap":
            self._umap_waiting_since = time.monotonic()
        self.mode = mode
        if dims is not None:
            self.dims = (int(dims[0]), int(dims[1]))
        # The last UMAP layout is kept across modes: coming back starts from it.
        self.refresh(autorange=True)

    def hold(self, on: bool) -> None:
        """Keep the map as it is while ``on`` (a drag on it); then show the newest codes."""
        self._on_hold = bool(on)
        if on:
            if self._timer.isActive():
                self._timer.stop()
                self._held_back = True
        elif self._held_back:
            self._held_back = False
            self.schedule()

    def schedule(self) -> None:
        """Redraw with the newest codes soon: at most every MAP_INTERVAL_S, never during a hold."""
        if self._on_hold:
            self._held_back = True
            return
        if not self._timer.isActive():
            wait = max(0.0, MAP_INTERVAL_S - (time.monotonic() - self._last_shown))
            self._timer.start(int(1000 * wait))

    # ------------------------------------------------------------ state
    @property
    def pending(self) -> bool:
        """Newer codes wait to be shown (for the next redraw or the end of a hold)."""
        return self._timer.isActive() or self._held_back

    @property
    def fitting(self) -> bool:
        """A projection is being fitted in the background."""
        return self._fit_task is not None or self._umap_task is not None

    @property
    def umap_task(self) -> Task | None:
        """The UMAP fit running now, if any."""
        return self._umap_task

    # ------------------------------------------------------------ fitting
    @Slot()
    def _on_timer(self) -> None:
        self.refresh()

    def refresh(self, autorange: bool = False) -> None:
        """Lay out the current codes in the current mode (in the background)."""
        codes = self._codes
        if codes is None:
            return
        self._timer.stop()
        self._last_shown = time.monotonic()
        d = codes.shape[1]
        mode = self.mode if d > 2 else "raw"
        autorange = autorange or self.xy is None
        self._token += 1  # results of earlier background fits are stale now
        if mode == "umap":
            self._start_umap(codes)
            return
        if mode == "raw":
            i, j = self.dims if d > 2 else (0, 1)
            i, j = min(i, d - 1), min(j, d - 1 if d > 1 else 1)  # d = 1: y = 0 (see RawDims)
            if i == j:
                j = (i + 1) % d
            proj: P.Projection = P.RawDims(i, j)
        else:
            proj = P.PCAProjection()
        self._fit(proj, codes, autorange)

    def _fit(self, proj: P.Projection, codes: np.ndarray, autorange: bool) -> None:
        """Fit a two-dims or PCA map on a pool thread.

        The fit builds the layout's index (for "far from data"): about 0.1 s
        at 70,000 codes.  From LARGE_MAP codes on, the current projection of
        the same kind places the new codes at once (for two latent dims
        exactly where the new fit puts them, for PCA on the previous axes
        until the new ones arrive).
        """
        cur = self.projection
        quick = None
        if len(codes) >= LARGE_MAP and _same_kind(cur, proj) and cur.dim == codes.shape[1]:
            quick = cur.transform(codes)
            self._show(quick, captions(cur), autorange)
        exact_quick = quick is not None and isinstance(proj, P.RawDims)

        def job(progress: Any, cancelled: Callable[[], bool]) -> tuple[P.Projection, np.ndarray, bool, bool]:
            if quick is not None:
                # Let the GUI thread draw the new points first, without sharing the cores.
                time.sleep(FIT_AFTER_PAINT_S)
            xy = proj.fit(codes, cancel=cancelled)
            return proj, xy, autorange and quick is None, exact_quick

        if self._fit_task is not None:
            self._fit_task.cancel()
        self._fit_task = self._tasks.start(Tagged(self._token, job), self._on_fitted, self._on_task_failed)

    @Slot(object)
    def _on_fitted(self, reply: Reply) -> None:
        if reply.token != self._token:
            return  # newer codes or another mode were asked for meanwhile
        self._fit_task = None
        if reply.error is not None:
            self.message.emit("error", f"The map could not be drawn: {reply.error}")
            return
        proj, xy, autorange, already_shown = reply.value
        if self._codes is None or len(self._codes) != len(xy):
            return
        if already_shown and self.xy is not None and len(self.xy) == len(xy):
            # Two latent dims: the points on screen are these already; only the inverse changes.
            self.projection = proj
            self._update_base()
            return
        self._install(proj, xy, autorange)

    @Slot(str)
    def _on_task_failed(self, text: str) -> None:
        self.message.emit("error", text)

    def _install(self, proj: P.Projection, xy: np.ndarray, autorange: bool) -> None:
        self.projection = proj
        self._update_base()
        self._show(xy, captions(proj), autorange)

    def _show(self, xy: np.ndarray, axis_labels: tuple[str, str], autorange: bool) -> None:
        self.xy = np.asarray(xy, dtype=np.float32)
        labels = self._labels if self._labels is not None and len(self._labels) == len(self.xy) else None
        d = self._codes.shape[1] if self._codes is not None else 2
        self.ready.emit(MapView(self.xy, labels, self._label_names, axis_labels[0], axis_labels[1], autorange, d))

    def _update_base(self) -> None:
        proj, codes = self.projection, self._codes
        if not isinstance(proj, P.RawDims) or codes is None:
            return
        i = self._selected
        if i is not None and 0 <= i < len(codes):
            proj.base = np.array(codes[i], dtype=np.float32)
        else:
            proj.base = np.zeros(codes.shape[1], dtype=np.float32)

    # ------------------------------------------------------------ UMAP
    @Slot()
    def warm_umap(self) -> None:
        """Import umap and compile its layout code in the background, once per process.

        Started by the program a moment after its window shows, so that a
        user's first UMAP map does not wait for it.  Nothing is shown unless
        it fails.
        """
        if self._warm is not None:
            return
        self._warm = "warming"

        def job(progress: Any, cancelled: Callable[[], bool]) -> float:
            return P.warm_umap()

        self._tasks.start(job, self._on_umap_warm, self._on_umap_warm_failed)

    @property
    def umap_warm_state(self) -> str | None:
        """None (not started), "warming", "ready" or "failed"."""
        return self._warm

    @Slot(object)
    def _on_umap_warm(self, _seconds: float) -> None:
        self._warm = "ready"

    @Slot(str)
    def _on_umap_warm_failed(self, _text: str) -> None:
        # The UMAP map will report the problem if the user asks for one.
        self._warm = "failed"

    def _cancel_umap(self) -> None:
        """Stop the running UMAP fit (between two of its epochs) and hide its progress."""
        if self._umap_task is None:
            return
        self._umap_task.cancel()
        self._umap_cancelled = self._umap_task
        self._umap_task = None
        self._umap_again = False
        self._umap_token += 1
        self.progress.emit(1.0, "")

    def _umap_due(self, n: int) -> bool:
        """While training: whether a UMAP fit of ``n`` codes may start now (see the module's docstring)."""
        proj = self.projection
        if not (isinstance(proj, P.UMAPProjection) and proj.is_fitted and self.xy is not None and len(self.xy) == n):
            return True  # no layout of these examples to place codes on
        if not (math.isfinite(self._umap_fit_s) and math.isfinite(self._epoch_s) and self._epoch_s > 0):
            return True
        every = math.ceil(self._umap_fit_s / (UMAP_TRAINING_SHARE * self._epoch_s))
        return self._epochs_since_fit >= every

    def _place_on_layout(self, codes: np.ndarray) -> None:
        """Show ``codes`` on the current UMAP layout (in the background); the layout stays where it cannot place them."""
        proj = self.projection
        if not isinstance(proj, P.UMAPProjection) or not proj.is_fitted or self.xy is None or len(self.xy) != len(codes):
            return

        def job(progress: Any, cancelled: Callable[[], bool]) -> np.ndarray | None:
            try:
                return proj.transform(codes)
            except NotImplementedError:
                return None

        if self._fit_task is not None:
            self._fit_task.cancel()
        self._fit_task = self._tasks.start(Tagged(self._token, job), self._on_placed, self._on_task_failed)

    @Slot(object)
    def _on_placed(self, reply: Reply) -> None:
        if reply.token != self._token:
            return  # newer codes, a new layout or another mode meanwhile
        self._fit_task = None
        if reply.error is not None:
            self.message.emit("error", f"The map could not be drawn: {reply.error}")
            return
        xy = reply.value
        if xy is not None and self.projection is not None and self._codes is not None and len(xy) == len(self._codes):
            self._show(xy, captions(self.projection), autorange=False)

    def _start_umap(self, codes: np.ndarray) -> None:
        if self._umap_task is not None:
            if self._training:
                # Training: the running fit finishes; its layout then takes the newest codes.
                self._umap_again = True
                self._place_on_layout(codes)
                return
            # Newest codes first: drop the running fit, unless the map has
            # already waited so long for a layout that it had better finish.
            if time.monotonic() - self._umap_waiting_since < UMAP_MAX_WAIT_S:
                self._cancel_umap()
            else:
                self._umap_again = True
                return
        if self._training and not self._umap_due(len(codes)):
            self._place_on_layout(codes)
            return
        # Start from the previous layout of the same examples, so the map
        # moves only as much as the codes did (the fit aligns its result to it).
        init = self._prev_umap if self._prev_umap is not None and len(self._prev_umap) == len(codes) else None
        self._umap_for = codes
        codes = codes.copy()
        # Landmarks are drawn class by class where the examples have labels.
        labels = self._labels if self._labels is not None and len(self._labels) == len(codes) else None
        self._umap_again = False
        self._umap_token += 1
        self._epochs_since_fit = 0
        previous = self._umap_cancelled

        def job(progress: Any, cancelled: Callable[[], bool]) -> tuple[P.UMAPProjection, np.ndarray, bool, float]:
            if previous is not None:
                # A cancelled fit stops within one of its epochs: wait for it
                # rather than run two fits at once on the same cores.
                while not previous.finished_event.wait(0.05):
                    if cancelled():
                        raise P.ProjectionCancelled("the projection was cancelled")

            def report(fraction: float, text: str = "") -> None:
                if not cancelled():  # a cancelled fit's last epoch must not show its progress again
                    progress(fraction, text)

            t0 = time.perf_counter()
            proj = P.UMAPProjection(init=init, random_state=0)
            xy = proj.fit(codes, progress=every(report, PROGRESS_INTERVAL_S), cancel=cancelled, labels=labels)
            return proj, xy, init is None, time.perf_counter() - t0

        self.progress.emit(0.0, "UMAP: starting")
        self._umap_task = self._tasks.start(Tagged(self._umap_token, job), self._on_umap_done, self._on_task_failed,
                                            self._on_umap_progress)

    @Slot(float, str)
    def _on_umap_progress(self, fraction: float, text: str) -> None:
        if self._umap_task is not None:
            self.progress.emit(fraction, text)

    @Slot(object)
    def _on_umap_done(self, reply: Reply) -> None:
        if reply.token != self._umap_token:
            return  # a fit that was cancelled after it had finished
        self._umap_task = None
        self._umap_cancelled = None
        self.progress.emit(1.0, "")
        if reply.error is not None:
            self._umap_again = False
            self.message.emit("error", f"UMAP failed: {reply.error}")
            return
        proj, xy, first, seconds = reply.value
        self._umap_fit_s = float(seconds)
        codes = self._codes
        if self.mode == "umap" and codes is not None and len(xy) == len(codes):
            self._prev_umap = np.asarray(xy)
            self._umap_waiting_since = time.monotonic()
            self._token += 1
            self._install(proj, xy, autorange=first)
        if self._umap_again and self.mode == "umap" and codes is not None:
            self._umap_again = False
            self._start_umap(codes)


def _same_kind(cur: P.Projection | None, new: P.Projection) -> bool:
    """``cur`` is fitted and lays codes out as ``new`` will (same class; same two dims for raw maps)."""
    if cur is None or type(cur) is not type(new) or not cur.is_fitted:
        return False
    if isinstance(cur, P.RawDims) and isinstance(new, P.RawDims):
        return (cur.i, cur.j) == (new.i, new.j)
    return True
