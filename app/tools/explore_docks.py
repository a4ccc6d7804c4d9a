"""Per-example and latent-space tools of the Explore menu.

* Posterior of the selected example: q(z|x) drawn on the map as its 1- and
  2-sigma ellipses, and decodes of samples z ~ q(z|x) next to the example and
  the decode of its mean;
* ELBO of the selected example: reconstruction and KL terms, the ELBO, an
  importance-weighted estimate of log p(x) and the gap between them, computed
  in the background on a copy of the model;
* Interpolate between two points (linear or spherical), drawn on the map;
* Latent traversals: one row per latent dimension, ordered by its KL;
* Samples from the prior.

Each tool lives in a dock (tabified together, hidden until first used; the
window puts them beside the KL bars under the map) with an Export button.  The math is in ``vae_core.explore``.  The GUI
thread only asks and paints: decoding, tiling and placing codes on the map
run on the tools' own worker thread (newest request of each tool first), the
ELBO estimate on the session's task pool.  An example's mean and variance
are the session's stored codes of it (the encoder's output for the weights
the decoder has).  Open tools follow ``Session.epochShown``: while epochs
are short they are redrawn at most twice a second.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from vae_core import explore as X

from ..display import ACTIVE_KL, active_dims, code_text, decoded_for_display, example_title, image_for_display
from ..session import EpochSummary
from ..widgets.decode_canvas import ImageGrid
from ..worker import LatestWins, Task

if TYPE_CHECKING:
    from vae_core.inference import Decoder
    from vae_core.projection import Projection

    from ..main_window import MainWindow

Slot = QtCore.Slot

#: Decodes of z ~ q(z|x) shown next to the example and the decode of its mean.
POSTERIOR_SAMPLES = 14
#: Latent traversals show at most this many dimensions (those with the most KL).
MAX_TRAVERSAL_ROWS = 32
#: Images written to files are enlarged this many times (nearest neighbour).
EXPORT_SCALE = 4
#: Pixels between the tiles of a grid.
GRID_PAD = 2

TIPS = {
    "recon": "−E_q[log p(x|z)]: how badly the decoder rebuilds x from codes drawn from q(z|x) "
             "(Monte Carlo mean over 1000 draws, ± its standard error); lower is better",
    "kl": "KL(q(z|x) || p(z)): how many nats the code of x costs relative to the prior N(0, I) (closed form, exact)",
    "elbo": "ELBO = E_q[log p(x|z)] − KL(q(z|x) || p(z)): a lower bound on log p(x); higher is better",
    "iwae": "IWAE_k: importance-weighted estimate of log p(x) with k samples from q(z|x); "
            "it rises towards log p(x) as k grows",
    "gap": "IWAE_k − ELBO ≈ KL(q(z|x) || p(z|x)): how far the encoder's guess is from the true posterior "
           "(an estimate from below; it grows towards the true value as k grows)",
    "ess": "Effective sample size of the importance weights p(x, z)/q(z|x) among the 1000 draws: "
           "near 1000 when q(z|x) is close to the true posterior, near 1 when one draw dominates",
}


def install(window: "MainWindow") -> "ExploreTools":
    """Add the Explore menu's per-example and latent-space tools to ``window``."""
    return ExploreTools(window)


def columns_for(n: int, width: float, height: float) -> int:
    """Columns for ``n`` square tiles in a ``width`` x ``height`` area so they come out as large as possible."""
    if n <= 1 or width <= 0 or height <= 0:
        return max(1, n)
    best, best_side = 1, -1.0
    for ncols in range(1, n + 1):
        side = min(width / ncols, height / -(-n // ncols))
        if side > best_side + 1e-9:
            best, best_side = ncols, side
    return best


def _tiled(images: np.ndarray, ncols: int) -> tuple[np.ndarray, int, int]:
    """(N, H, W[, 3]) images in rows of ``ncols`` -> (grid, rows, columns) as ``ImageGrid.set_grid`` takes them."""
    ncols = max(1, min(int(ncols), len(images)))
    return X.compose_grid(images, ncols, pad=GRID_PAD), -(-len(images) // ncols), ncols


def _place(codes: np.ndarray, projection: "Projection", placer: "X.CodePlacer | None") -> np.ndarray:
    """Map positions of ``codes``: through the projection, or by nearest stored codes where it has no formula."""
    try:
        return X.place_codes(codes, projection)
    except ValueError:
        return X.place_codes(codes, None, placer)


def _nats(v: float, se: float | None = None) -> str:
    s = f"{v:+.2f}".replace("-", "−")
    if se is not None and math.isfinite(se):
        s += f" ± {se:.2f}"
    return s + " nats"


#: Tool docks shorter than this show their explanation as the tooltip of an info button, leaving the room to the images.
INFO_MIN_HEIGHT = 320


class _InfoLabel(QtWidgets.QLabel):
    """A dock's explanation; its text is also the tooltip of the dock's info button."""

    def __init__(self, button: QtWidgets.QToolButton):
        super().__init__()
        self._button = button

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(text)
        self._button.setToolTip(text)


class _Dock(QtWidgets.QDockWidget):
    """A tool dock: an explanation line, a controls row, the content, an export row.

    The body scrolls when the dock is smaller than it, so a dock never asks
    for more room than the window gives it (its images shrink instead); in a
    short dock the explanation moves into the tooltip of an info button.
    """

    def __init__(self, title: str, name: str, parent: QtWidgets.QWidget):
        super().__init__(title, parent)
        self.setObjectName(name)
        body = QtWidgets.QWidget()
        self.layout_ = QtWidgets.QVBoxLayout(body)
        self.layout_.setContentsMargins(6, 4, 6, 6)
        self.info_button = QtWidgets.QToolButton()
        self.info_button.setObjectName(name.replace("Dock", "InfoButton"))
        self.info_button.setIcon(self.style().standardIcon(QtWidgets.QStyle.StandardPixmap.SP_MessageBoxInformation))
        self.info_button.setIconSize(QtCore.QSize(16, 16))
        self.info_button.setAutoRaise(True)
        self.info_button.clicked.connect(self._show_info_tip)
        self.info_button.hide()
        self.info = _InfoLabel(self.info_button)
        self.info.setObjectName(name.replace("Dock", "Info"))
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.layout_.addWidget(self.info)
        self.controls = QtWidgets.QHBoxLayout()
        self.layout_.addLayout(self.controls)
        self.exports = QtWidgets.QHBoxLayout()
        self.exports.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setObjectName(name.replace("Dock", "Scroll"))
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.NoFrame)
        scroll.setWidget(body)
        scroll.setMinimumHeight(80)
        self.setWidget(scroll)

    def add_content(self, widget: QtWidgets.QWidget, stretch: int = 1) -> None:
        self.layout_.addWidget(widget, stretch)

    def finish(self) -> None:
        self.controls.addWidget(self.info_button)
        self.layout_.addLayout(self.exports)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        short = self.height() < INFO_MIN_HEIGHT
        self.info.setVisible(not short)
        self.info_button.setVisible(short)

    @Slot()
    def _show_info_tip(self) -> None:
        b = self.info_button
        QtWidgets.QToolTip.showText(b.mapToGlobal(b.rect().bottomLeft()), self.info.text(), b)

    def add_export(self, name: str, text: str, slot: Callable) -> QtWidgets.QPushButton:
        b = QtWidgets.QPushButton(text)
        b.setObjectName(name)
        b.clicked.connect(slot)
        self.exports.addWidget(b)
        return b

    @property
    def is_open(self) -> bool:
        """Shown (possibly as a tab behind another): the tool is on."""
        return not self.isHidden()


class ElboPanel(QtWidgets.QWidget):
    """Labels for the terms of one example's ELBO, the k of IWAE_k and a Compute button."""

    computeRequested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("elboPanel")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.title = QtWidgets.QLabel("Select an example on the map, then press Compute.")
        self.title.setObjectName("elboTitle")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        form = QtWidgets.QFormLayout()
        form.setLabelAlignment(QtCore.Qt.AlignRight)
        self.values: dict[str, QtWidgets.QLabel] = {}
        rows = (("recon", "Reconstruction −E_q[log p(x|z)]"), ("kl", "KL(q(z|x) ‖ p(z))"),
                ("elbo", "ELBO (higher is better)"), ("iwae", "log p(x) ≈ IWAE_k"),
                ("gap", "Gap IWAE_k − ELBO ≈ KL(q ‖ p(z|x))"), ("ess", "Effective sample size"))
        for key, text in rows:
            name = QtWidgets.QLabel(text)
            value = QtWidgets.QLabel("–")
            value.setObjectName(f"elbo{key.capitalize()}Value")
            value.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
            for w in (name, value):
                w.setToolTip(TIPS[key])
            form.addRow(name, value)
            self.values[key] = value
        lay.addLayout(form)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("k ="))
        self.k_spin = QtWidgets.QSpinBox()
        self.k_spin.setObjectName("iwaeKSpin")
        self.k_spin.setRange(1, 100_000)
        self.k_spin.setValue(1000)
        self.k_spin.setSingleStep(100)
        self.k_spin.setGroupSeparatorShown(True)
        self.k_spin.setToolTip("Importance samples for IWAE_k: more samples, a tighter bound on log p(x), "
                               "and a longer computation (it runs in the background)")
        row.addWidget(self.k_spin)
        self.compute_button = QtWidgets.QPushButton("Compute")
        self.compute_button.setObjectName("elboComputeButton")
        self.compute_button.setToolTip("Estimate the terms for the selected example (in the background, on a copy of the model)")
        self.compute_button.clicked.connect(self.computeRequested)
        row.addWidget(self.compute_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("elboProgress")
        self.progress.setRange(0, 1000)
        self.progress.setMaximumHeight(14)
        self.progress.setTextVisible(False)
        self.progress.hide()
        lay.addWidget(self.progress)
        self.status = QtWidgets.QLabel("")
        self.status.setObjectName("elboStatus")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        note = QtWidgets.QLabel("All figures in nats for this one example. The ELBO and log p(x) are log-likelihoods: "
                                "negative numbers, higher is better. log p(x) − ELBO = KL(q(z|x) ‖ p(z|x)) exactly.")
        note.setWordWrap(True)
        note.setEnabled(False)
        lay.addWidget(note)
        lay.addStretch(1)
        self.result: dict | None = None

    def set_computing(self, text: str) -> None:
        for v in self.values.values():
            v.setText("computing…")
        self.status.setText(text)
        self.progress.setValue(0)
        self.progress.show()

    def set_progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(1000 * fraction))
        if text:
            self.status.setText(f"computing… {text}")

    def set_result(self, r: dict, title: str) -> None:
        self.result = dict(r)
        self.progress.hide()
        self.title.setText(title)
        v = self.values
        v["recon"].setText(_nats(r["recon"], r["recon_se"]) + " (lower is better)")
        v["kl"].setText(_nats(r["kl"]))
        v["elbo"].setText(_nats(r["elbo"], r["recon_se"]))
        v["iwae"].setText(_nats(r["iwae"]) + f" (k = {r['k']:,})")
        v["gap"].setText(_nats(r["gap"]))
        v["ess"].setText(f"{r['ess']:.0f} of {r['mc_samples']:,} draws")
        self.status.setText("")

    def set_failed(self, text: str) -> None:
        self.progress.hide()
        for v in self.values.values():
            v.setText("–")
        self.status.setText(text)

    def clear(self, title: str) -> None:
        self.result = None
        self.progress.hide()
        self.title.setText(title)
        for v in self.values.values():
            v.setText("–")
        self.status.setText("")


class ExploreTools(QtCore.QObject):
    """Builds the docks and actions and keeps them up to date with the session."""

    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        self.w = window
        self.s = window.session
        self.view = window.latent_view
        self._worker = LatestWins(self)
        self._gen = 0  # counts forgotten models: results made with an earlier one are dropped
        #: The nearest-stored-codes placer of the map it was built for: ((id(latents), id(xy)), placer).
        self._placer: tuple[tuple[int, int], X.CodePlacer] | None = None
        self._posterior_seed = 0
        self._prior_seed = 0
        self._prior_z: np.ndarray | None = None
        self._elbo_seed = 1
        self._elbo_task: Task | None = None
        self._elbo_request: tuple[int, int, int] | None = None
        self._elbo_note = ""
        #: Interpolation ends: ("example", index) or ("code", z).
        self._ends: dict[str, tuple[str, Any] | None] = {"A": None, "B": None}
        self._interp_frames: np.ndarray | None = None
        self._traverse_frames: np.ndarray | None = None
        self._dirty: set[str] = set()
        self._refresh_timer = QtCore.QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(0)
        self._refresh_timer.timeout.connect(self._refresh)
        #: Columns the posterior and prior grids were last tiled with (they follow their widgets' shape).
        self._grid_columns: dict[str, int] = {}
        self._build_docks()
        self._build_actions()
        self._wire()
        self._sync_enabled()
        for grid in (self.posterior_grid, self.prior_grid):
            grid.installEventFilter(self)

    def _columns(self, kind: str, grid: ImageGrid, n: int) -> int:
        """Columns for ``n`` images in ``grid`` now (remembered: a resize that changes them tiles the grid again)."""
        ncols = columns_for(n, grid.width() - 8, grid.height() - 8)
        self._grid_columns[kind] = ncols
        return ncols

    def eventFilter(self, obj: QtCore.QObject, ev: QtCore.QEvent) -> bool:  # noqa: N802 - Qt's name
        if ev.type() == QtCore.QEvent.Type.Resize:
            for kind, grid, n in (("posterior", self.posterior_grid, POSTERIOR_SAMPLES + 2),
                                  ("prior", self.prior_grid, int(self.prior_count.value()))):
                if obj is grid and kind in self._grid_columns and grid.isVisible() \
                        and columns_for(n, grid.width() - 8, grid.height() - 8) != self._grid_columns[kind]:
                    self._schedule(kind)
        return False

    # ------------------------------------------------------------------ build
    def _new_dock(self, title: str, name: str) -> _Dock:
        dock = _Dock(title, name, self.w)
        self.w.addDockWidget(QtCore.Qt.BottomDockWidgetArea, dock)
        if self.docks:
            self.w.tabifyDockWidget(self.docks[0], dock)
        dock.hide()
        self.docks.append(dock)
        return dock

    def _build_docks(self) -> None:
        self.docks: list[_Dock] = []

        # Posterior of the selected example.
        d = self.posterior_dock = self._new_dock("Posterior", "posteriorDock")
        self.posterior_on_map = QtWidgets.QCheckBox("Draw q(z|x) on the map")
        self.posterior_on_map.setObjectName("posteriorOnMapCheck")
        self.posterior_on_map.setChecked(True)
        self.posterior_on_map.setToolTip("Ellipses at 1 and 2 standard deviations of q(z|x) around the example's mean code")
        self.posterior_on_map.toggled.connect(self._on_posterior_check)
        resample = QtWidgets.QPushButton("New samples")
        resample.setObjectName("posteriorResampleButton")
        resample.setToolTip("Draw other codes z ~ q(z|x)")
        resample.clicked.connect(self._resample_posterior)
        d.controls.addWidget(self.posterior_on_map)
        d.controls.addStretch(1)
        d.controls.addWidget(resample)
        self.posterior_grid = ImageGrid()
        self.posterior_grid.setObjectName("posteriorGrid")
        self.posterior_grid.set_hint("Click an example on the map")
        d.add_content(self.posterior_grid)
        d.add_export("posteriorExportPngButton", "Export PNG…", self._export_posterior_png)
        d.finish()
        d.info.setText("A data point maps to a region of latent space, not a point.")

        # ELBO of the selected example.
        d = self.elbo_dock = self._new_dock("ELBO", "elboDock")
        self.elbo_panel = ElboPanel()
        self.elbo_panel.computeRequested.connect(self.compute_elbo)
        d.add_content(self.elbo_panel)
        d.add_export("elboExportButton", "Export CSV…", self._export_elbo)
        d.finish()
        d.info.setText("The two terms of the ELBO for one example and how far the bound is from log p(x).")

        # Interpolation.
        d = self.interp_dock = self._new_dock("Interpolation", "interpolateDock")
        ends = QtWidgets.QGridLayout()
        self.end_labels: dict[str, QtWidgets.QLabel] = {}
        for r, end in enumerate(("A", "B")):
            lab = QtWidgets.QLabel(f"{end}: not set")
            lab.setObjectName(f"interp{end}Label")
            self.end_labels[end] = lab
            sel = QtWidgets.QPushButton(f"{end} = selected example")
            sel.setObjectName(f"interp{end}SelectedButton")
            sel.setToolTip("The mean code of the example clicked on the map")
            sel.clicked.connect(self._set_end_selected)
            last = QtWidgets.QPushButton(f"{end} = last decoded point")
            last.setObjectName(f"interp{end}LastButton")
            last.setToolTip("The code of the last point clicked or dragged over on the map")
            last.clicked.connect(self._set_end_last)
            for c, w in enumerate((sel, last, lab)):
                ends.addWidget(w, r, c)
        ends.setColumnStretch(2, 1)
        d.layout_.insertLayout(1, ends)
        self.interp_mode = QtWidgets.QComboBox()
        self.interp_mode.setObjectName("interpModeCombo")
        self.interp_mode.addItem("Linear", "linear")
        self.interp_mode.setItemData(0, "A straight line from A to B", QtCore.Qt.ToolTipRole)
        self.interp_mode.addItem("Spherical (slerp)", "spherical")
        self.interp_mode.setItemData(1, "Turn along a great circle while the length moves from |A| to |B|: the path "
                                        "stays at norms typical of the prior instead of cutting through its "
                                        "low-density middle", QtCore.Qt.ToolTipRole)
        self.interp_mode.currentIndexChanged.connect(self._on_interp_setting)
        self.interp_steps = QtWidgets.QSpinBox()
        self.interp_steps.setObjectName("interpStepsSpin")
        self.interp_steps.setRange(2, 64)
        self.interp_steps.setValue(10)
        self.interp_steps.setToolTip("Number of codes on the path, both ends included")
        self.interp_steps.valueChanged.connect(self._on_interp_setting)
        d.controls.addWidget(QtWidgets.QLabel("Path:"))
        d.controls.addWidget(self.interp_mode)
        d.controls.addWidget(QtWidgets.QLabel("steps"))
        d.controls.addWidget(self.interp_steps)
        d.controls.addStretch(1)
        self.interp_grid = ImageGrid()
        self.interp_grid.setObjectName("interpGrid")
        self.interp_grid.set_hint("Set A and B")
        d.add_content(self.interp_grid)
        d.add_export("interpExportPngButton", "Export PNG strip…", self._export_interp_png)
        d.add_export("interpExportGifButton", "Export GIF…", self._export_interp_gif)
        d.finish()

        # Traversals.
        d = self.traverse_dock = self._new_dock("Traversals", "traverseDock")
        self.traverse_steps = QtWidgets.QSpinBox()
        self.traverse_steps.setObjectName("traverseStepsSpin")
        self.traverse_steps.setRange(3, 21)
        self.traverse_steps.setValue(9)
        self.traverse_steps.setToolTip("Images per row")
        self.traverse_range = QtWidgets.QDoubleSpinBox()
        self.traverse_range.setObjectName("traverseRangeSpin")
        self.traverse_range.setRange(0.5, 6.0)
        self.traverse_range.setSingleStep(0.5)
        self.traverse_range.setValue(3.0)
        self.traverse_range.setPrefix("±")
        self.traverse_range.setToolTip("Each dimension sweeps from −r to +r (prior standard deviations)")
        for w in (self.traverse_steps, self.traverse_range):
            w.valueChanged.connect(self._on_traverse_setting)
        d.controls.addWidget(QtWidgets.QLabel("values"))
        d.controls.addWidget(self.traverse_steps)
        d.controls.addWidget(QtWidgets.QLabel("range"))
        d.controls.addWidget(self.traverse_range)
        d.controls.addStretch(1)
        self.traverse_grid = ImageGrid()
        self.traverse_grid.setObjectName("traverseGrid")
        d.add_content(self.traverse_grid)
        d.add_export("traverseExportPngButton", "Export PNG…", self._export_traverse_png)
        d.add_export("traverseExportGifButton", "Export GIF…", self._export_traverse_gif)
        d.finish()

        # Prior samples.
        d = self.prior_dock = self._new_dock("Prior samples", "priorDock")
        resample = QtWidgets.QPushButton("Resample")
        resample.setObjectName("priorResampleButton")
        resample.setToolTip("Draw new codes z ~ N(0, I)")
        resample.clicked.connect(self._resample_prior)
        self.prior_count = QtWidgets.QSpinBox()
        self.prior_count.setObjectName("priorCountSpin")
        self.prior_count.setRange(4, 256)
        self.prior_count.setValue(64)
        self.prior_count.setToolTip("Number of samples")
        self.prior_count.valueChanged.connect(self._resample_prior)
        d.controls.addWidget(QtWidgets.QLabel("samples"))
        d.controls.addWidget(self.prior_count)
        d.controls.addStretch(1)
        d.controls.addWidget(resample)
        self.prior_grid = ImageGrid()
        self.prior_grid.setObjectName("priorGrid")
        d.add_content(self.prior_grid)
        d.add_export("priorExportPngButton", "Export PNG…", self._export_prior_png)
        d.finish()
        d.info.setText("Decodes of z ~ p(z) = N(0, I): what the model generates on its own. The same codes are "
                       "decoded again after every epoch, so you can watch them change.")

        for dock in self.docks:
            dock.visibilityChanged.connect(self._on_dock_visibility)

    def _build_actions(self) -> None:
        menu = self.w.tools_menu
        spec = (
            ("posteriorAction", "&Posterior of the selected example", self.show_posterior,
             "Draw q(z|x) of the clicked example on the map and decode samples from it"),
            ("elboAction", "&ELBO of the selected example", self.show_elbo,
             "Reconstruction, KL, ELBO and an importance-weighted estimate of log p(x) for one example"),
            ("interpolateAction", "&Interpolate between two points", self.show_interpolation,
             "Decode a linear or spherical path between two codes"),
            ("traverseAction", "Latent &traversals", self.show_traversals,
             "Sweep each latent dimension from −3 to 3, dimensions ordered by their KL"),
            ("priorSamplesAction", "&Samples from the prior", self.show_prior,
             "Decode codes drawn from N(0, I)"),
        )
        self.actions: dict[str, QtGui.QAction] = {}
        for name, text, slot, tip in spec:
            act = QtGui.QAction(text, self.w)
            act.setObjectName(name)
            act.setStatusTip(tip)
            act.setToolTip(tip)
            act.triggered.connect(slot)
            menu.addAction(act)
            self.actions[name] = act
        self._tips = {name: tip for name, _, _, tip in spec}

    def _wire(self) -> None:
        s = self.s
        s.stateChanged.connect(self._on_state)
        s.epochShown.connect(self._on_epoch)
        s.mapReady.connect(self._on_map)
        s.mapCleared.connect(self._on_map_cleared)
        s.exampleSelected.connect(self._on_example)
        s.modelLoaded.connect(self._on_model_loaded)
        s.modelForgotten.connect(self._forget_model)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)

    def close(self) -> bool:
        """Stop the tools' worker (the window closes); True when it ended in time."""
        if self._elbo_task is not None:
            self._elbo_task.cancel()
        return self._worker.close()

    # ---------------------------------------------------------------- helpers
    def _message(self, level: str, text: str) -> None:
        self.w.show_message(level, text)

    def _has_model(self, say: bool = True) -> bool:
        if self.s.decoder is None:
            if say:
                self._message("warning", "Train a model (or open a checkpoint) first: the tools decode with it.")
            return False
        return True

    def _latent_dim(self) -> int:
        return self.s.decoder.latent_dim if self.s.decoder is not None else 0

    def _example_name(self, index: int) -> str:
        ds = self.s.dataset
        return example_title(index, ds.labels if ds is not None else None, ds.label_names if ds is not None else None)

    def _posterior_of(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """mu and logvar of q(z|x) for example ``index``: the session's stored codes of it."""
        mu, lv = self.s.latents, self.s.latent_logvar
        if mu is None or lv is None or not (0 <= index < len(mu)) or mu.shape[1] != self._latent_dim():
            return None
        return mu[index].astype(np.float64), lv[index].astype(np.float64)

    def _selected(self) -> int | None:
        i = self.s.selected
        if i is None or self.s.dataset is None or not (0 <= i < self.s.dataset.n):
            return None
        return int(i)

    def _map_ready(self) -> bool:
        s = self.s
        return (s.projection is not None and s.xy is not None and s.latents is not None
                and len(s.xy) == len(s.latents) and s.latents.shape[1] == self._latent_dim())

    def _placer_maker(self) -> Callable[[], X.CodePlacer]:
        """A function giving the nearest-stored-codes placer of the current map (built once, in the worker)."""
        latents, xy = self.s.latents, self.s.xy
        key = (id(latents), id(xy))

        def placer() -> X.CodePlacer:
            cached = self._placer
            if cached is not None and cached[0] == key:
                return cached[1]
            made = X.CodePlacer(latents, xy)
            self._placer = (key, made)
            return made

        return placer

    def _projection_places(self) -> bool:
        try:
            self.s.projection.transform(np.zeros((1, self._latent_dim()), np.float32))
            return True
        except (NotImplementedError, ValueError):
            return False

    def _schedule(self, *tools: str) -> None:
        self._dirty.update(tools)
        self._refresh_timer.start()

    @Slot()
    def _refresh(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if self.s.decoder is None:
            return
        if "posterior" in dirty and self.posterior_dock.is_open:
            self.update_posterior()
        if "interp" in dirty and self.interp_dock.is_open:
            self.update_interpolation()
        if "traverse" in dirty and self.traverse_dock.is_open:
            self.update_traversals()
        if "prior" in dirty and self.prior_dock.is_open:
            self.update_prior()

    def _open(self, dock: _Dock) -> None:
        self.w.show_tool_dock(dock)

    def _submit(self, kind: str, job: Callable[[], dict]) -> None:
        """Run ``job`` on the tools' worker; its dict reaches ``_show_<kind>``, unless the model changed meanwhile."""
        gen = self._gen

        def run() -> tuple[int, dict]:
            return gen, job()

        self._worker.submit(kind, run)

    @Slot(str, object)
    def _on_done(self, kind: str, result: tuple[int, dict]) -> None:
        gen, r = result
        if gen != self._gen:
            return  # made with a model that is gone
        {"posterior": self._show_posterior, "interp": self._show_interpolation,
         "traverse": self._show_traversals, "prior": self._show_prior}[kind](r)

    @Slot(str, str)
    def _on_failed(self, kind: str, text: str) -> None:
        self._message("error", f"Could not decode for the {kind} tool: {text}")

    # -------------------------------------------------------- session → tools
    def _sync_enabled(self) -> None:
        has = self.s.decoder is not None
        for name, act in self.actions.items():
            act.setEnabled(has)
            act.setToolTip(self._tips[name] if has else self._tips[name] + " (train a model first)")

    @Slot(str)
    def _on_state(self, _state: str) -> None:
        self._sync_enabled()

    @Slot(object)
    def _on_epoch(self, ev: EpochSummary) -> None:
        self._sync_enabled()
        self._schedule("posterior", "interp", "traverse", "prior")
        if self.elbo_panel.result is not None and self.elbo_dock.is_open:
            self.elbo_panel.status.setText(f"The model has trained on (epoch {ev.epoch}): press Compute to update.")

    @Slot(object)
    def _on_map(self, _m: Any) -> None:
        self._sync_enabled()
        self._schedule("posterior", "interp")

    @Slot(str)
    def _on_map_cleared(self, _text: str) -> None:
        # The codes are gone (another dataset, or no model): so is every example's place and selection.
        self.view.set_ellipses(None)
        self.view.set_path(None)
        self._forget_examples()
        self._sync_enabled()

    def _forget_examples(self) -> None:
        """Drop what was computed for examples of the codes that were on the map."""
        if self._elbo_task is not None:
            self._elbo_task.cancel()
            self._elbo_task = None
        self._elbo_request = None
        self.elbo_panel.clear("Select an example on the map, then press Compute.")
        for end, e in self._ends.items():
            if e is not None and e[0] == "example":
                self._ends[end] = None
        self._update_end_labels()
        self._placer = None
        self.posterior_grid.clear()
        self.posterior_dock.info.setText("A data point maps to a region of latent space, not a point.")

    @Slot(int, str, object, object)
    def _on_example(self, index: int, _title: str, _original: Any, _recon: Any) -> None:
        self._schedule("posterior", "traverse")
        if self.elbo_dock.is_open and self.s.decoder is not None:
            req = self._elbo_request
            if req is None or req[0] != index:
                self.compute_elbo()

    @Slot(object, object, object)
    def _on_model_loaded(self, *_args: Any) -> None:
        self._sync_enabled()
        self._schedule("posterior", "interp", "traverse", "prior")

    @Slot()
    def _forget_model(self) -> None:
        """The model is going (reset, or another one opened): drop everything computed with it."""
        self._gen += 1
        self._worker.discard()
        self._dirty.clear()
        self._forget_examples()
        self._ends = {"A": None, "B": None}
        self._update_end_labels()
        self._prior_z = None
        self._interp_frames = self._traverse_frames = None
        for g in (self.interp_grid, self.traverse_grid, self.prior_grid):
            g.clear()
        self.interp_dock.info.setText("Decode the codes on a path from A to B.")
        self.traverse_dock.info.setText("")
        self.view.set_ellipses(None)
        self.view.set_path(None)
        self._sync_enabled()

    @Slot(bool)
    def _on_dock_visibility(self, _visible: bool) -> None:
        # A dock behind another tab stays on; a closed dock turns its overlay off.
        if not self.posterior_dock.is_open:
            self.view.set_ellipses(None)
        if not self.interp_dock.is_open:
            self.view.set_path(None)

    # -------------------------------------------------------------- posterior
    @Slot()
    def show_posterior(self) -> None:
        if not self._has_model():
            return
        self.elbo_dock.show()
        self._open(self.posterior_dock)
        if self._selected() is None:
            self._message("warning", "Click an example on the map first: the posterior tool shows q(z|x) for that example.")
            self.posterior_grid.clear()
            self.posterior_grid.set_hint("Click an example on the map")
            return
        self.update_posterior()
        req = self._elbo_request
        if req is None or req[0] != self._selected():
            self.compute_elbo()

    @Slot(bool)
    def _on_posterior_check(self, on: bool) -> None:
        if on:
            self._schedule("posterior")
        else:
            self.view.set_ellipses(None)

    @Slot()
    def _resample_posterior(self) -> None:
        self._posterior_seed += 1
        self._schedule("posterior")

    def update_posterior(self) -> None:
        """Decode samples of the selected example's q(z|x) and fit its ellipses on the map (on the worker)."""
        idx = self._selected()
        decoder = self.s.decoder
        post = self._posterior_of(idx) if idx is not None else None
        if post is None or decoder is None:
            self.view.set_ellipses(None)
            return
        mu, lv = post
        seed = self._posterior_seed
        original = image_for_display(self.s.dataset.images[idx])
        on_map = self.posterior_on_map.isChecked() and self._map_ready()
        proj = self.s.projection
        placer = self._placer_maker() if on_map else None
        extent = float(np.ptp(self.s.xy, axis=0).max()) if on_map and len(self.s.xy) > 1 else 0.0
        name = self._example_name(idx)
        ncols = self._columns("posterior", self.posterior_grid, POSTERIOR_SAMPLES + 2)

        def job() -> dict:
            z = X.posterior_sample_codes(mu, lv, POSTERIOR_SAMPLES, seed)
            decoded = decoded_for_display(decoder.decode(np.vstack([mu[None, :], z]).astype(np.float32)))
            grid = _tiled(np.concatenate([original[None], decoded]), ncols)
            ell = None
            if on_map:
                try:
                    try:
                        proj.transform(mu[None, :].astype(np.float32))
                        use = None
                    except NotImplementedError:
                        use = placer()
                    ell = X.posterior_ellipse(mu, lv, proj, placer=use, seed=seed)
                except ValueError:
                    ell = None
            return {"index": idx, "name": name, "grid": grid, "ellipses": ell, "mu": mu, "sigma": np.exp(0.5 * lv),
                    "extent": extent}

        self._submit("posterior", job)

    def _show_posterior(self, r: dict) -> None:
        if r["index"] != self._selected():
            return  # another example was clicked meanwhile; its own request follows
        self.posterior_grid.set_grid(*r["grid"], pad=GRID_PAD)
        info = (f"Example {r['name']}. Left to right: the example, the decode of its mean μ, then "
                f"{POSTERIOR_SAMPLES} decodes of z ~ q(z|x): a data point maps to a region of latent space, not a point. "
                f"μ = {code_text(r['mu'])}, σ = {code_text(r['sigma'])} (the prior has σ = 1).")
        ell = r["ellipses"] if self.posterior_dock.is_open and self.posterior_on_map.isChecked() else None
        self.view.set_ellipses(ell)
        if ell is not None:
            how = ("exact: this map is linear" if ell.exact else
                   "approximate: this map has no formula for new codes, so 500 samples of q(z|x) are placed by their "
                   "nearest stored codes and an ellipse is fitted to them")
            info += f" On the map: the 1σ and 2σ ellipses of q(z|x) (39% and 86% of its mass in the map's plane), {how}."
            if r["extent"] > 0.0 and ell[0][1] > r["extent"]:
                info += (" The 1σ ellipse is wider than the whole cloud of codes (zoom out to see it): for this example "
                         "q(z|x) is still close to the prior.")
        self.posterior_dock.info.setText(info)

    # ------------------------------------------------------------------- ELBO
    @Slot()
    def show_elbo(self) -> None:
        if not self._has_model():
            return
        self._open(self.elbo_dock)
        if self._selected() is None:
            self._message("warning", "Click an example on the map first: the ELBO is computed for that example.")
            return
        req = self._elbo_request
        if req is None or req[0] != self._selected() or self.elbo_panel.result is None:
            self.compute_elbo()

    @Slot()
    def compute_elbo(self) -> None:
        """Estimate the selected example's ELBO terms and IWAE_k on the task pool."""
        if not self._has_model():
            return
        idx = self._selected()
        if idx is None:
            self._message("warning", "Click an example on the map first: the ELBO is computed for that example.")
            return
        if self._elbo_task is not None:
            self._elbo_task.cancel()
        encoder = self.s.encoder  # the weights of this moment: the session replaces it after every epoch
        raw = np.asarray(self.s.dataset.images[idx:idx + 1])
        x = raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else np.array(raw, dtype=np.float32)
        k = int(self.elbo_panel.k_spin.value())
        seed = self._elbo_seed
        self._elbo_seed += 1
        request = (idx, k, self.s.decoder.step)
        self._elbo_request = request
        self._elbo_note = ""
        if encoder.likelihood == "bernoulli" and not np.all((x == 0.0) | (x == 1.0)):
            self._elbo_note = ("Bernoulli likelihood on grey-level pixels: log p(x|z) is a cross-entropy here, not the log "
                               "of a normalised density, so these are not true log-likelihoods of x.")

        def job(progress: Any, cancelled: Callable[[], bool]) -> tuple[tuple, dict]:
            bd = encoder.elbo_breakdown(x, k=k, seed=seed, mc_samples=1000, progress=progress, cancelled=cancelled)
            return request, bd.row(0)

        self.elbo_panel.title.setText(f"Example {self._example_name(idx)}")
        self.elbo_panel.set_computing(f"computing… (k = {k:,}, in the background)")
        self._elbo_task = self.s.tasks.start(job, self._on_elbo_done, self._on_elbo_failed, self._on_elbo_progress)

    @Slot(float, str)
    def _on_elbo_progress(self, fraction: float, text: str) -> None:
        task = self._elbo_task
        if task is not None and self.sender() is task.signals:
            self.elbo_panel.set_progress(fraction, text)

    @Slot(object)
    def _on_elbo_done(self, result: tuple[tuple, dict]) -> None:
        request, row = result
        if request != self._elbo_request:
            return  # an older computation that finished before it saw its cancellation
        self._elbo_task = None
        idx = request[0]
        self.elbo_panel.set_result(row, f"Example {self._example_name(idx)}")
        self.elbo_panel.status.setText(self._elbo_note)
        if self._selected() != idx:
            self.elbo_panel.status.setText(f"These figures are for example {self._example_name(idx)}; "
                                           "press Compute for the selected one.")

    @Slot(str)
    def _on_elbo_failed(self, text: str) -> None:
        self._elbo_task = None
        self.elbo_panel.set_failed(f"Could not compute: {text}")
        self._message("error", f"ELBO of the example: {text}")

    # ---------------------------------------------------------- interpolation
    @Slot()
    def show_interpolation(self) -> None:
        if not self._has_model():
            return
        self._open(self.interp_dock)
        self._default_ends()
        self._update_end_labels()
        self.update_interpolation()

    def _default_ends(self) -> None:
        """Ends not set yet become two different examples: A the selected one (or the one nearest the last decoded
        point, or the first), B the example farthest from A in latent space."""
        mu = self.s.latents
        if mu is None or mu.shape[1] != self._latent_dim() or len(mu) < 2:
            return
        if self._ends["A"] is None:
            index = self._selected()
            last = self.s.last_code
            if index is None and last is not None and len(last) == mu.shape[1]:
                index = int(np.argmin(((mu - np.asarray(last, dtype=mu.dtype)) ** 2).sum(axis=1)))
            self._ends["A"] = ("example", 0 if index is None else index)
        if self._ends["B"] is None:
            z = self._end_code("A")
            if z is None:
                return
            far = int(np.argmax(((mu - z.astype(mu.dtype)) ** 2).sum(axis=1)))
            self._ends["B"] = ("example", far)

    def _end_code(self, end: str) -> np.ndarray | None:
        e = self._ends[end]
        if e is None or self.s.decoder is None:
            return None
        kind, value = e
        if kind == "example":
            post = self._posterior_of(value)
            return None if post is None else post[0].astype(np.float32)
        return value if len(value) == self._latent_dim() else None

    def _update_end_labels(self) -> None:
        for end, lab in self.end_labels.items():
            e = self._ends[end]
            if e is None:
                lab.setText(f"{end}: not set")
            elif e[0] == "example":
                lab.setText(f"{end}: example {self._example_name(e[1])}")
            else:
                lab.setText(f"{end}: z = {code_text(e[1])}")

    def _end_from_sender(self) -> str:
        name = self.sender().objectName() if self.sender() is not None else ""
        return "B" if name.startswith("interpB") else "A"

    @Slot()
    def _set_end_selected(self) -> None:
        end = self._end_from_sender()
        if not self._has_model():
            return
        idx = self._selected()
        if idx is None:
            self._message("warning", f"Click an example on the map first, then press “{end} = selected example”.")
            return
        self._ends[end] = ("example", idx)
        self._update_end_labels()
        self.update_interpolation()

    @Slot()
    def _set_end_last(self) -> None:
        end = self._end_from_sender()
        if not self._has_model():
            return
        last = self.s.last_code
        if last is None or len(last) != self._latent_dim():
            self._message("warning", f"Click or drag on the map first to decode a point, then press “{end} = last decoded point”.")
            return
        self._ends[end] = ("code", np.array(last, dtype=np.float32))
        self._update_end_labels()
        self.update_interpolation()

    @Slot()
    def _on_interp_setting(self, *_args: Any) -> None:
        self._schedule("interp")

    def update_interpolation(self) -> None:
        """Decode the path from A to B and place it on the map (on the worker)."""
        a, b = self._end_code("A"), self._end_code("B")
        decoder = self.s.decoder
        if a is None or b is None or decoder is None:
            self._interp_frames = None
            self.interp_grid.clear()
            self.interp_grid.set_hint("Set A and B: click an example and press “A = selected example”, then click or "
                                      "drag elsewhere on the map and press “B = last decoded point”")
            self.view.set_path(None)
            self.interp_dock.info.setText("Decode the codes on a path from A to B.")
            return
        mode = self.interp_mode.currentData()
        steps = int(self.interp_steps.value())
        codes = X.interpolate(a, b, steps, mode)
        on_map = self._map_ready()
        proj = self.s.projection
        exact = on_map and self._projection_places()
        placer = self._placer_maker() if on_map and not exact else None

        def job() -> dict:
            frames = decoded_for_display(decoder.decode(codes))
            xy = _place(codes, proj, placer() if placer is not None else None) if on_map else None
            return {"frames": frames, "grid": _tiled(frames, steps), "xy": xy, "codes": codes, "mode": mode,
                    "exact": exact}

        self._submit("interp", job)

    def _show_interpolation(self, r: dict) -> None:
        codes, steps = r["codes"], len(r["codes"])
        self._interp_frames = r["frames"]
        self.interp_grid.set_grid(*r["grid"], pad=GRID_PAD, col_labels=["A"] + [""] * (steps - 2) + ["B"])
        xy = r["xy"]
        self.view.set_path(xy if self.interp_dock.is_open else None)
        norms = np.linalg.norm(codes, axis=1)
        how = "" if xy is None else (" The path is drawn on the map" + (
            "." if r["exact"] else ", each code placed by its nearest stored codes (approximate)."))
        self.interp_dock.info.setText(
            f"{'Spherical' if r['mode'] == 'spherical' else 'Linear'} path, {steps} codes from A to B; "
            f"|z| from {norms[0]:.2f} to {norms[-1]:.2f}, smallest {norms.min():.2f} "
            f"(codes from the prior have |z| ≈ √d = {math.sqrt(codes.shape[1]):.2f}).{how}")

    # ------------------------------------------------------------- traversals
    @Slot()
    def show_traversals(self) -> None:
        if not self._has_model():
            return
        self._open(self.traverse_dock)
        self.update_traversals()

    @Slot()
    def _on_traverse_setting(self, *_args: Any) -> None:
        self._schedule("traverse")

    def _kl_and_active(self) -> tuple[np.ndarray, np.ndarray]:
        """KL per latent dim (nats) and which dims are active: the latest epoch's, as every view shows them.

        Without a held-out epoch (a checkpoint of an older format) the KL is
        averaged over the stored codes, with the same rule for activity.
        """
        d = self._latent_dim()
        ev = self.s.last_epoch
        if ev is not None and len(ev.kl_per_dim) == d:
            return np.asarray(ev.kl_per_dim, dtype=np.float64), ev.active
        mu, lv = self.s.latents, self.s.latent_logvar
        if mu is not None and lv is not None and mu.shape[1] == d:
            mu64, lv64 = mu.astype(np.float64), lv.astype(np.float64)
            kl = (-0.5 * (1.0 + lv64 - mu64 * mu64 - np.exp(lv64))).mean(axis=0)
            return kl, active_dims(kl, mu)
        return np.ones(d), np.ones(d, dtype=bool)

    def update_traversals(self) -> None:
        """Decode one row per latent dim, sweeping it around the selected example's code (on the worker)."""
        decoder = self.s.decoder
        if decoder is None:
            return
        d = self._latent_dim()
        idx = self._selected()
        post = self._posterior_of(idx) if idx is not None else None
        if post is None:
            idx = None
        z = post[0] if post is not None else np.zeros(d)
        n = int(self.traverse_steps.value())
        r = float(self.traverse_range.value())
        values = np.linspace(-r, r, n)
        kl, active = self._kl_and_active()
        codes, order, _ = X.traversal_codes(z, kl, values)
        rows = min(d, MAX_TRAVERSAL_ROWS)
        codes = codes[:rows * n]
        labels = [f"z{j + 1} · KL {kl[j]:.2f}" if active[j] else f"z{j + 1} · inactive" for j in order[:rows]]
        where = f"example {self._example_name(idx)}'s code" if idx is not None else "z = 0 (the prior's mean)"
        more = f" Showing the {rows} dims with the most KL of {d}." if rows < d else ""
        info = (f"Each row sweeps one latent dim from −{r:g} to +{r:g} with the others at {where}. Rows are ordered by the "
                f"dim's KL (nats per example, averaged over the data); {int(active.sum())} of {d} dims are active "
                f"(at least {ACTIVE_KL:g} nats of KL and mean codes that vary over the data); the decoder ignores "
                f"the others.{more}")

        def job() -> dict:
            images = decoded_for_display(decoder.decode(codes))
            # Frame t of the animation: every shown dimension at value t.
            frames = images.reshape(rows, n, *images.shape[1:]).swapaxes(0, 1)
            return {"grid": _tiled(images, n), "frames": frames, "labels": labels,
                    "cols": [f"{v:+.1f}" for v in values], "info": info}

        self._submit("traverse", job)

    def _show_traversals(self, r: dict) -> None:
        self.traverse_grid.set_grid(*r["grid"], pad=GRID_PAD, row_labels=r["labels"], col_labels=r["cols"])
        self._traverse_frames = r["frames"]
        self.traverse_dock.info.setText(r["info"])

    # ------------------------------------------------------------------ prior
    @Slot()
    def show_prior(self) -> None:
        if not self._has_model():
            return
        self._open(self.prior_dock)
        self.update_prior()

    @Slot()
    def _resample_prior(self, *_args: Any) -> None:
        self._prior_seed += 1
        self._prior_z = None
        if self.s.decoder is not None and self.prior_dock.is_open:
            self.update_prior()

    def update_prior(self) -> None:
        """Decode the current prior samples (on the worker)."""
        decoder: Decoder | None = self.s.decoder
        if decoder is None:
            return
        d = self._latent_dim()
        n = int(self.prior_count.value())
        if self._prior_z is None or self._prior_z.shape != (n, d):
            self._prior_z = X.prior_codes(n, d, seed=self._prior_seed)
        z = self._prior_z
        ncols = self._columns("prior", self.prior_grid, n)

        def job() -> dict:
            return {"grid": _tiled(decoded_for_display(decoder.decode(z)), ncols)}

        self._submit("prior", job)

    def _show_prior(self, r: dict) -> None:
        self.prior_grid.set_grid(*r["grid"], pad=GRID_PAD)

    # ---------------------------------------------------------------- exports
    def _ask_path(self, title: str, name: str, filt: str, suffix: str) -> str | None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self.w, title, os.path.join(self.w.last_directory(), name), filt)
        if not path:
            return None
        if not path.lower().endswith(suffix):
            path += suffix
        self.w.remember_directory(os.path.dirname(path))
        return path

    def _write(self, what: str, path: str, write: Callable[[str], None]) -> bool:
        try:
            write(path)
        except (OSError, ValueError) as exc:
            self._message("error", f"Could not save {what} to {path}: {exc}")
            return False
        self._message("info", f"Saved {what} to {path}")
        return True

    def _export_grid_png(self, grid: ImageGrid, what: str, name: str) -> None:
        arr = grid.to_array()
        if arr is None:
            self._message("warning", f"There is no {what} to export yet.")
            return
        path = self._ask_path(f"Export {what}", name, "PNG images (*.png)", ".png")
        if path:
            self._write(what, path, lambda p: X.save_png(arr, p, scale=EXPORT_SCALE))

    @Slot()
    def _export_posterior_png(self) -> None:
        self._export_grid_png(self.posterior_grid, "posterior samples", "posterior.png")

    @Slot()
    def _export_interp_png(self) -> None:
        self._export_grid_png(self.interp_grid, "interpolation strip", "interpolation.png")

    @Slot()
    def _export_traverse_png(self) -> None:
        self._export_grid_png(self.traverse_grid, "latent traversals", "traversals.png")

    @Slot()
    def _export_prior_png(self) -> None:
        self._export_grid_png(self.prior_grid, "prior samples", "prior-samples.png")

    @Slot()
    def _export_interp_gif(self) -> None:
        frames = self._interp_frames
        if frames is None:
            self._message("warning", "There is no interpolation to export yet: set A and B first.")
            return
        path = self._ask_path("Export interpolation as GIF", "interpolation.gif", "GIF animations (*.gif)", ".gif")
        if path:
            self._write("interpolation animation", path, lambda p: X.save_gif(frames, p, fps=10, scale=EXPORT_SCALE))

    @Slot()
    def _export_traverse_gif(self) -> None:
        frames = self._traverse_frames
        if frames is None:
            self._message("warning", "There are no traversals to export yet.")
            return
        rows = frames.shape[1]
        ncols = int(math.ceil(math.sqrt(rows)))
        composed = np.stack([X.compose_grid(f, ncols, pad=GRID_PAD) for f in frames])
        path = self._ask_path("Export traversals as GIF", "traversals.gif", "GIF animations (*.gif)", ".gif")
        if path:
            self._write("traversal animation", path, lambda p: X.save_gif(composed, p, fps=5, scale=EXPORT_SCALE))

    @Slot()
    def _export_elbo(self) -> None:
        r = self.elbo_panel.result
        if r is None:
            self._message("warning", "Compute the ELBO of an example first.")
            return
        path = self._ask_path("Export ELBO figures", "elbo.csv", "CSV files (*.csv)", ".csv")
        if not path:
            return
        rows = [("quantity", "value_nats", "standard_error", "meaning"),
                ("reconstruction", r["recon"], r["recon_se"], TIPS["recon"]),
                ("kl", r["kl"], "", TIPS["kl"]),
                ("elbo", r["elbo"], r["recon_se"], TIPS["elbo"]),
                (f"iwae_k{r['k']}", r["iwae"], "", TIPS["iwae"]),
                ("gap", r["gap"], "", TIPS["gap"]),
                ("effective_sample_size", r["ess"], "", TIPS["ess"])]
        title = self.elbo_panel.title.text()

        def write(p: str) -> None:
            import csv
            import io

            buf = io.StringIO()
            csv.writer(buf).writerows([("example", title, "", "")] + rows)
            folder = os.path.dirname(os.path.abspath(p))
            tmp = os.path.join(folder, f".{os.path.basename(p)}.part")
            try:
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    f.write(buf.getvalue())
                os.replace(tmp, p)
            except OSError:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise

        self._write("the ELBO figures", path, write)
