"""The comparison window: two to four runs side by side.

``open_comparison(window, runs)`` opens a ``ComparisonWindow`` beside the
main window.  It reads every run's checkpoint (its own copy of the model:
the main window's models and history are left alone), chooses the data (the
main window's dataset when every model takes its images, else the first
run's own dataset; a run whose model takes other images is left out, with a
message naming it) and shows:

* each run's latent map in its own space (``vae_core.compare.map_coords``:
  the two latent dimensions, or PCA), the same held-out examples in every
  map, with the standard-normal prior's 1 and 2 sigma circles; clicking an
  example selects it in every map and shows its reconstruction by each model;
* the runs' curves on one pair of axes: -ELBO (recon + KL) of the training
  batches, smoothed, and of the held-out examples after each epoch;
* the same prior draws decoded by each model, an interpolation between the
  same two held-out examples in each;
* the table of ``vae_core.compare.TABLE_ROWS``, a column per run, filled as
  each run's figures come in; the window exports as one PNG, the table as CSV.

Everything heavy (reading checkpoints and data, encoding, decoding, the
figures) runs on the window's own task pool and decoding thread
(``app.worker``); the GUI thread only asks and draws.  Closing the window
cancels its work and hides it at once (it is deleted once its running jobs
have ended); closing the main window closes it, and waits a bounded time for
those jobs.
"""

from __future__ import annotations

import html
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ..display import decoded_for_display, example_title, image_for_display, shape_text
from ..session.map import PROGRESS_INTERVAL_S, every
from ..widgets.compare_view import RUN_COLOURS, CompareCurves, CompareMap
from ..widgets.decode_canvas import ImageGrid
from ..widgets.latent_view import class_colour
from ..widgets.loss_plot import debiased_ema
from ..worker import LatestWins, Reply, Tagged, TaskRunner

if TYPE_CHECKING:
    from vae_core.checkpoint import Checkpoint
    from vae_core.compare import MapCoords, RunFigures
    from vae_core.data import Dataset
    from vae_core.inference import Decoder, Encoder

    from ..main_window import MainWindow

Slot = QtCore.Slot
Signal = QtCore.Signal

__all__ = ["ComparedRun", "ComparisonWindow", "open_comparison", "MAX_RUNS", "MIN_RUNS"]

MIN_RUNS = 2
MAX_RUNS = 4
#: The window's size when it opens (smaller on a smaller screen).
DEFAULT_SIZE = (1280, 800)
#: Held-out examples drawn on each map (the same ones in every map).
MAP_EXAMPLES = 5000
#: Prior draws decoded by each model, and the columns of their grids.
PRIOR_SAMPLES = 16
PRIOR_COLUMNS = 4
#: Codes on the interpolation path, its ends included.
INTERPOLATION_STEPS = 10
#: Smoothing weight of the training curves (a debiased exponential moving average, as the main window's).
CURVE_SMOOTHING = 0.9
#: Above this many classes the window shows no legend of the class colours.
MAX_LEGEND_CLASSES = 20
#: The table's row labels wrap at this many characters (its columns keep the room).
TABLE_LABEL_CHARS = 26
#: Pixels between tiles of the image strips.
GRID_PAD = 2
#: How long the main window's close or the program's end waits for the window's jobs, in ms.
SHUTDOWN_WAIT_MS = 2000
#: How often a closed window asks whether its jobs have ended, in ms.
REAP_INTERVAL_MS = 50
#: The attribute of the main window that holds its open comparison windows.
WINDOWS_ATTR = "comparison_windows"

CURVES_Y = "−ELBO (nats per example)"
CURVES_TITLE = "training (smoothed) and ● held out"
CURVES_X = "training step"
CURVES_TIP = ("Lines: −ELBO = reconstruction + KL of each training batch, smoothed (an exponential moving average), "
              "whatever β the run trained with, so runs of different β are on one scale (a run's training loss, "
              "recon + β·KL, is this line only at β = 1).\nDots: −ELBO of the held-out examples after each epoch.")


@dataclass(frozen=True)
class ComparedRun:
    """A run to compare: its name, a checkpoint file (a run folder's latest.ckpt, or any) and its run folder."""

    name: str
    checkpoint: str
    directory: str | None = None


@dataclass(frozen=True)
class _Opened:
    """What reading a run's checkpoint gives: the checkpoint, its models and its curves as drawn."""

    checkpoint: "Checkpoint"
    encoder: "Encoder"
    decoder: "Decoder"
    curve: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # steps, -ELBO smoothed, epoch steps, epoch -ELBO


@dataclass(frozen=True)
class _Views:
    """A run's codes of the map's examples, their map and its prior draws decoded."""

    coords: "MapCoords"
    prior_z: np.ndarray
    prior_grid: np.ndarray


@dataclass
class _Run:
    spec: ComparedRun
    colour: str
    opened: _Opened | None = None
    views: _Views | None = None
    figures: "RunFigures | None" = None
    error: str = ""
    views_error: str = ""
    figures_error: str = ""
    map: CompareMap | None = None
    prior_grid: ImageGrid | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        assert self.opened is not None
        return tuple(int(s) for s in self.opened.checkpoint.model_config.input_shape)

    @property
    def latent_dim(self) -> int:
        assert self.opened is not None
        return int(self.opened.checkpoint.model_config.latent_dim)


def _curve(checkpoint: "Checkpoint") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A checkpoint's -ELBO per training step (smoothed) and per held-out epoch."""
    h = checkpoint.history
    arr = h.arrays()
    steps = np.asarray(arr["step"], dtype=np.float64)
    neg_elbo = np.asarray(arr["recon"], dtype=np.float64) + np.asarray(arr["kl"], dtype=np.float64)
    if len(neg_elbo) > 1:
        neg_elbo, _, _ = debiased_ema(neg_elbo, CURVE_SMOOTHING)
    epochs = [e for e in h.epochs if "test_elbo" in e and "step" in e]
    ex = np.array([float(e["step"]) for e in epochs], dtype=np.float64)
    ey = np.array([-float(e["test_elbo"]) for e in epochs], dtype=np.float64)
    return steps, neg_elbo, ex, ey


def _open_run(path: str) -> _Opened:
    from vae_core.checkpoint import load_checkpoint
    from vae_core.inference import load_models

    ckpt = load_checkpoint(path)
    encoder, decoder = load_models(ckpt)
    return _Opened(ckpt, encoder, decoder, _curve(ckpt))


def _never() -> bool:
    return False


def _replying(token: int, fn: Callable[[], Any]) -> Callable[[], Reply]:
    """A request for ``LatestWins``: ``Reply(token, fn())``, or ``Reply(token, error=message)`` when ``fn`` raises."""
    tagged = Tagged(token, lambda _progress, _cancelled: fn())
    return lambda: tagged(None, _never)


def _tiles(images: Sequence[np.ndarray] | np.ndarray, ncols: int) -> tuple[np.ndarray, int, int]:
    """Images tiled ``ncols`` a row -> (grid, rows, columns) as ``ImageGrid.set_grid`` takes them."""
    from vae_core.explore import compose_grid

    n = len(images)
    ncols = max(1, min(int(ncols), n))
    return compose_grid(images, ncols, pad=GRID_PAD), -(-n // ncols), ncols


def map_examples(dataset: "Dataset", limit: int = MAP_EXAMPLES, seed: int = 0) -> np.ndarray:
    """The examples the maps show: the held-out ones (all examples when none is held out), at most ``limit``, sorted."""
    idx = np.asarray(dataset.test_idx, dtype=np.int64)
    if not len(idx):
        idx = np.arange(dataset.n, dtype=np.int64)
    if len(idx) > limit:
        idx = np.random.default_rng(seed).choice(idx, size=limit, replace=False)
    return np.sort(idx)


def default_pair(dataset: "Dataset", candidates: np.ndarray, seed: int = 0) -> tuple[int, int]:
    """Two examples of ``candidates`` for the interpolation: of different classes where the data have labels.

    ``seed`` 0 takes the first candidate and the first of another class after
    it; other seeds draw a pair at random.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    if len(cand) < 2:
        return int(cand[0]), int(cand[0])
    if seed:
        rng = np.random.default_rng(seed)
        cand = cand[rng.permutation(len(cand))]
    a = int(cand[0])
    labels = dataset.labels
    if labels is not None:
        others = cand[np.asarray(labels)[cand] != labels[a]]
        if len(others):
            return a, int(others[0])
    return a, int(cand[1])


class ComparisonWindow(QtWidgets.QMainWindow):
    """Two to four runs side by side (see the module docstring)."""

    #: An example was selected (in any map, or through ``select_example``): its index in the dataset.
    exampleSelected = Signal(int)
    #: Everything there is to compute has been computed (or has failed).
    finished = Signal()

    def __init__(self, window: "MainWindow", runs: Sequence[ComparedRun]):
        super().__init__(window, QtCore.Qt.WindowType.Window)
        self.setObjectName("comparisonWindow")
        self.w = window
        self.runs = [_Run(r, RUN_COLOURS[i % len(RUN_COLOURS)]) for i, r in enumerate(runs)]
        self.active: list[_Run] = []
        self.dataset: "Dataset | None" = None
        self.examples = np.zeros(0, dtype=np.int64)
        self.selected: int | None = None
        self.pair: tuple[int, int] | None = None
        self.messages: list[str] = []
        self._pair_seed = 0
        self._tokens = {"recon": 0, "interp": 0}  # the newest request of each kind on the decoding thread
        self._pending_loads = 0
        self._closed = False  # closed: its work is cancelled and nothing more is shown
        self._released = False  # its work has ended and it is deleted
        self._done = False
        self._stage = ""
        self._figure_progress: dict[int, float] = {}
        self.tasks = TaskRunner(self, max_threads=2)
        self.latest = LatestWins(self)
        self.latest.done.connect(self._on_latest)  # every job replies with its token, failures included
        self._reaper = QtCore.QTimer(self)
        self._reaper.setInterval(REAP_INTERVAL_MS)
        self._reaper.timeout.connect(self._reap)
        self._set_title([r.name for r in self.runs])
        self._build()
        window.installEventFilter(self)
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        size = QtCore.QSize(*DEFAULT_SIZE)
        screen = window.screen()
        if screen is not None:  # never larger than the screen
            size = size.boundedTo(screen.availableGeometry().size())
        self.resize(size)

    # ----------------------------------------------------------------- build
    def _set_title(self, names: Sequence[str]) -> None:
        self.setWindowTitle("Compare runs — " + ", ".join(names))

    def _build(self) -> None:
        central = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(central)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.setSpacing(4)

        top = QtWidgets.QHBoxLayout()
        self.heading = QtWidgets.QLabel("Opening the checkpoints…")
        self.heading.setObjectName("compareHeading")
        self.heading.setWordWrap(True)
        top.addWidget(self.heading, 1)
        self.class_legend = QtWidgets.QLabel()
        self.class_legend.setObjectName("compareClassLegend")
        self.class_legend.setToolTip("The colours of the classes on the maps")
        self.class_legend.hide()
        top.addWidget(self.class_legend)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("compareProgress")
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        top.addWidget(self.progress)
        self.export_png_button = QtWidgets.QPushButton("Export PNG…")
        self.export_png_button.setObjectName("compareExportPngButton")
        self.export_png_button.setToolTip("Save the whole comparison window as one PNG image")
        self.export_png_button.clicked.connect(self.export_png)
        self.export_csv_button = QtWidgets.QPushButton("Export CSV…")
        self.export_csv_button.setObjectName("compareExportCsvButton")
        self.export_csv_button.setToolTip("Save the table as CSV, one column per run")
        self.export_csv_button.setEnabled(False)
        self.export_csv_button.clicked.connect(self.export_csv)
        top.addWidget(self.export_png_button)
        top.addWidget(self.export_csv_button)
        outer.addLayout(top)

        self.message_label = QtWidgets.QLabel()
        self.message_label.setObjectName("compareMessages")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.setStyleSheet("#compareMessages { color: #8a5a00; background: #fff4d6; "
                                         "border: 1px solid #8a5a00; border-radius: 4px; padding: 3px; }")
        self.message_label.hide()
        outer.addWidget(self.message_label)

        split = self.splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        self.maps_row = QtWidgets.QWidget()
        self.maps_layout = QtWidgets.QHBoxLayout(self.maps_row)
        self.maps_layout.setContentsMargins(0, 0, 0, 0)
        self.maps_layout.setSpacing(4)
        self.maps_placeholder = QtWidgets.QLabel("The maps follow once the checkpoints are read.")
        self.maps_placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.maps_layout.addWidget(self.maps_placeholder)
        split.addWidget(self.maps_row)

        bottom = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        bottom.setChildrenCollapsible(False)
        self.curves = CompareCurves()
        self.curves.setObjectName("compareCurves")
        self.curves.set_axis_labels(CURVES_X, CURVES_Y)
        self.curves.set_title(CURVES_TITLE)
        self.curves.setToolTip(CURVES_TIP)
        bottom.addWidget(self.curves)

        self.table = QtWidgets.QTableWidget()
        self.table.setObjectName("compareTable")
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setMinimumSectionSize(60)
        self.table_note = QtWidgets.QLabel()
        self.table_note.setObjectName("compareTableNote")
        self.table_note.setWordWrap(True)
        table_box = QtWidgets.QWidget()
        tl = QtWidgets.QVBoxLayout(table_box)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(2)
        tl.addWidget(self.table, 1)
        tl.addWidget(self.table_note)
        bottom.addWidget(table_box)

        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(2)
        self.selected_label = QtWidgets.QLabel("Click an example on a map to see it reconstructed by each model.")
        self.selected_label.setObjectName("compareSelectedLabel")
        self.selected_label.setWordWrap(True)
        rl.addWidget(self.selected_label)
        self.recon_grid = ImageGrid()
        self.recon_grid.setObjectName("compareReconstructions")
        self.recon_grid.setMinimumHeight(120)
        self.recon_grid.setMaximumHeight(150)
        rl.addWidget(self.recon_grid)
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setObjectName("compareTabs")
        self.tabs.addTab(self._build_prior_tab(), "Prior samples")
        self.tabs.addTab(self._build_interpolation_tab(), "Interpolation")
        rl.addWidget(self.tabs, 1)
        bottom.addWidget(right)
        bottom.setStretchFactor(0, 3)
        bottom.setStretchFactor(1, 4)
        bottom.setStretchFactor(2, 3)
        bottom.setSizes([380, 480, 420])
        split.addWidget(bottom)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 4)
        split.setSizes([400, 330])
        outer.addWidget(split, 1)
        self.setCentralWidget(central)

    def _build_prior_tab(self) -> QtWidgets.QWidget:
        self.prior_box = QtWidgets.QWidget()
        self.prior_box.setObjectName("comparePriorSamples")
        self.prior_box.setToolTip(
            f"The same {PRIOR_SAMPLES} draws z ~ N(0, I) decoded by each model. Models with equal latent "
            "dimensions decode the very same codes; where the dimensions differ, each model gets the same "
            "values in its first dimensions (and draws of its own in the rest).")
        self.prior_layout = QtWidgets.QHBoxLayout(self.prior_box)
        self.prior_layout.setContentsMargins(2, 2, 2, 2)
        self.prior_layout.setSpacing(6)
        return self.prior_box

    def _build_interpolation_tab(self) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(box)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        row = QtWidgets.QHBoxLayout()
        self.pair_label = QtWidgets.QLabel("")
        self.pair_label.setObjectName("compareInterpolationPair")
        self.pair_label.setWordWrap(True)
        row.addWidget(self.pair_label, 1)
        self.end_a_button = QtWidgets.QPushButton("Set A")
        self.end_a_button.setObjectName("compareEndAButton")
        self.end_a_button.setToolTip("Start the path at the selected example (click one on a map first)")
        self.end_a_button.clicked.connect(lambda: self.set_end(0))
        self.end_b_button = QtWidgets.QPushButton("Set B")
        self.end_b_button.setObjectName("compareEndBButton")
        self.end_b_button.setToolTip("End the path at the selected example (click one on a map first)")
        self.end_b_button.clicked.connect(lambda: self.set_end(1))
        self.new_pair_button = QtWidgets.QPushButton("New pair")
        self.new_pair_button.setObjectName("compareNewPairButton")
        self.new_pair_button.setToolTip("Two other held-out examples (of different classes where there are labels)")
        self.new_pair_button.clicked.connect(self.new_pair)
        for b in (self.end_a_button, self.end_b_button, self.new_pair_button):
            b.setEnabled(False)
            row.addWidget(b)
        lay.addLayout(row)
        self.interp_grid = ImageGrid()
        self.interp_grid.setObjectName("compareInterpolation")
        self.interp_grid.setToolTip("Each model encodes the same two examples and decodes the straight line "
                                    "between their mean codes, ends included")
        lay.addWidget(self.interp_grid, 1)
        return box

    # ------------------------------------------------------------- messages
    def message(self, text: str) -> None:
        """Tell the user something went wrong or was left out (the bar above the maps; it keeps every message)."""
        self.messages.append(text)
        self.message_label.setText("\n".join(f"⚠ {m}" for m in self.messages))
        self.message_label.show()

    def _update_progress(self) -> None:
        if self._done:
            self.progress.hide()
            return
        total = max(1, len(self.runs) + 1 + 2 * max(1, len(self.active)))
        done = sum(1 for r in self.runs if r.opened is not None or r.error)
        done += 1 if self.dataset is not None else 0
        done += sum(1 for r in self.active if r.views is not None or r.views_error)
        done += sum(1.0 if (r.figures is not None or r.figures_error) else self._figure_progress.get(i, 0.0)
                    for i, r in enumerate(self.active))
        self.progress.setValue(int(1000 * min(1.0, done / total)))
        self.progress.setFormat(self._stage or "%p%")
        self.progress.setToolTip(self._stage)

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        """Read every run's checkpoint on the task pool."""
        self._stage = f"Reading {len(self.runs)} checkpoints"
        self._pending_loads = len(self.runs)
        for i, run in enumerate(self.runs):
            path = run.spec.checkpoint
            self.tasks.start(Tagged(i, lambda progress, cancelled, path=path: _open_run(path)),
                             self._on_opened, self._on_task_failed)
        self._update_progress()

    @Slot(object)
    def _on_opened(self, reply: Reply) -> None:
        if self._closed:
            return
        run = self.runs[reply.token]
        if reply.error is not None:
            run.error = reply.error
            self.message(f"Run {run.name} was left out: {reply.error}")
        else:
            run.opened = reply.value
        self._pending_loads -= 1
        self._update_progress()
        if self._pending_loads == 0:
            self._choose_dataset()

    @Slot(str)
    def _on_task_failed(self, text: str) -> None:
        if not self._closed:
            self.message(text)

    def _choose_dataset(self) -> None:
        opened = [r for r in self.runs if r.opened is not None]
        if not opened:
            self._finish_without("None of the runs' checkpoints could be read.")
            return
        current = getattr(getattr(self.w, "session", None), "dataset", None)
        first = opened[0]
        # The window's data serves when it is the data the first run was trained on (the same spec, so
        # the same held-out split): other images of the same size would score the models on data
        # they never saw, or on examples they trained on.
        if (current is not None and all(r.input_shape == tuple(current.input_shape) for r in opened)
                and _same_data(current.spec, first.opened.checkpoint.dataset_spec)):
            self._use_dataset(current)
            return
        spec = dict(first.opened.checkpoint.dataset_spec)
        self._stage = f"Reading the data of {first.name}"
        self._update_progress()

        def job(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> "Dataset":
            from ..session.io import read_dataset

            if not spec:
                raise ValueError(f"the checkpoint {first.spec.checkpoint} does not say which data it was trained on")
            return read_dataset(spec, every(progress, PROGRESS_INTERVAL_S))

        self.tasks.start(Tagged(-1, job), self._on_dataset, self._on_task_failed, self._on_dataset_progress)

    @Slot(float, str)
    def _on_dataset_progress(self, fraction: float, text: str) -> None:
        if text and not self._closed:
            self._stage = f"Data: {text} {100 * fraction:.0f}%"
            self._update_progress()

    @Slot(object)
    def _on_dataset(self, reply: Reply) -> None:
        if self._closed:
            return
        if reply.error is not None:
            first = next(r for r in self.runs if r.opened is not None)
            text = f"Could not read the data of run {first.name} ({first.spec.checkpoint}): {reply.error}"
            current = getattr(getattr(self.w, "session", None), "dataset", None)
            if current is not None:
                self.message(text + f"; comparing on the main window's data ({current.name}) instead")
                self._use_dataset(current)
            else:
                self._finish_without(text)
            return
        self._use_dataset(reply.value)

    def _finish_without(self, text: str) -> None:
        self.message(text)
        self.heading.setText(text)
        self.maps_placeholder.setText("Nothing to compare.")
        self._done = True
        self._update_progress()
        self.finished.emit()

    # ----------------------------------------------------------- the data
    def _use_dataset(self, dataset: "Dataset") -> None:
        self.dataset = dataset
        shape = tuple(int(s) for s in dataset.input_shape)
        for run in self.runs:
            if run.opened is None:
                continue
            if run.input_shape != shape:
                self.message(f"Run {run.name} ({run.spec.checkpoint}) was left out: its model takes "
                             f"{shape_text(run.input_shape)} images, the data {dataset.name} has "
                             f"{shape_text(shape)}.")
                continue
            self.active.append(run)
        if not self.active:
            self._finish_without(f"No run's model takes the images of {dataset.name} ({shape_text(shape)}).")
            return
        if len(self.active) < MIN_RUNS:
            self.message(f"Only {self.active[0].name} fits the data: there is nothing to compare it with, "
                         "so it is shown alone.")
        self._set_title([r.name for r in self.active])
        self.examples = map_examples(dataset)
        held_out = "held-out " if len(dataset.test_idx) else ""
        self.heading.setText(f"{len(self.active)} runs on {dataset.name}: {len(self.examples):,} "
                             f"{held_out}examples on each map (the same ones in every map)")
        self._build_run_views()
        self._show_class_legend(dataset)
        self.pair = default_pair(dataset, self.examples)
        for b in (self.new_pair_button,):
            b.setEnabled(True)
        self._sync_end_buttons()
        self._request_interpolation()
        self._stage = "Encoding the examples"
        for k, run in enumerate(self.active):
            self.tasks.start(Tagged(k, self._views_job(run)), self._on_views, self._on_task_failed)
        for k, run in enumerate(self.active):
            self.tasks.start(Tagged(k, self._figures_job(run)), self._on_figures, self._on_task_failed,
                             self._figures_progress_slot(k))
        self._update_progress()

    def _show_class_legend(self, dataset: "Dataset") -> None:
        names = dataset.label_names
        if dataset.labels is None or not names or len(names) > MAX_LEGEND_CLASSES:
            return
        swatches = " ".join(f'<span style="color:{class_colour(k).name()}">■</span>&nbsp;{html.escape(str(n))}'
                            for k, n in enumerate(names))
        self.class_legend.setText(swatches)
        self.class_legend.show()

    def _build_run_views(self) -> None:
        self.maps_placeholder.hide()
        from vae_core.compare import TABLE_ROWS

        self.table.setRowCount(len(TABLE_ROWS))
        self.table.setColumnCount(len(self.active))
        self.table.setVerticalHeaderLabels([textwrap.fill(row.label, TABLE_LABEL_CHARS) for row in TABLE_ROWS])
        for i, row in enumerate(TABLE_ROWS):
            self.table.verticalHeaderItem(i).setToolTip(row.tooltip)
        for k, run in enumerate(self.active):
            m = CompareMap()
            m.setObjectName(f"compareMap{k}")
            m.set_title(run.name, run.colour)
            m.set_message("Encoding…")
            m.exampleClicked.connect(self.select_example)
            self.maps_layout.addWidget(m, 1)
            run.map = m
            head = QtWidgets.QTableWidgetItem(run.name)
            head.setForeground(QtGui.QColor(run.colour))
            head.setToolTip(run.spec.checkpoint)
            self.table.setHorizontalHeaderItem(k, head)
            for i, row in enumerate(TABLE_ROWS):
                item = QtWidgets.QTableWidgetItem("…")
                item.setTextAlignment(int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter))
                item.setToolTip(row.tooltip)
                self.table.setItem(i, k, item)
            col = QtWidgets.QWidget()
            cl = QtWidgets.QVBoxLayout(col)
            cl.setContentsMargins(0, 0, 0, 0)
            cl.setSpacing(1)
            title = QtWidgets.QLabel(run.name)
            title.setStyleSheet(f"color: {run.colour}; font-weight: bold;")
            title.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            grid = ImageGrid()
            grid.setObjectName(f"comparePriorSamples{k}")
            grid.set_hint("Decoding…")
            cl.addWidget(title)
            cl.addWidget(grid, 1)
            self.prior_layout.addWidget(col, 1)
            run.prior_grid = grid
            opened = run.opened
            assert opened is not None
            self.curves.set_run(run.name, run.colour, *opened.curve)
        self.recon_grid.set_hint("Click an example on a map")
        self.interp_grid.set_hint("Decoding…")

    # --------------------------------------------------------------- jobs
    def _views_job(self, run: _Run) -> Callable[[Any, Callable[[], bool]], _Views]:
        assert self.dataset is not None and run.opened is not None
        images, examples = self.dataset.images, self.examples
        encoder, decoder, d = run.opened.encoder, run.opened.decoder, run.latent_dim

        def job(progress: Any, cancelled: Callable[[], bool]) -> _Views:
            from vae_core.compare import map_coords, prior_draws

            mu, _ = encoder.encode_all(images[examples], cancelled=cancelled)
            coords = map_coords(mu)
            z = prior_draws(d, PRIOR_SAMPLES, 0)
            grid = _tiles(decoded_for_display(decoder.decode(z)), PRIOR_COLUMNS)[0]
            return _Views(coords, np.asarray(z), grid)

        return job

    def _figures_job(self, run: _Run) -> Callable[[Any, Callable[[], bool]], "RunFigures"]:
        assert self.dataset is not None and run.opened is not None
        dataset, ckpt, name = self.dataset, run.opened.checkpoint, run.name

        def job(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> "RunFigures":
            from vae_core.compare import DEFAULT_IWAE_K, compare_run

            return compare_run(ckpt, dataset, name=name, iwae_k=DEFAULT_IWAE_K,
                               progress=every(progress, PROGRESS_INTERVAL_S), cancelled=cancelled)

        return job

    def _figures_progress_slot(self, k: int) -> Callable[[float, str], None]:
        # A QObject in the GUI thread receives it (Qt queues the signal), whose slot knows the run.
        relay = _ProgressRelay(k, self)
        relay.reported.connect(self._on_figures_progress)
        return relay.report

    @Slot(int, float, str)
    def _on_figures_progress(self, k: int, fraction: float, text: str) -> None:
        if self._closed or k >= len(self.active):
            return
        self._figure_progress[k] = float(fraction)
        self._stage = f"Figures of {self.active[k].name}: {100 * fraction:.0f}%"
        self._update_progress()

    @Slot(object)
    def _on_views(self, reply: Reply) -> None:
        if self._closed:
            return
        run = self.active[reply.token]
        assert run.map is not None and run.prior_grid is not None
        if reply.error is not None:
            run.views_error = reply.error
            run.map.set_message("Could not encode")
            self.message(f"Could not encode the examples with run {run.name}: {reply.error}")
        else:
            views: _Views = reply.value
            run.views = views
            labels = None if self.dataset.labels is None else np.asarray(self.dataset.labels)[self.examples]
            run.map.set_points(views.coords.xy, self.examples, labels)
            run.map.set_axis_labels(*views.coords.axes)
            run.map.setToolTip(f"{run.name}: {views.coords.note}. Dashed: the prior N(0, I)'s "
                               "1σ and 2σ circles around z = 0.")
            from vae_core.compare import PRIOR_RADII

            run.map.set_prior(views.coords.origin, PRIOR_RADII)
            run.map.highlight(self.selected)
            run.prior_grid.set_grid(views.prior_grid, -(-PRIOR_SAMPLES // PRIOR_COLUMNS), PRIOR_COLUMNS,
                                    pad=GRID_PAD)
            dims = {r.latent_dim for r in self.active}
            if len(dims) > 1:
                run.prior_grid.setToolTip(
                    f"{run.name} has {run.latent_dim} latent dimensions: its codes share their first "
                    f"{min(dims)} values with every other model's draws.")
        self._stage = "Computing the figures"
        self._update_progress()
        self._check_done()

    @Slot(object)
    def _on_figures(self, reply: Reply) -> None:
        if self._closed:
            return
        from vae_core.compare import TABLE_ROWS, format_value

        k = reply.token
        run = self.active[k]
        if reply.error is not None:
            run.figures_error = reply.error
            for i in range(len(TABLE_ROWS)):
                self.table.item(i, k).setText("–")
            self.message(f"Could not compute the figures of run {run.name}: {reply.error}")
        else:
            run.figures = reply.value
            for i, row in enumerate(TABLE_ROWS):
                self.table.item(i, k).setText(format_value(run.figures, row.key))
            if run.figures.notes:
                self.table.horizontalHeaderItem(k).setToolTip(run.spec.checkpoint + "\n" + "\n".join(run.figures.notes))
            self.export_csv_button.setEnabled(True)
        self._update_table_rows()
        self._update_progress()
        self._check_done()

    def _update_table_rows(self) -> None:
        """Rows that apply to no run (MIG and SAP without ground-truth factors) are hidden once every run is in."""
        from vae_core.compare import TABLE_ROWS, format_value

        have = [r.figures for r in self.active if r.figures is not None]
        if len(have) + sum(1 for r in self.active if r.figures_error) < len(self.active) or not have:
            return
        for i, row in enumerate(TABLE_ROWS):
            self.table.setRowHidden(i, all(format_value(f, row.key) == "–" for f in have))
        notes = sorted({n for f in have for n in f.notes})
        self.table_note.setText("\n".join(notes))
        self.table_note.setVisible(bool(notes))

    def _check_done(self) -> None:
        if self._done:
            return
        for r in self.active:
            if r.views is None and not r.views_error:
                return
            if r.figures is None and not r.figures_error:
                return
        self._done = True
        self._stage = ""
        self._update_progress()
        self.finished.emit()

    @property
    def is_closed(self) -> bool:
        """The window was closed: its work is cancelled and nothing more is shown."""
        return self._closed

    @property
    def done(self) -> bool:
        """Every map, sample grid and table column there is to fill has been filled (or failed)."""
        return self._done

    # ------------------------------------------------------- selection
    @Slot(int)
    def select_example(self, index: int) -> None:
        """Select example ``index`` of the data: ringed in every map, reconstructed by every model."""
        if self._closed or self.dataset is None or not 0 <= int(index) < self.dataset.n:
            return
        self.selected = int(index)
        for run in self.active:
            if run.map is not None:
                run.map.highlight(self.selected)
        title = example_title(self.selected, self.dataset.labels, self.dataset.label_names)
        self.selected_label.setText(f"Example {title} reconstructed by each model (the decode of its mean code)")
        self._sync_end_buttons()
        self._request_reconstructions()
        self.exampleSelected.emit(self.selected)

    def _request_reconstructions(self) -> None:
        assert self.dataset is not None and self.selected is not None
        image = np.asarray(self.dataset.images[self.selected])
        models = [(r.opened.encoder, r.opened.decoder) for r in self.active if r.opened is not None]
        self._tokens["recon"] += 1
        token = self._tokens["recon"]

        def job() -> tuple[np.ndarray, int, int]:
            tiles = [image_for_display(image)]
            for enc, dec in models:
                mu, _ = enc.encode(image)
                tiles.append(decoded_for_display(dec.decode(mu[None]))[0])
            return _tiles(tiles, len(tiles))

        self.latest.submit("recon", _replying(token, job))

    # --------------------------------------------------- interpolation
    def _sync_end_buttons(self) -> None:
        has = self.selected is not None and self.pair is not None
        self.end_a_button.setEnabled(has)
        self.end_b_button.setEnabled(has)

    def set_end(self, end: int) -> None:
        """Make the selected example end ``end`` (0: A, 1: B) of the interpolation."""
        if self._closed or self.selected is None or self.pair is None:
            return
        a, b = self.pair
        self.pair = (self.selected, b) if end == 0 else (a, self.selected)
        self._request_interpolation()

    def new_pair(self) -> None:
        """Interpolate between two other held-out examples."""
        if self._closed or self.dataset is None or not len(self.examples):
            return
        self._pair_seed += 1
        self.pair = default_pair(self.dataset, self.examples, self._pair_seed)
        self._request_interpolation()

    def _request_interpolation(self) -> None:
        if self.dataset is None or self.pair is None or not self.active:
            return
        a, b = self.pair
        ds = self.dataset
        self.pair_label.setText(f"A = {example_title(a, ds.labels, ds.label_names)} → "
                                f"B = {example_title(b, ds.labels, ds.label_names)}")
        images = np.asarray(ds.images[[a, b]])
        models = [(r.opened.encoder, r.opened.decoder) for r in self.active if r.opened is not None]
        self._tokens["interp"] += 1
        token = self._tokens["interp"]

        def job() -> tuple[np.ndarray, int, int]:
            from vae_core.compare import interpolation_codes

            rows = []
            for enc, dec in models:
                mu, _ = enc.encode(images)
                codes = interpolation_codes(mu[0], mu[1], INTERPOLATION_STEPS)
                rows.append(decoded_for_display(dec.decode(codes)))
            return _tiles(np.concatenate(rows), INTERPOLATION_STEPS)

        self.latest.submit("interp", _replying(token, job))

    @Slot(str, object)
    def _on_latest(self, kind: str, reply: Reply) -> None:
        if self._closed or reply.token != self._tokens.get(kind):
            return  # a newer request of this kind is on its way: its result or its failure is what counts
        if reply.error is not None:
            what = "the reconstructions" if kind == "recon" else "the interpolation"
            self.message(f"Could not decode {what}: {reply.error}")
            return
        grid, nrows, ncols = reply.value
        if kind == "recon":
            self.recon_grid.set_grid(grid, nrows, ncols, pad=GRID_PAD,
                                     col_labels=["Original", *[r.name for r in self.active]])
        elif kind == "interp":
            labels = [f"{i / (INTERPOLATION_STEPS - 1):.2g}" for i in range(INTERPOLATION_STEPS)]
            labels[0], labels[-1] = "A", "B"
            self.interp_grid.set_grid(grid, nrows, ncols, pad=GRID_PAD, row_labels=[r.name for r in self.active],
                                      col_labels=labels)

    # ---------------------------------------------------------- for tests
    def maps(self) -> list[CompareMap]:
        return [r.map for r in self.active if r.map is not None]

    def prior_codes(self) -> dict[str, np.ndarray]:
        """The prior draws each run decoded, by run name."""
        return {r.name: r.views.prior_z.copy() for r in self.active if r.views is not None}

    def figures(self) -> list["RunFigures"]:
        """The figures computed so far, in the order of the table's columns."""
        return [r.figures for r in self.active if r.figures is not None]

    # ------------------------------------------------------------ export
    def export_png(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export the comparison", os.path.join(self.w.last_directory(), "comparison.png"),
            "PNG images (*.png)")
        if path:
            self.save_png(path)

    def save_png(self, path: str) -> bool:
        """The whole window as one PNG at ``path``; a message naming the file when it cannot be written."""
        if not self.grab().save(path, "PNG"):
            self.message(f"Could not write {path}: the image could not be saved there.")
            return False
        self.w.remember_directory(os.path.dirname(os.path.abspath(path)))
        self.statusBar().showMessage(f"Saved the comparison to {path}", 8000)
        return True

    def export_csv(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export the table", os.path.join(self.w.last_directory(), "comparison.csv"),
            "CSV files (*.csv)")
        if path:
            self.save_csv(path)

    def save_csv(self, path: str) -> bool:
        """The table (the runs whose figures are in) as CSV at ``path``; a message naming the file on failure."""
        from vae_core.compare import write_table_csv
        from vae_core.errors import VAEError

        figures = self.figures()
        if not figures:
            self.message("There are no figures to export yet.")
            return False
        try:
            write_table_csv(path, figures)
        except (OSError, VAEError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.message(f"Could not write {path}: {reason}")
            return False
        self.w.remember_directory(os.path.dirname(os.path.abspath(path)))
        self.statusBar().showMessage(f"Saved the table to {path}", 8000)
        return True

    # ------------------------------------------------------------- close
    # Closing the window cancels its work and hides it at once; the GUI thread never waits for a job
    # the user closed it on (an IWAE batch or reading a dataset cannot stop mid-call).  A timer then
    # asks, without blocking, whether the task pool and the decoding thread have finished, and deletes
    # the window once they have.  Only when the main window closes or the program quits does
    # ``shutdown`` wait, for a bounded time, so that no job outlives the program.
    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if obj is self.w and not self._released:
            kind = event.type()
            if kind == QtCore.QEvent.Type.Hide and not event.spontaneous():
                # The main window was closed (or hidden by the program, not minimised): this one goes too,
                # at once, before the program may quit.
                self._close_with_main_window()
            elif kind == QtCore.QEvent.Type.Close:
                # The main window decides in its own closeEvent; once it is off the screen, so is this one.
                QtCore.QTimer.singleShot(0, self._follow_main_window)
        return False

    @Slot()
    def _follow_main_window(self) -> None:
        if not self._released and not self.w.isVisible():
            self._close_with_main_window()

    def _close_with_main_window(self) -> None:
        self.shutdown()
        self.close()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self._cancel_work()
        event.accept()

    def _cancel_work(self) -> None:
        """Cancel every job, show nothing more, and delete the window once its jobs have ended (no waiting)."""
        if self._closed:
            return
        self._closed = True
        self.tasks.cancel_all()
        self.latest.close(0)  # drops waiting requests and takes no more; one running ends on its own
        opened = getattr(self.w, WINDOWS_ATTR, None)
        if isinstance(opened, list) and self in opened:
            opened.remove(self)
        self._reaper.start()

    def _work_ended(self) -> bool:
        return self.latest.close(0) and self.tasks.wait(0)

    @Slot()
    def _reap(self) -> None:
        """Delete the closed window (its models and data go with it) once none of its jobs runs."""
        if self._released or not self._work_ended():
            return
        self._released = True
        self._reaper.stop()
        try:
            self.w.removeEventFilter(self)
        except RuntimeError:  # the main window is already gone
            pass
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            try:
                app.aboutToQuit.disconnect(self.shutdown)
            except (RuntimeError, TypeError):
                pass
        self.deleteLater()

    @Slot()
    def shutdown(self, timeout_ms: int = SHUTDOWN_WAIT_MS) -> bool:
        """Cancel this window's work and wait for it, ``timeout_ms`` at most in all; True when it all ended in time.

        For the main window's close and the program's end; closing this window alone waits for nothing.
        """
        self._cancel_work()
        if self._released:
            return True
        timer = QtCore.QElapsedTimer()
        timer.start()
        ok = self.latest.close(timeout_ms)
        ok = self.tasks.wait(max(0, timeout_ms - timer.elapsed())) and ok
        if ok:
            self._reap()
        return ok


class _ProgressRelay(QtCore.QObject):
    """Adds a run's number to a task's progress reports."""

    reported = Signal(int, float, str)

    def __init__(self, k: int, parent: QtCore.QObject):
        super().__init__(parent)
        self._k = k

    @Slot(float, str)
    def report(self, fraction: float, text: str) -> None:
        self.reported.emit(self._k, fraction, text)


def _same_data(spec: Any, checkpoint_spec: Any) -> bool:
    """Whether a dataset's spec and a checkpoint's recorded one name the same data, split and all."""
    from vae_core.data import DatasetSpec

    try:
        mine = spec.to_dict() if hasattr(spec, "to_dict") else DatasetSpec.from_dict(dict(spec)).to_dict()
        theirs = DatasetSpec.from_dict(dict(checkpoint_spec)).to_dict()
    except Exception:  # a spec that cannot be read names no data we can vouch for
        return False
    for d in (mine, theirs):
        if d.get("source") != "shapes":
            d.pop("n", None)  # the number of shapes to draw: no part of any other dataset
    return mine == theirs


def distinct_names(runs: Sequence[ComparedRun]) -> list[ComparedRun]:
    """``runs`` with names told apart: a name given twice gets its run folder's (or file's) name after it, then a number."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    out: list[ComparedRun] = []
    taken: set[str] = set()
    for r in runs:
        name = r.name
        if counts[name] > 1:
            where = os.path.basename((r.directory or r.checkpoint).rstrip(os.sep)) or r.checkpoint
            name = f"{r.name} ({where})"
        base, k = name, 2
        while name in taken:
            name = f"{base} {k}"
            k += 1
        taken.add(name)
        out.append(r if name == r.name else ComparedRun(name, r.checkpoint, r.directory))
    return out


def open_comparison(window: "MainWindow", runs: Sequence[ComparedRun]) -> ComparisonWindow:
    """Open (and return) a comparison of 2 to 4 ``runs`` beside ``window``; the work runs in the background.

    Runs given the same name are told apart (their folder's name is added), since the
    curves, the table and the CSV name each run.
    """
    runs = distinct_names(list(runs))
    if not MIN_RUNS <= len(runs) <= MAX_RUNS:
        raise ValueError(f"compare {MIN_RUNS} to {MAX_RUNS} runs, not {len(runs)}")
    cw = ComparisonWindow(window, runs)
    opened = getattr(window, WINDOWS_ATTR, None)
    if not isinstance(opened, list):
        opened = []
        setattr(window, WINDOWS_ATTR, opened)
    opened.append(cw)
    cw.show()
    cw.start()
    return cw
