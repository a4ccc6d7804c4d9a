"""The main window: puts the widgets together and wires them to the session.

It owns no math: every number comes from ``Session``; every widget only gets
numpy arrays and plain values.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from vae_core.config import parse_hidden_dims

from . import recovery, theme
from .display import HistoryView, code_text, images_for_display
from .session import EMPTY, IDLE, LOADING, PAUSED, TRAINED, TRAINING, EpochSummary, MapView, Session
from .tools import experiments, explore_docks, monitor, runs, runs_panel, selection_docks
from .widgets.decode_canvas import DecodeCanvas, ImagePair
from .widgets.latent_view import LatentView
from .widgets.loss_plot import LossPlot
from .widgets.training_panel import TrainingPanel

if TYPE_CHECKING:
    from vae_core.data import Dataset
    from vae_core.training import EpochEvent

Slot = QtCore.Slot

ORG = "LatentExplorer"
APP = "Latent Explorer"
CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors")
MAX_RECENT = 8
CURVE_INTERVAL_MS = 100  # loss curves at about 10 Hz
DRAG_CURVE_INTERVAL_MS = 400  # ... and slower while the user drags on the map
PROGRESS_INTERVAL_MS = 250
#: When the window asks which CUDA GPUs there are: after its first paint, as importing torch takes a while.
DEVICE_PROBE_DELAY_MS = 1000
#: The smallest window: everything stays reachable (the training panel scrolls, docks shrink).
MIN_WINDOW_SIZE = (760, 500)
#: Narrower windows show the loss curves and the KL bars as tabs of one dock rather than side by side.
COMPACT_WIDTH = 1200
#: A tool opened beside the curves for the first time gets this share of the width under the map.
TOOL_SHARE = 0.4
#: Answers of ``MainWindow.ask_unsaved``.
SAVE, DISCARD, CANCEL = "save", "discard", "cancel"


def settings() -> QtCore.QSettings:
    return QtCore.QSettings(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, ORG, "latent-explorer")


def default_window_size() -> tuple[int, int]:
    """1360 x 860, larger (up to 1680 x 1020) where the screen has room, and never larger than the screen."""
    w, h = 1360, 860
    screen = QtGui.QGuiApplication.primaryScreen()
    if screen is not None:
        avail = screen.availableGeometry()
        w = max(w, min(1680, int(avail.width() * 0.92)))
        h = max(h, min(1020, int(avail.height() * 0.92)))
        w = max(MIN_WINDOW_SIZE[0], min(w, avail.width()))
        h = max(MIN_WINDOW_SIZE[1], min(h, avail.height()))
    return w, h


_ask_about_unsaved = False


def ask_about_unsaved_work(on: bool = True) -> None:
    """Let windows ask before they drop unsaved work (the program's entry point does this).

    Without it (a window made by a script, a test or a benchmark) nothing
    asks: the window never waits on a question nobody can answer.
    """
    global _ask_about_unsaved
    _ask_about_unsaved = on


def is_checkpoint_path(path: str) -> bool:
    return path.lower().endswith(CHECKPOINT_SUFFIXES)


#: This many modules imported since the last garbage check mark an import burst (see GuiGarbageCollector).
IMPORT_BURST_MODULES = 20


class GuiGarbageCollector(QtCore.QObject):
    """Python's cyclic garbage collector, run only on the GUI thread, from a timer.

    Left automatic, a collection runs in whichever thread happens to allocate,
    the training or UMAP thread included.  If it frees a Qt object there (a
    closed dialog or widget caught in a reference cycle), Qt's destructor and
    the GUI thread wait on each other: the program hangs.  So automatic
    collection is off, and every ``interval_ms`` the GUI thread collects the
    generations that are due, with Python's usual thresholds (as pyqtgraph's
    GarbageCollector does).

    What the modules of a burst of imports create (the engine's threads
    import torch, and with the first trainer sympy: some 300,000 objects) is
    never garbage, yet each older-generation collection would scan it again:
    a quarter of a second on the GUI thread every time.  So after imports,
    and once at the start, the objects alive are frozen (``gc.freeze``: kept
    out of every later collection) instead.  A reference cycle that became
    garbage just then stays in memory; that happens a few times per process.
    """

    def __init__(self, interval_ms: int = 500, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._threshold = gc.get_threshold()
        gc.disable()
        gc.freeze()
        self._modules = len(sys.modules)
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.check)
        self._timer.start(interval_ms)

    @Slot()
    def check(self) -> None:
        modules = len(sys.modules)
        if modules - self._modules >= IMPORT_BURST_MODULES:
            self._modules = modules
            gc.freeze()
            return
        self._modules = modules
        l0, l1, l2 = gc.get_count()
        if l0 > self._threshold[0]:
            gc.collect(0)
            if l1 > self._threshold[1]:
                gc.collect(1)
                if l2 > self._threshold[2]:
                    gc.collect(2)


_gui_gc: GuiGarbageCollector | None = None


def collect_garbage_on_gui_thread() -> None:
    """Install the program's ``GuiGarbageCollector`` (once per process, from the GUI thread)."""
    global _gui_gc
    if _gui_gc is not None:
        return
    app = QtWidgets.QApplication.instance()
    if app is None or QtCore.QThread.currentThread() is not app.thread():
        return
    _gui_gc = GuiGarbageCollector(parent=app)


class MessageBar(QtWidgets.QFrame):
    """A dismissible line above the map for errors and notices (never modal)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.setFrameShape(QtWidgets.QFrame.StyledPanel)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        self.icon = QtWidgets.QLabel()
        self.text = QtWidgets.QLabel()
        self.text.setObjectName("messageText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        close = QtWidgets.QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        lay.addWidget(self.icon)
        lay.addWidget(self.text, 1)
        self._buttons_at = lay.count()
        lay.addWidget(close)
        self.level = ""
        self.buttons: list[QtWidgets.QPushButton] = []
        self.hide()

    def show_message(self, level: str, text: str, actions: Any = ()) -> None:
        """Show ``text``; ``actions`` are (objectName, label, callback) buttons that last until the next message."""
        self.level = level
        for b in self.buttons:
            b.hide()
            b.deleteLater()
        self.buttons = []
        for i, (name, label, callback) in enumerate(actions):
            b = QtWidgets.QPushButton(label)
            b.setObjectName(name)
            b.clicked.connect(callback)
            self.layout().insertWidget(self._buttons_at + i, b)
            self.buttons.append(b)
        colours = {"error": ("#b3261e", "#fdecea"), "warning": ("#8a5a00", "#fff4d6"), "info": ("#1d4f91", "#e8f0fb")}
        fg, bg = colours.get(level, colours["info"])
        self.setStyleSheet(f"#messageBar {{ background: {bg}; border: 1px solid {fg}; border-radius: 4px; }}"
                           f" #messageBar QLabel {{ color: {fg}; }} #messageBar QToolButton {{ color: {fg}; }}")
        self.icon.setText({"error": "⚠", "warning": "⚠", "info": "ℹ"}.get(level, "ℹ"))
        self.text.setText(text)
        self.show()


class MapToolbar(QtWidgets.QWidget):
    """Choose how codes with more than two dimensions are put on the map."""

    changed = QtCore.Signal(str, int, int)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.addWidget(QtWidgets.QLabel("Map:"))
        self.combo = QtWidgets.QComboBox()
        self.combo.setObjectName("projectionCombo")
        for text, key, tip in (("Two latent dims", "raw", "Plot two chosen latent dimensions; the others stay at the selected example's code (or 0)."),
                               ("PCA", "pca", "The plane of the two principal components of the codes; exactly invertible."),
                               ("UMAP", "umap", "A non-linear layout computed in the background; points map back by interpolating the stored codes.")):
            self.combo.addItem(text, key)
            self.combo.setItemData(self.combo.count() - 1, tip, QtCore.Qt.ToolTipRole)
        self.dim_x = QtWidgets.QSpinBox()
        self.dim_x.setObjectName("dimXSpin")
        self.dim_y = QtWidgets.QSpinBox()
        self.dim_y.setObjectName("dimYSpin")
        for s, v in ((self.dim_x, 1), (self.dim_y, 2)):
            s.setRange(1, 2)
            s.setValue(v)
            s.setPrefix("z")
            s.setToolTip("Latent dimension on this axis")
        self.dims_label = QtWidgets.QLabel("axes:")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("projectionProgress")
        self.progress.setMaximumWidth(140)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("UMAP %p%")  # short enough for any width; the stage is in the tooltip
        self.progress.hide()
        lay.addWidget(self.combo)
        lay.addWidget(self.dims_label)
        lay.addWidget(self.dim_x)
        lay.addWidget(self.dim_y)
        lay.addWidget(self.progress)
        lay.addStretch(1)
        self.combo.currentIndexChanged.connect(self._emit)
        self.dim_x.valueChanged.connect(self._emit)
        self.dim_y.valueChanged.connect(self._emit)
        self.set_latent_dim(2)

    def set_latent_dim(self, d: int) -> None:
        many = d > 2
        self.combo.setEnabled(many)
        for w in (self.dim_x, self.dim_y):
            w.blockSignals(True)
            w.setMaximum(max(1, d))
            w.blockSignals(False)
        self._sync_visibility()
        if not many:
            self.combo.setToolTip("The model has two latent dimensions: the map shows them directly.")
        else:
            self.combo.setToolTip("")

    def _sync_visibility(self) -> None:
        dims = self.combo.currentData() == "raw" and self.combo.isEnabled()
        for w in (self.dims_label, self.dim_x, self.dim_y):
            w.setVisible(dims)

    @Slot()
    def _emit(self, *_: Any) -> None:
        self._sync_visibility()
        self.changed.emit(self.combo.currentData(), self.dim_x.value() - 1, self.dim_y.value() - 1)

    def select(self, mode: Any, dims: Any = None) -> None:
        """Choose ``mode`` ("raw", "pca" or "umap") and, for "raw", the 0-based ``dims``; ``changed`` follows once."""
        index = self.combo.findData(mode)
        if index < 0:
            return
        widgets = (self.combo, self.dim_x, self.dim_y)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.combo.setCurrentIndex(index)
            if isinstance(dims, (list, tuple)) and len(dims) == 2:
                self.dim_x.setValue(int(dims[0]) + 1)
                self.dim_y.setValue(int(dims[1]) + 1)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._emit()

    def set_progress(self, fraction: float, text: str) -> None:
        """Show a background layout's progress: the bar says how far (it stays short); its tooltip what it does."""
        if fraction >= 1.0 or not text:
            self.progress.hide()
            return
        self.progress.show()
        self.progress.setValue(int(1000 * fraction))
        self.progress.setToolTip(text)

    def progress_text(self) -> str:
        """What the layout running now is doing ("" when none runs)."""
        return self.progress.toolTip() if not self.progress.isHidden() else ""


def _cuda_devices(_progress: Any, _cancelled: Any) -> list[str]:
    """The names of the CUDA GPUs there are (a worker-thread job: it imports torch)."""
    from vae_core.model import cuda_devices

    return cuda_devices()


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, session: Session | None = None, restore: bool = True):
        super().__init__()
        collect_garbage_on_gui_thread()
        self.setObjectName("mainWindow")
        self.setWindowTitle(APP)
        self.setAcceptDrops(True)
        self.session = session or Session(self)
        self._drag_quiet = False  # a drag on the map is on: the decoded image comes first
        self._ask_on_close = True  # closing asks about unsaved work (not when a signal closes the window)
        self._progress_pending: dict | None = None
        self._progress_timer = QtCore.QTimer(self)
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(PROGRESS_INTERVAL_MS)
        self._progress_timer.timeout.connect(self._show_progress)
        self._build_widgets()
        self._build_actions()
        self._build_menus()
        self._wire()
        # Each tool module adds its docks, actions and wiring to the window.
        self.recovery = recovery.install(self)  # autosave and the restore offer
        self.explore_tools = explore_docks.install(self)  # posterior, ELBO, interpolation, traversals, prior samples
        self.monitor = monitor.install(self)  # KL per dimension, collapse warnings, decoded manifold
        self.runs = runs.install(self)  # run folders: recording, File ▸ Runs, following a run
        self.selection_tools = selection_docks.install(self)  # lasso, selection panel, nearest neighbours
        self.runs_panel = runs_panel.install(self)  # the Runs panel: every run, renamed, reopened, checked to compare
        self.experiments = experiments.install(self)  # Experiment menu: autoencoder vs VAE, beta sweep
        self._on_state(self.session.state)
        self.setMinimumSize(*MIN_WINDOW_SIZE)
        self.resize(*default_window_size())
        self._widened: set[QtWidgets.QDockWidget] = set()  # tool docks widened when first opened
        self._arranged = False  # the docks get their places at the first show, for the window's width then
        if restore:
            self._restore_layout()
            self._restore_view_options()
        self._wire_view_options()
        self.latent_view.set_axis_labels("", "")  # no layout yet
        self.latent_view.set_message("Choose a dataset and press Train to see its latent map")

    # ------------------------------------------------------------------ build
    def _build_widgets(self) -> None:
        self.panel = TrainingPanel(hidden_parser=parse_hidden_dims)
        # On a short screen the panel scrolls (its scroll bar shows whenever part of it is hidden).
        scroll = self.panel_scroll = QtWidgets.QScrollArea()
        scroll.setObjectName("trainingScroll")
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        scroll.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarAsNeeded)
        scroll.setMinimumWidth(self.panel.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 4)
        self.panel_dock = QtWidgets.QDockWidget("Training", self)
        self.panel_dock.setObjectName("trainingDock")
        self.panel_dock.setWidget(scroll)
        self.addDockWidget(QtCore.Qt.LeftDockWidgetArea, self.panel_dock)

        self.loss_plot = LossPlot()
        self.loss_dock = QtWidgets.QDockWidget("Loss curves", self)
        self.loss_dock.setObjectName("lossDock")
        self.loss_dock.setWidget(self.loss_plot)
        self.addDockWidget(QtCore.Qt.BottomDockWidgetArea, self.loss_dock)
        # The panel runs the full height of the window; the curves sit under the map.
        self.setCorner(QtCore.Qt.BottomLeftCorner, QtCore.Qt.LeftDockWidgetArea)
        self.setCorner(QtCore.Qt.TopLeftCorner, QtCore.Qt.LeftDockWidgetArea)

        self.latent_view = LatentView()
        self.map_toolbar = MapToolbar()
        self.message_bar = MessageBar()
        map_box = QtWidgets.QWidget()
        map_lay = QtWidgets.QVBoxLayout(map_box)
        map_lay.setContentsMargins(0, 0, 0, 0)
        map_lay.setSpacing(2)
        map_lay.addWidget(self.message_bar)
        map_lay.addWidget(self.map_toolbar)
        map_lay.addWidget(self.latent_view, 1)

        self.decode_canvas = DecodeCanvas()
        self.recon_pair = ImagePair()
        right = QtWidgets.QWidget()
        right_lay = QtWidgets.QVBoxLayout(right)
        right_lay.setContentsMargins(4, 0, 0, 0)
        title = QtWidgets.QLabel("<b>Decoded point</b>")
        right_lay.addWidget(title)
        right_lay.addWidget(self.decode_canvas, 3)
        right_lay.addWidget(QtWidgets.QLabel("<b>Selected example</b>"))
        right_lay.addWidget(self.recon_pair, 2)

        self.splitter = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(map_box)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([700, 300])
        self.setCentralWidget(self.splitter)

        sb = self.statusBar()
        self.coords_label = QtWidgets.QLabel("")
        self.coords_label.setObjectName("coordsLabel")
        self.state_label = QtWidgets.QLabel("")
        self.state_label.setObjectName("stateLabel")
        self.busy_bar = QtWidgets.QProgressBar()
        self.busy_bar.setObjectName("busyBar")
        self.busy_bar.setRange(0, 0)  # indeterminate: loading has no known length
        self.busy_bar.setMaximumWidth(120)
        self.busy_bar.setMaximumHeight(14)
        self.busy_bar.hide()
        sb.addWidget(self.coords_label, 1)
        sb.addPermanentWidget(self.busy_bar)
        sb.addPermanentWidget(self.state_label)

    def _action(self, text: str, slot: Any, shortcut: Any = None, name: str | None = None, tip: str = "") -> QtGui.QAction:
        act = QtGui.QAction(text, self)
        if name:
            act.setObjectName(name)
        if shortcut is not None:
            act.setShortcut(QtGui.QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(tip)
        act.triggered.connect(slot)
        self.addAction(act)  # shortcuts work even when the menu bar is hidden
        return act

    def _build_actions(self) -> None:
        A = self._action
        self.open_folder_action = A("Open image &folder…", self.open_folder_dialog, None, "openFolderAction", "Load a folder of images (subfolders are labels)")
        self.open_file_action = A("&Open…", self.open_file_dialog, QtGui.QKeySequence.Open, "openFileAction", "Open a dataset file (npy, npz, IDX) or a checkpoint")
        self.open_ckpt_action = A("Open &checkpoint…", self.open_checkpoint_dialog, "Ctrl+Shift+O", "openCheckpointAction")
        self.save_action = A("&Save checkpoint", self.save_checkpoint, QtGui.QKeySequence.Save, "saveAction", "Save the model, its optimizer state and the whole history")
        self.save_as_action = A("Save checkpoint &as…", self.save_checkpoint_as, "Ctrl+Shift+S", "saveAsAction")
        self.export_map_action = A("Export latent &map as PNG…", self.export_map_png, None, "exportMapAction")
        self.export_latents_action = A("Export &latents as CSV…", self.export_latents_csv, None, "exportLatentsAction", "index, label, mu, sigma and map position of every example")
        self.export_decoded_action = A("Export &decoded image as PNG…", self.export_decoded_png, None, "exportDecodedAction")
        self.quit_action = A("&Quit", self.close, QtGui.QKeySequence.Quit, "quitAction")
        self.train_action = A("&Train", self.panel.trainButton.click, "Ctrl+Return", "trainAction")
        self.pause_action = A("&Pause / resume", self._on_pause_shortcut, QtCore.Qt.Key_Space, "pauseAction")
        self.stop_action = A("S&top", self.session.stop, "Ctrl+.", "stopAction")
        self.reset_action = A("&Reset model", self._on_reset, None, "resetAction")
        self.log_action = A("&Log scale for losses", self._toggle_log, "Ctrl+L", "logScaleAction")
        self.log_action.setCheckable(True)
        self.reset_layout_action = A("Reset &layout", self.reset_layout, None, "resetLayoutAction")
        self.shortcuts_action = A("&Keyboard shortcuts", self.show_shortcuts, QtGui.QKeySequence.HelpContents, "shortcutsAction")
        self.about_action = A("&About Latent Explorer", self.show_about, None, "aboutAction")
        self.theme_group = QtGui.QActionGroup(self)
        self.theme_actions = {}
        for key, text in (("system", "System"), ("light", "Light"), ("dark", "Dark")):
            act = QtGui.QAction(text, self)
            act.setCheckable(True)
            act.setData(key)
            act.setObjectName(f"theme{text}Action")
            self.theme_group.addAction(act)
            self.theme_actions[key] = act
        self.theme_group.triggered.connect(self._on_theme_action)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self.file_menu = f
        f.addAction(self.open_file_action)
        f.addAction(self.open_folder_action)
        f.addAction(self.open_ckpt_action)
        self.recent_menu = f.addMenu("Open &recent")
        self.recent_menu.setObjectName("recentMenu")
        f.addSeparator()
        f.addAction(self.save_action)
        f.addAction(self.save_as_action)
        f.addSeparator()
        f.addAction(self.export_map_action)
        f.addAction(self.export_latents_action)
        f.addAction(self.export_decoded_action)
        f.addSeparator()
        f.addAction(self.quit_action)
        t = mb.addMenu("&Training")
        for a in (self.train_action, self.pause_action, self.stop_action, self.reset_action):
            t.addAction(a)
        # Exploration tools add their actions here (see _install_tools).
        self.tools_menu = mb.addMenu("E&xplore")
        self.tools_menu.setObjectName("exploreMenu")
        v = mb.addMenu("&View")
        v.addAction(self.panel_dock.toggleViewAction())
        v.addAction(self.loss_dock.toggleViewAction())
        v.addAction(self.log_action)
        tm = v.addMenu("&Theme")
        for act in self.theme_actions.values():
            tm.addAction(act)
        v.addSeparator()
        v.addAction(self.reset_layout_action)
        self.view_menu = v
        h = mb.addMenu("&Help")
        h.addAction(self.shortcuts_action)
        h.addAction(self.about_action)
        self._rebuild_recent()

    def _wire(self) -> None:
        s, p = self.session, self.panel
        p.trainRequested.connect(self.start_training)
        p.pauseToggled.connect(self._on_pause)
        p.stopRequested.connect(self._on_stop)
        p.resetRequested.connect(self._on_reset)
        p.datasetChanged.connect(self._on_dataset_choice)
        p.openPathRequested.connect(self.open_path)
        p.liveSettingChanged.connect(self._on_live)
        p.notice.connect(self.show_message)
        s.stateChanged.connect(self._on_state)
        s.message.connect(self.show_message)
        s.batchesArrived.connect(self._on_batches)
        s.trainProgress.connect(self._on_progress)
        s.epochArrived.connect(self._on_epoch)
        s.epochShown.connect(self._on_epoch_shown)
        s.markerAdded.connect(self._on_marker)
        s.historyReplaced.connect(self._on_history)
        s.mapReady.connect(self._on_map)
        s.mapCleared.connect(self._on_map_cleared)
        s.decoded.connect(self._on_decoded)
        s.exampleSelected.connect(self._on_example)
        s.datasetLoaded.connect(self._on_dataset_loaded)
        s.modelLoaded.connect(self._on_model_loaded)
        s.projectionProgress.connect(self._on_projection_progress)
        s.progressText.connect(self._on_progress_text)
        s.noticeWithdrawn.connect(self.withdraw_message)
        s.decodedCleared.connect(self._on_decoded_cleared)
        s.selectionCleared.connect(self._on_selection_cleared)
        s.datasetMismatch.connect(self._on_dataset_mismatch)
        self.latent_view.pickUndone.connect(self._on_pick_undone)
        self.latent_view.pointPicked.connect(self._on_point_picked)
        self.latent_view.dragFinished.connect(self._on_drag_finished)
        self.latent_view.exampleClicked.connect(self._on_example_clicked)
        self.map_toolbar.changed.connect(self._on_projection_choice)
        self._device_note: tuple[str, str] | None = None  # a loaded model's device, said once the GPUs are known
        QtCore.QTimer.singleShot(DEVICE_PROBE_DELAY_MS, self, self._ask_devices)

    # --------------------------------------------------------------- devices
    @Slot()
    def _ask_devices(self) -> None:
        """Ask on a worker thread which CUDA GPUs there are; the panel offers them when the answer comes."""
        self.session.tasks.start(_cuda_devices, self._on_devices, self._on_devices_failed)

    @Slot(object)
    def _on_devices(self, names: list) -> None:
        self.panel.set_devices(names)
        self._say_device_fallback()

    @Slot(str)
    def _on_devices_failed(self, text: str) -> None:
        self.panel.set_devices([])
        self.show_message("warning", f"Could not look for CUDA GPUs ({text}); training runs on the CPU.")
        self._say_device_fallback()

    def _say_device_fallback(self) -> None:
        """A loaded model that trained on a GPU continues on the CPU where there is none: say so."""
        devices = self.panel.devices()
        if self._device_note is None or devices is None:
            return
        (device, precision), self._device_note = self._device_note, None
        if device.startswith("cuda") and not devices:
            extra = " in float32" if precision != "fp32" else ""
            self.show_message("info", f"This model trained on {device}; there is no CUDA GPU here, so further "
                                      f"training runs on the CPU{extra}.")

    # --------------------------------------------------------------- actions
    @Slot()
    def start_training(self) -> None:
        """Train with the panel's settings: a new model, or the current one for more epochs."""
        try:
            if not self.panel.hidden_valid():
                raise ValueError("they must be comma-separated positive integers (or empty for a linear model)")
            model = self.panel.model_settings()
        except ValueError as exc:
            self.show_message("error", f"Hidden sizes: {exc}")
            return
        self.session.train(model, self.panel.train_settings())

    @Slot()
    def _on_pause(self) -> None:
        self.session.toggle_pause()

    @Slot()
    def _on_pause_shortcut(self) -> None:
        if self.session.running:
            self.session.toggle_pause()

    @Slot()
    def _on_stop(self) -> None:
        self.session.stop()

    @Slot()
    def _on_reset(self) -> None:
        if self.confirm_discard("Reset the model"):
            self.session.reset()

    # -------------------------------------------------------- unsaved work
    def ask_unsaved(self, action: str) -> str:
        """Ask whether to save the unsaved model before ``action``: SAVE, DISCARD or CANCEL."""
        box = QtWidgets.QMessageBox(self)
        box.setObjectName("unsavedDialog")
        box.setIcon(QtWidgets.QMessageBox.Warning)
        box.setWindowTitle("Unsaved model")
        box.setText(f"{action}: the model has unsaved training. Save it first?")
        box.setInformativeText("Discard loses the training since the model was last saved or opened.")
        box.setStandardButtons(QtWidgets.QMessageBox.Save | QtWidgets.QMessageBox.Discard
                               | QtWidgets.QMessageBox.Cancel)
        box.setDefaultButton(QtWidgets.QMessageBox.Save)
        answer = box.exec()
        if answer == QtWidgets.QMessageBox.Save:
            return SAVE
        if answer == QtWidgets.QMessageBox.Discard:
            return DISCARD
        return CANCEL

    def confirm_discard(self, action: str) -> bool:
        """True when ``action`` may drop the model: nothing is unsaved, or the user saved it or chose to discard it.

        Save saves now (stopping training; asking where when the model has
        no file yet) and goes on; Cancel, or a save that fails or is not
        given a file, stops the action.
        """
        if not self.session.unsaved or not _ask_about_unsaved:
            return True
        answer = self.ask_unsaved(action)
        if answer == DISCARD:
            return True
        if answer != SAVE:
            return False
        path = self.session.checkpoint_path or self._ask_save_path()
        return bool(path) and self.session.save_and_stop(path)

    @Slot(str)
    def _on_dataset_mismatch(self, text: str) -> None:
        """A dataset of another image size was opened while a model exists: replace the model with it, if the user agrees.

        Unsaved training is kept where nobody can be asked (a window made by a script).
        """
        if self.session.unsaved and not (_ask_about_unsaved
                                         and self.confirm_discard("Replace the model to train on the new dataset")):
            return
        self.session.take_offered_dataset()

    @Slot(str)
    def _on_dataset_choice(self, key: str) -> None:
        if self.session.running or self.session.has_model:
            return
        self.session.load_dataset(self.panel.dataset_settings())

    @Slot(str, object)
    def _on_live(self, name: str, value: Any) -> None:
        self.session.set_live(name, value)

    def load_initial_dataset(self, key: str = "digits") -> None:
        """Select a dataset in the panel and load it."""
        combo = self.panel.datasetCombo
        # The panel's own signals are held (this loads once, below), not the combo's: the panel
        # still enables the settings that belong to the choice (the Shapes count).
        self.panel.blockSignals(True)
        try:
            idx = combo.findData(key)
            if idx < 0:
                self.panel.add_dataset_entry(os.path.basename(key.rstrip("/")) or key, key)
                idx = combo.findData(key)
            combo.setCurrentIndex(idx)
        finally:
            self.panel.blockSignals(False)
        self.session.load_dataset(self.panel.dataset_settings())

    # ------------------------------------------------------------------ files
    def follow_run(self, path: str) -> bool:
        """Follow the run folder at ``path`` as it is written (``app.tools.runs``); False when it cannot be now."""
        if not self.confirm_discard(f"Follow {os.path.basename(path.rstrip(os.sep)) or path}"):
            return False
        return self.runs.follow(path)

    def open_path(self, path: str) -> None:
        if not path:
            return
        if not os.path.exists(path):
            self.show_message("error", f"{path}: no such file or folder.")
            return
        if is_checkpoint_path(path):
            if not self.confirm_discard(f"Open {os.path.basename(path)}"):
                return
            self.session.stop_and_wait()  # the opened model replaces the one training
            self._add_recent(path)
            self.session.load_checkpoint(path)
            return
        self._add_recent(path)
        if self.session.running:
            self.show_message("warning", "Stop training before opening another dataset.")
            return
        if self.session.has_model:
            # The model stays: the session switches only to data of the model's image size
            # and says what is wrong with anything else.
            self.session.load_dataset({**self.panel.dataset_settings(), "source": path})
            return
        label = os.path.basename(path.rstrip("/")) or path
        self.panel.blockSignals(True)
        self.panel.add_dataset_entry(label, path)
        self.panel.blockSignals(False)
        self.session.load_dataset(self.panel.dataset_settings())

    @Slot()
    def open_folder_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a folder of images", self.last_directory())
        if path:
            self.remember_directory(path)
            self.open_path(path)

    @Slot()
    def open_file_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open a dataset or checkpoint", self.last_directory(),
            "Datasets and checkpoints (*.npy *.npz *.gz *ubyte *idx* *.ckpt *.safetensors);;Checkpoints (*.ckpt *.safetensors);;All files (*)")
        if path:
            self.remember_directory(os.path.dirname(path))
            self.open_path(path)

    @Slot()
    def open_checkpoint_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open a checkpoint", self.last_directory(), "Checkpoints (*.ckpt *.safetensors);;All files (*)")
        if path:
            self.remember_directory(os.path.dirname(path))
            self.open_path(path)

    @Slot()
    def save_checkpoint(self) -> None:
        if self.session.checkpoint_path and self.session.has_model:
            self.session.save_checkpoint(self.session.checkpoint_path)
        else:
            self.save_checkpoint_as()

    @Slot()
    def save_checkpoint_as(self) -> None:
        if not self.session.has_model:
            self.show_message("warning", "There is no trained model to save yet.")
            return
        path = self._ask_save_path()
        if path:
            self.session.save_checkpoint(path)

    def _ask_save_path(self) -> str:
        """A checkpoint file name from the save dialog ("" when the user cancels it)."""
        name = f"{self.session.dataset.name if self.session.dataset is not None else 'model'}.ckpt"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save checkpoint", os.path.join(self.last_directory(), name), "Checkpoints (*.ckpt)")
        if not path:
            return ""
        if not is_checkpoint_path(path):
            path += ".ckpt"
        self.remember_directory(os.path.dirname(path))
        self._add_recent(path)
        return path

    @Slot()
    def export_map_png(self) -> None:
        if self.session.xy is None:
            self.show_message("warning", "There is no latent map to export yet.")
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export latent map", os.path.join(self.last_directory(), "latent-map.png"), "PNG images (*.png)")
        if path:
            self.latent_view.export_png(path)
            self.show_message("info", f"Saved the latent map to {path}")

    @Slot()
    def export_latents_csv(self) -> None:
        if self.session.latents is None:
            self.show_message("warning", "There are no latent codes to export yet.")
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export latents", os.path.join(self.last_directory(), "latents.csv"), "CSV files (*.csv)")
        if path:
            self.session.export_latents_csv(path)

    @Slot()
    def export_decoded_png(self) -> None:
        img = self.decode_canvas.image()
        if img is None:
            self.show_message("warning", "Click on the latent map first to decode a point.")
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export decoded image", os.path.join(self.last_directory(), "decoded.png"), "PNG images (*.png)")
        if path:
            save_array_png(img, path)
            self.show_message("info", f"Saved the decoded image to {path}")

    def last_directory(self) -> str:
        """Where file dialogs open: the folder of the last file opened or saved (home at first)."""
        return str(settings().value("lastDir", os.path.expanduser("~")))

    def remember_directory(self, d: str) -> None:
        """The folder the next file dialog opens in."""
        settings().setValue("lastDir", d)

    def recent_files(self) -> list[str]:
        v = settings().value("recentFiles", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def _add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        items = [p for p in self.recent_files() if p != path]
        items.insert(0, path)
        settings().setValue("recentFiles", items[:MAX_RECENT])
        self._rebuild_recent()

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        items = self.recent_files()
        for p in items:
            act = self.recent_menu.addAction(p)
            act.setData(p)
            act.triggered.connect(self._open_recent)
        if not items:
            a = self.recent_menu.addAction("(none)")
            a.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear list")
            clear.triggered.connect(self._clear_recent)

    @Slot()
    def _open_recent(self) -> None:
        act = self.sender()
        if isinstance(act, QtGui.QAction) and act.data():
            self.open_path(str(act.data()))

    @Slot()
    def _clear_recent(self) -> None:
        settings().setValue("recentFiles", [])
        self._rebuild_recent()

    # ------------------------------------------------------------ drag & drop
    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.open_path(urls[0])

    # -------------------------------------------------------- session → view
    @Slot(str)
    def _on_state(self, state: str) -> None:
        panel_state = {EMPTY: "idle", IDLE: "idle", LOADING: "busy", TRAINING: "training", PAUSED: "paused", TRAINED: "trained"}[state]
        if state == LOADING and self.session.loading_dataset and not self.session.has_model:
            panel_state = "loading"  # the settings stay editable and Train waits for the data
        if self._progress_timer.isActive():  # the last progress goes out before the panel shows the new state
            self._progress_timer.stop()
            self._show_progress()
        self.panel.set_state(panel_state)
        if state != LOADING:
            self._show_dataset_choice()
        running = state in (TRAINING, PAUSED)
        self.busy_bar.setVisible(state == LOADING)
        self.pause_action.setEnabled(running)
        self.stop_action.setEnabled(running or state == LOADING)
        self.train_action.setEnabled(state in (IDLE, TRAINED) or panel_state == "loading")
        has_model = self.session.has_model
        self.save_action.setEnabled(has_model)
        self.save_as_action.setEnabled(has_model)
        self.reset_action.setEnabled(state == TRAINED)
        has_map = self.session.latents is not None
        self.export_latents_action.setEnabled(has_map)
        self.export_map_action.setEnabled(has_map)
        text = {EMPTY: "No dataset", IDLE: "Ready to train", LOADING: "Loading…", TRAINING: "Training", PAUSED: "Paused", TRAINED: "Model ready"}[state]
        if state == TRAINED and self.session.last_epoch is not None:
            self._show_epoch_text(self.session.last_epoch)  # the model's figures say more than "ready"
        else:
            self.state_label.setText(text)
            self.state_label.setToolTip("")

    @Slot(str, str)
    def show_message(self, level: str, text: str) -> None:
        """Tell the user: "info" in the status bar; "warning" and "error" also in the bar above the map."""
        if level == "info":
            self.statusBar().showMessage(text, 8000)
            if self.message_bar.isVisible() and self.message_bar.level == "info":
                self.message_bar.hide()
        else:
            self.message_bar.show_message(level, text)
            self.statusBar().showMessage(text, 8000)

    def revise_message(self, old: str, new: str) -> None:
        """Put ``new`` in place of ``old`` where ``old`` is still shown above the map."""
        bar = self.message_bar
        if bar.isVisible() and bar.text.text() == old:
            bar.text.setText(new)

    def withdraw_message(self, text: str) -> None:
        """``text`` no longer holds: take it off the bar above the map and off the status line.

        The status line repeats warnings for a few seconds; the version there
        may have other figures, so it goes when it matches up to its first colon.
        """
        bar = self.message_bar
        if bar.isVisible() and bar.text.text() == text:
            bar.hide()
        status = self.statusBar()
        current = status.currentMessage()
        if current and current.split(":", 1)[0] == text.split(":", 1)[0]:
            status.clearMessage()

    @Slot(object)
    def _on_batches(self, b: dict) -> None:
        self.loss_plot.append(b["step"], b["recon"], b["kl"], b["loss"], wall_s=b["wall_s"])

    @Slot(str)
    def _on_progress_text(self, text: str) -> None:
        if self._progress_timer.isActive():  # a batch's progress waiting to be shown is older than this
            self._progress_timer.stop()
            self._progress_pending = None
        self.panel.reset_progress(text)

    @Slot(object)
    def _on_progress(self, p: dict) -> None:
        # The progress bar and its text change at most a few times a second: each change repaints them.
        self._progress_pending = p
        if not self._progress_timer.isActive():
            self._show_progress()
            self._progress_timer.start()

    @Slot()
    def _show_progress(self) -> None:
        p, self._progress_pending = self._progress_pending, None
        if p is not None:
            self.panel.set_progress(p["epoch"], p["n_epochs"], p["batch"], p["n_batches"], p["samples_per_s"], p["eta_s"])

    @Slot(object)
    def _on_epoch(self, ev: EpochEvent) -> None:
        self.loss_plot.add_epoch(ev.step, ev.test_recon, ev.test_kl, -ev.test_elbo)

    @Slot(object)
    def _on_epoch_shown(self, e: EpochSummary) -> None:
        self._show_epoch_text(e)
        self.export_latents_action.setEnabled(True)
        self.export_map_action.setEnabled(True)

    def _show_epoch_text(self, e: EpochSummary) -> None:
        """The epoch's figures in the status bar: all of them where the window is wide, the main ones elsewhere."""
        full = epoch_text(e)
        self.state_label.setText(full if self.width() >= COMPACT_WIDTH else epoch_text(e, short=True))
        self.state_label.setToolTip(full)

    @Slot(int, str)
    def _on_marker(self, step: int, text: str) -> None:
        self.loss_plot.add_marker(step, text)

    @Slot(object)
    def _on_history(self, h: HistoryView) -> None:
        if h.empty:
            self.loss_plot.clear()
        else:
            self.loss_plot.set_history(h.steps, h.recon, h.kl, h.loss, epochs=h.epochs, markers=h.markers,
                                       wall_s=h.wall_s)

    @Slot(object)
    def _on_map(self, m: MapView) -> None:
        follow = m.autorange or not self.latent_view.user_navigated()
        self.latent_view.set_points(m.xy, m.labels, m.label_names, autorange=follow)
        self.latent_view.set_axis_labels(m.x_label, m.y_label)
        self.map_toolbar.set_latent_dim(m.latent_dim)
        self.export_latents_action.setEnabled(True)
        self.export_map_action.setEnabled(True)

    @Slot(str)
    def _on_map_cleared(self, text: str) -> None:
        """No codes on the map any more: everything drawn from the previous ones goes."""
        self.latent_view.set_points(np.zeros((0, 2), np.float32), None, None)
        self.latent_view.set_message(text)
        self.latent_view.set_axis_labels("", "")  # no layout: no projection to name
        self.latent_view.hide_crosshair()
        self.latent_view.set_far_indicator(False)
        self.latent_view.set_highlight(None)
        self.decode_canvas.clear()
        self.recon_pair.clear()
        self.coords_label.setText("")

    @Slot()
    def _on_decoded_cleared(self) -> None:
        self.latent_view.hide_crosshair()
        self.latent_view.set_far_indicator(False)
        self.decode_canvas.clear()
        self.coords_label.setText("")

    @Slot()
    def _on_selection_cleared(self) -> None:
        self.recon_pair.clear()
        self.latent_view.set_highlight(None)

    @Slot(object, object)
    def _on_pick_undone(self, point: Any, example: Any) -> None:
        """A double click on the map: the decoded point and the selection go back to before its first click."""
        self.session.restore_pick(point, example)

    @Slot(object, object, float, float, bool)
    def _on_decoded(self, img: np.ndarray, code: np.ndarray, x: float, y: float, far: bool) -> None:
        self.decode_canvas.set_image(img)
        self.latent_view.set_crosshair(x, y)
        self.latent_view.set_far_indicator(far)
        ztxt = "z = " + code_text(code)
        where = f"map ({x:+.2f}, {y:+.2f})"
        warn = "  ⚠ far from data" if far else ""
        self.decode_canvas.set_caption(ztxt + warn)
        self.coords_label.setText(f"{where}  {ztxt}{warn}")
        self.coords_label.setToolTip("Far from any data: the decoder is extrapolating" if far else "")
        if self._drag_quiet:
            # Paint the new image now rather than after whatever else waits in the event queue.
            self.decode_canvas.repaint()

    @Slot(int, str, object, object)
    def _on_example(self, index: int, title: str, original: np.ndarray, recon: np.ndarray | None) -> None:
        if recon is None:
            recon = np.zeros_like(original)
        self.recon_pair.set_pair(original, recon, title=title)
        self.latent_view.set_highlight(index)

    @Slot(object)
    def _on_dataset_loaded(self, ds: Dataset) -> None:
        self.latent_view.set_images(images_for_display(ds.images))
        if self.session.latents is None:
            self.latent_view.set_message(f"{ds.name}: {ds.n:,} images. Press Train to see the latent map.")
        self._show_dataset_choice()
        self.setWindowTitle(f"{ds.name} — {APP}")

    def _show_dataset_choice(self) -> None:
        """The panel's dataset choice is the session's dataset (after a load, a failed one or a stopped one)."""
        ds = self.session.dataset
        if ds is None or self.panel.current_dataset_key() == ds.spec.source:
            return
        self.panel.blockSignals(True)
        try:
            self.panel.add_dataset_entry(ds.name, ds.spec.source)
        finally:
            self.panel.blockSignals(False)

    @Slot(object, object, object)
    def _on_model_loaded(self, model: dict, train: dict, dataset: Any) -> None:
        m = {k: v for k, v in model.items() if k != "input_shape"}
        m["hidden_dims"] = tuple(m.get("hidden_dims", ()))
        ds = dict(dataset) if isinstance(dataset, dict) else None
        self.panel.blockSignals(True)
        try:
            self.panel.apply_settings(model=m, train=train, dataset=ds)
        finally:
            self.panel.blockSignals(False)
        self.map_toolbar.set_latent_dim(int(model.get("latent_dim", 2)))
        self._device_note = (str(train.get("device", "auto")), str(train.get("precision", "fp32")))
        self._say_device_fallback()

    @Slot(float, str)
    def _on_projection_progress(self, fraction: float, text: str) -> None:
        self.map_toolbar.set_progress(fraction, text)

    # ---------------------------------------------------------- view → session
    @Slot(float, float)
    def _on_point_picked(self, x: float, y: float) -> None:
        if self.latent_view.dragging() and not self._drag_quiet:
            # While the user drags, the decoded image comes first: the map keeps its points
            # until the release and the curves redraw at a few hertz.
            self._drag_quiet = True
            self.session.hold_map(True)
            self.loss_plot.set_redraw_interval(DRAG_CURVE_INTERVAL_MS)
        self.session.decode_at(x, y)

    @Slot()
    def _on_drag_finished(self) -> None:
        if self._drag_quiet:
            self._drag_quiet = False
            self.session.hold_map(False)
            self.loss_plot.set_redraw_interval(CURVE_INTERVAL_MS)

    @Slot(int)
    def _on_example_clicked(self, index: int) -> None:
        self.session.select_example(index)

    @Slot(str, int, int)
    def _on_projection_choice(self, mode: str, i: int, j: int) -> None:
        self.session.set_projection(mode, (i, j))

    @Slot()
    def _toggle_log(self) -> None:
        self.loss_plot.set_log_y(self.log_action.isChecked())

    # ------------------------------------------------------------ theme, help
    @Slot(QtGui.QAction)
    def _on_theme_action(self, act: QtGui.QAction) -> None:
        key = act.data()
        theme.apply(QtWidgets.QApplication.instance(), key)
        settings().setValue("theme", key)

    def set_theme(self, key: str) -> None:
        if key not in self.theme_actions:
            key = "system"
        self.theme_actions[key].setChecked(True)
        theme.apply(QtWidgets.QApplication.instance(), key)

    @Slot()
    def show_shortcuts(self) -> None:
        rows = [
            ("Space", "Pause or resume training"), ("Ctrl+Return", "Train"), ("Ctrl+.", "Stop training"),
            ("Ctrl+O", "Open a dataset file or a checkpoint"), ("Ctrl+Shift+O", "Open a checkpoint"),
            ("Ctrl+S", "Save checkpoint"), ("Ctrl+Shift+S", "Save checkpoint as"), ("Ctrl+L", "Log scale for the loss curves"),
            ("Left drag on the map", "Decode the point under the cursor, continuously"),
            ("Click a point", "Show that example and its reconstruction"),
            ("Right or middle drag, wheel", "Pan and zoom the map"), ("Double click on the map", "Fit the map to the data"),
            ("Ctrl+Q", "Quit"),
        ]
        html = "<table cellspacing='6'>" + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows) + "</table>"
        box = QtWidgets.QMessageBox(self)
        box.setObjectName("shortcutsDialog")
        box.setWindowTitle("Keyboard shortcuts")
        box.setTextFormat(QtCore.Qt.RichText)
        box.setText(html)
        box.setModal(False)
        box.show()

    @Slot()
    def show_about(self) -> None:
        from . import __version__

        box = QtWidgets.QMessageBox(self)
        box.setObjectName("aboutDialog")
        box.setWindowTitle("About Latent Explorer")
        box.setTextFormat(QtCore.Qt.RichText)
        box.setText(
            f"<h3>Latent Explorer {__version__}</h3>"
            "<p>Train a Variational Autoencoder and look inside it: live loss curves, the latent map, "
            "and the decoder's answer for any point you click.</p>"
            "<p>All numbers are in nats per example. The ELBO is a lower bound on log p(x); the loss is "
            "−ELBO when β = 1.</p>")
        box.setModal(False)
        box.show()

    # ------------------------------------------------------------ persistence
    def _restore_layout(self) -> None:
        s = settings()
        geo = s.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        st = s.value("windowState")
        if st is not None and self.restoreState(st):
            self._arranged = True  # the docks are where the user left them
        sp = s.value("splitter")
        if sp is not None:
            self.splitter.restoreState(sp)

    def save_layout(self) -> None:
        s = settings()
        s.setValue("geometry", self.saveGeometry())
        s.setValue("windowState", self.saveState())
        s.setValue("splitter", self.splitter.saveState())

    def view_state(self) -> dict:
        """How the model is shown and trained here, as plain values: map mode and axes, epochs to train."""
        return {"map_mode": self.session.map.mode, "map_dims": [int(d) for d in self.session.map.dims],
                "epochs": int(self.panel.epochsSpin.value())}

    def apply_view_state(self, state: dict) -> None:
        """Show the model as ``state`` (from ``view_state``) says; keys that are missing or do not fit are ignored."""
        epochs = state.get("epochs")
        if isinstance(epochs, int) and epochs > 0:
            self.panel.apply_settings(train={"epochs": epochs})
        self.map_toolbar.select(state.get("map_mode"), state.get("map_dims"))

    def _restore_view_options(self) -> None:
        """The map's drawing options and the curves' smoothing and x axis, as the user last left them."""
        s = settings()
        options = s.value("mapViewOptions")
        if isinstance(options, dict):
            self.latent_view.set_view_options(options)
        smoothing = s.value("curveSmoothing")
        if smoothing is not None:
            try:
                self.loss_plot.set_smoothing(float(smoothing))
            except (TypeError, ValueError):
                pass
        axis = s.value("curveXAxis")
        if axis in ("step", "wall"):
            self.loss_plot.set_x_axis(str(axis))

    def _wire_view_options(self) -> None:
        self.latent_view.viewOptionsChanged.connect(self._store_map_options)
        self.loss_plot.smoothingChanged.connect(self._store_smoothing)
        self.loss_plot.xAxisChanged.connect(self._store_x_axis)

    @Slot(dict)
    def _store_map_options(self, options: dict) -> None:
        settings().setValue("mapViewOptions", dict(options))

    @Slot(float)
    def _store_smoothing(self, weight: float) -> None:
        settings().setValue("curveSmoothing", float(weight))

    @Slot(str)
    def _store_x_axis(self, mode: str) -> None:
        settings().setValue("curveXAxis", mode)

    def _curves_height(self) -> int:
        """The loss curves' share of the window's height: 280 pixels, less in a short window."""
        return max(150, min(280, int(0.32 * self.height())))

    def tool_docks(self) -> list[QtWidgets.QDockWidget]:
        """The docks of the tools (Explore and the like): every dock but the panel, the curves and the KL bars."""
        own = (self.panel_dock, self.loss_dock, self.monitor.kl_dock)
        return [d for d in self.findChildren(QtWidgets.QDockWidget) if d not in own and d.parent() is self]

    def _arrange_docks(self) -> None:
        """Tool docks open as tabs with the KL bars under the map, so opening one never takes the map's width
        (the user may drag them elsewhere); in a window narrower than COMPACT_WIDTH the KL bars are a tab of
        the loss curves' dock too."""
        self._arranged = True
        kl = self.monitor.kl_dock
        if self.width() < COMPACT_WIDTH:
            self.tabifyDockWidget(self.loss_dock, kl)
        for dock in self.tool_docks():
            hidden = dock.isHidden()
            dock.setFloating(False)
            dock.setHidden(False)  # a hidden dock is not tabified
            self.addDockWidget(QtCore.Qt.BottomDockWidgetArea, dock)
            self.tabifyDockWidget(kl, dock)
            dock.setHidden(hidden)
            if dock not in self._widened:
                dock.visibilityChanged.connect(self._on_tool_dock_shown)
        (self.loss_dock if self.width() < COMPACT_WIDTH else kl).raise_()
        self.resizeDocks([self.loss_dock], [self._curves_height()], QtCore.Qt.Vertical)
        self._unclip_dock_tabs()

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        if not self._arranged:
            self._arrange_docks()
        super().showEvent(event)

    def show_tool_dock(self, dock: QtWidgets.QDockWidget) -> None:
        """Show a tool's dock as the front tab of its group (beside the curves: the map keeps its size)."""
        dock.show()
        dock.raise_()

    @Slot(bool)
    def _on_tool_dock_shown(self, visible: bool) -> None:
        """A tool opened for the first time beside the curves gets TOOL_SHARE of the width under the map (images need room)."""
        dock = self.sender()
        if not visible or not isinstance(dock, QtWidgets.QDockWidget) or dock in self._widened:
            return
        self._widened.add(dock)
        self._unclip_dock_tabs()
        if dock.isFloating() or self.dockWidgetArea(dock) != QtCore.Qt.BottomDockWidgetArea:
            return
        if self.loss_dock in self.tabifiedDockWidgets(dock) or self.loss_dock.isHidden():
            return
        room = self.loss_dock.width() + dock.width()
        want = min(int(TOOL_SHARE * room), room - self.loss_dock.minimumSizeHint().width())
        if dock.width() < want:
            self.resizeDocks([self.loss_dock, dock], [room - want, want], QtCore.Qt.Horizontal)

    def _unclip_dock_tabs(self) -> None:
        """Tabs of docks show their whole titles (scroll buttons when they do not fit), never "Posteri…"."""
        for bar in self.findChildren(QtWidgets.QTabBar):
            if bar.parent() is self:
                bar.setElideMode(QtCore.Qt.ElideNone)
                bar.setUsesScrollButtons(True)

    @Slot()
    def reset_layout(self) -> None:
        self.panel_dock.show()
        self.loss_dock.show()
        self.panel_dock.setFloating(False)
        self.loss_dock.setFloating(False)
        self.addDockWidget(QtCore.Qt.LeftDockWidgetArea, self.panel_dock)
        self.addDockWidget(QtCore.Qt.BottomDockWidgetArea, self.loss_dock)
        kl = self.monitor.kl_dock
        kl.setFloating(False)
        self.addDockWidget(QtCore.Qt.BottomDockWidgetArea, kl)
        self.splitDockWidget(self.loss_dock, kl, QtCore.Qt.Horizontal)
        self.resizeDocks([self.loss_dock, kl], [3, 1], QtCore.Qt.Horizontal)
        self._arrange_docks()
        self.splitter.setSizes([700, 300])

    def close_without_asking(self) -> bool:
        """Close at once, whatever is unsaved (Ctrl+C, SIGTERM): a recovery copy keeps unsaved training."""
        self._ask_on_close = False
        return self.close()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        ask, self._ask_on_close = self._ask_on_close and _ask_about_unsaved, True
        if ask:
            if not self.confirm_discard("Close Latent Explorer"):
                event.ignore()
                return
            # Nothing unsaved is left (saved, discarded or none): no recovery copy is kept.
            self.recovery.discard_own()
        was_training = self.session.running
        self.save_layout()
        self.explore_tools.close()
        self.monitor.close()
        self.runs.close()
        self.selection_tools.close()
        self.experiments.close()
        self.runs_panel.close()
        ok = self.session.shutdown(2000)
        if not ok:
            self.statusBar().showMessage("Background work did not stop in time; closing anyway.")
        self.recovery.close(was_training)  # keeps an up-to-date recovery file of unsaved training
        event.accept()


def epoch_text(e: EpochSummary, short: bool = False) -> str:
    """The status line of an epoch's held-out figures (``short``: the ELBO and the active units only)."""
    if short:
        return f"Epoch {e.epoch}: ELBO {e.test_elbo:.2f} nats · {e.active_units}/{len(e.kl_per_dim)} active units"
    return (f"Epoch {e.epoch}: held-out ELBO {e.test_elbo:.2f} nats (recon {e.test_recon:.2f}, KL {e.test_kl:.2f}); "
            f"{e.active_units}/{len(e.kl_per_dim)} active units")


def save_array_png(img: np.ndarray, path: str) -> None:
    """Write an (H, W) or (H, W, 3) float image in [0, 1] as PNG (through Qt, no extra dependency)."""
    arr = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    u8 = np.ascontiguousarray((arr * 255 + 0.5).astype(np.uint8))
    if u8.ndim == 2:
        qimg = QtGui.QImage(u8.data, u8.shape[1], u8.shape[0], u8.strides[0], QtGui.QImage.Format_Grayscale8)
    else:
        qimg = QtGui.QImage(u8.data, u8.shape[1], u8.shape[0], u8.strides[0], QtGui.QImage.Format_RGB888)
    if not qimg.copy().save(path, "PNG"):
        raise OSError(f"could not write {path}")
