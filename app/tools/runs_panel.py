"""The Runs panel (``runsPanel``): every run, with its key figures, to rename, reopen, delete and compare.

* The panel lists the run folders under the window's runs folder
  (``app.tools.runs``: where runs trained here are recorded), the run
  folders followed here (File ▸ Follow run) and the checkpoints opened
  here.  The followed and opened ones are remembered across restarts
  (settings, like the recent files) and dropped once their files are gone.
* A row shows the run's name, dataset, status, epochs, beta, latent
  dimensions, the held-out ELBO of its last epoch (nats per example, from
  the last epoch event or the checkpoint's history) and when it was last
  updated; its tooltip names the folder or file.  The run training in this
  window is in bold and says so.
* Rename (double-click the name, F2, or Rename) stores the name in the run
  folder's ``config.json`` (``vae_core.runs.set_run_name``); a checkpoint
  without a run folder keeps its name in the settings.  Reopen (or a
  double-click elsewhere on the row) opens the run's latest checkpoint as
  File ▸ Open does.  Delete removes a run folder from the disk after asking,
  and only takes an opened checkpoint off the list; the run training or
  followed here cannot be deleted.
* Checked runs (two to four with a checkpoint) are compared side by side
  (``compareAction``, ``app.tools.comparison``).

The panel reads the folders again on its worker thread when it is shown,
when a training here starts, ends an epoch or stops, after a rename or a
delete, and with Refresh; the GUI thread reads no run folder or checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from ..run_folders import LATEST_CHECKPOINT, RunLister, RunListing, RunSummary, delete_run_folder
from ..session import PAUSED
from ..worker import LatestWins
from .explore_docks import _Dock
from .runs import age_text

if TYPE_CHECKING:
    from ..main_window import MainWindow

Slot = QtCore.Slot

#: Runs compared at once.
MIN_COMPARED, MAX_COMPARED = 2, 4
#: Followed run folders and opened checkpoints remembered across restarts, newest first.
MAX_REMEMBERED = 200
#: Settings keys: the remembered paths (a JSON list) and the names of plain checkpoints (a JSON object).
EXTRAS_KEY = "runsPanel/extras"
NAMES_KEY = "runsPanel/names"
#: Requests for a new listing within this many milliseconds of the first give one listing.
REFRESH_DELAY_MS = 250
#: A training here whose folder is not listed yet is looked for after batches this many times at most
#: (a folder that cannot be written never appears; its epochs still ask for listings).
LOOK_FOR_RUN_TRIES = 20
EMPTY_TEXT = "Train a model, open a checkpoint or follow a run: every run appears here."
NOT_RECORDED_TEXT = ("Runs trained in this window are not recorded here (the program has no data folder; "
                     "set LATENT_EXPLORER_RUNS to a folder to record them).")
INFO_TEXT = ("Every run trained in this window, followed or opened. Check two to four and press Compare; "
             "double-click a name to rename it, any other cell to reopen the run.")

NAME, DATASET, STATUS, EPOCHS, BETA, LATENT, ELBO, UPDATED = range(8)
COLUMNS = (
    ("Name", "The run's name: double-click (or F2) to rename it. Check runs to compare them."),
    ("Dataset", "The dataset the run trains on"),
    ("Status", "The run's last status: training, paused, stopped, finished or diverged; "
               "\"checkpoint\" for a checkpoint file without a run folder"),
    ("Epochs", "Epochs completed"),
    ("β", "The KL weight beta (0: an autoencoder, 1: the true ELBO), as last set"),
    ("Latent", "Latent dimensions"),
    ("ELBO (nats)", "Held-out ELBO of the last epoch, nats per example: a lower bound on log p(x), "
                    "so negative and higher is better"),
    ("Updated", "When the run last wrote an event (a checkpoint file: when it was written)"),
)
#: The data role that holds a cell's sort key.
SORT_ROLE = int(QtCore.Qt.UserRole) + 1


def install(window: "MainWindow") -> "RunsPanelTool":
    """Add the Runs panel, its View-menu toggle and ``compareAction`` to ``window``."""
    return RunsPanelTool(window)


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def elbo_text(value: float | None) -> str:
    """"−93.41" (the sign always written), "–" when unknown."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.2f}".replace("-", "−")


def updated_text(t: float | None) -> str:
    """"14 Dec 15:31" ("14 Dec 2025 15:31" in another year), "–" when unknown."""
    if t is None:
        return "–"
    when = _dt.datetime.fromtimestamp(t)
    return when.strftime("%d %b %H:%M" if when.year == _dt.datetime.now().year else "%d %b %Y %H:%M")


class _Item(QtWidgets.QTableWidgetItem):
    """A cell sorted by its SORT_ROLE value (numbers as numbers; unknown values first)."""

    def __lt__(self, other: QtWidgets.QTableWidgetItem) -> bool:
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if a is None or b is None:
            return a is None and b is not None
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class RunsPanelTool(QtCore.QObject):
    """The Runs panel: its dock, its table, its buttons and ``compareAction``."""

    #: list[RunSummary], each time the table has been filled anew.
    listed = QtCore.Signal(object)

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.w = window
        self.s = window.session
        self.runs: list[RunSummary] = []
        self._listed = False
        self._checked: set[str] = set()  # normalised keys (folders or checkpoint files) checked for comparison
        self._filling = False
        self._looked_for: dict[str, int] = {}  # run folders of trainings here not listed yet: listings asked for
        self._lister = RunLister()  # used on the worker thread only
        self._worker = LatestWins(self)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        self._build()
        self._wire()
        self._fill()

    # ------------------------------------------------------------------ build
    def _build(self) -> None:
        w = self.w
        d = self.dock = _Dock("Runs", "runsPanel", w)
        w.addDockWidget(QtCore.Qt.BottomDockWidgetArea, d)
        d.info.setObjectName("runsInfo")
        d.info.setText(INFO_TEXT)

        self.compare_action = QtGui.QAction("&Compare checked runs", w)
        self.compare_action.setObjectName("compareAction")
        self.compare_action.triggered.connect(self.compare)
        w.addAction(self.compare_action)

        def button(name: str, text: str, slot: Any, tip: str) -> QtWidgets.QToolButton:
            b = QtWidgets.QToolButton()
            b.setObjectName(name)
            b.setText(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            return b

        self.compare_button = button("compareButton", "Compare", self.compare_action.trigger, "")
        self.reopen_button = button("reopenRunButton", "Reopen", self.reopen_current,
                                    "Open the run's latest checkpoint, as File ▸ Open does")
        self.rename_button = button("renameRunButton", "Rename", self.rename_current, "Give the run another name")
        self.delete_button = button("deleteRunButton", "Delete…", self.delete_current,
                                    "Delete the run's folder (after asking); a checkpoint file is only taken off the list")
        self.refresh_button = button("refreshRunsButton", "Refresh", self.refresh, "Read the runs again")
        for b in (self.compare_button, self.reopen_button, self.rename_button):
            d.controls.addWidget(b)
        d.controls.addStretch(1)
        d.exports.addWidget(self.delete_button)
        d.exports.addWidget(self.refresh_button)

        t = self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        t.setObjectName("runsTable")
        t.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        t.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        t.setEditTriggers(QtWidgets.QAbstractItemView.EditKeyPressed)
        t.setAlternatingRowColors(True)
        t.setWordWrap(False)
        t.verticalHeader().hide()
        t.setMinimumHeight(90)
        for col, (title, tip) in enumerate(COLUMNS):
            head = QtWidgets.QTableWidgetItem(title)
            head.setToolTip(tip)
            t.setHorizontalHeaderItem(col, head)
        header = t.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        header.setSortIndicator(UPDATED, QtCore.Qt.DescendingOrder)
        t.setSortingEnabled(True)
        # The row's context menu: the buttons' actions, and the run's folder in the file manager.
        t.setContextMenuPolicy(QtCore.Qt.ActionsContextMenu)
        for text, slot, key in (("Reopen", self.reopen_current, None), ("Rename", self.rename_current, None),
                                ("Delete…", self.delete_current, QtGui.QKeySequence.Delete),
                                ("Show in file manager", self.reveal_current, None)):
            act = QtGui.QAction(text, t)
            if key is not None:
                act.setShortcut(key)
                act.setShortcutContext(QtCore.Qt.WidgetShortcut)
            act.triggered.connect(slot)
            t.addAction(act)
        self.empty_label = QtWidgets.QLabel(EMPTY_TEXT)
        self.empty_label.setObjectName("runsEmptyLabel")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(QtCore.Qt.AlignCenter)
        self.empty_label.setEnabled(False)
        d.add_content(self.empty_label, 0)
        d.add_content(t)
        d.finish()
        d.hide()

        toggle = d.toggleViewAction()
        toggle.setObjectName("runsPanelAction")
        toggle.setText("&Runs")
        toggle.setStatusTip("Show or hide the Runs panel: every run, to rename, reopen, delete and compare")
        w.view_menu.insertAction(w.log_action, toggle)
        # Shown from the menu, the panel comes to the front of the tabs it shares.
        toggle.triggered.connect(lambda checked: checked and w.show_tool_dock(d))

    def _wire(self) -> None:
        s = self.s
        self.dock.visibilityChanged.connect(self._on_visibility)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemDoubleClicked.connect(self._on_double_click)
        self.table.currentCellChanged.connect(self._sync_buttons)
        s.stateChanged.connect(self._on_session_changed)
        s.epochArrived.connect(self._on_session_changed)
        s.batchesArrived.connect(self._on_batches)
        s.modelLoaded.connect(self._on_model_loaded)
        self.w.runs.follower.followingChanged.connect(self._on_following)

    # ------------------------------------------------------------- settings
    @staticmethod
    def _settings() -> QtCore.QSettings:
        from ..main_window import settings

        return settings()

    def _load_json(self, key: str, kind: type) -> Any:
        raw = self._settings().value(key, "")
        try:
            value = json.loads(str(raw)) if raw else kind()
        except ValueError:
            value = kind()
        return value if isinstance(value, kind) else kind()

    def remembered(self) -> list[str]:
        """The followed run folders and opened checkpoints kept across restarts, newest first."""
        return [str(p) for p in self._load_json(EXTRAS_KEY, list) if isinstance(p, str)]

    def _store_remembered(self, paths: list[str]) -> None:
        self._settings().setValue(EXTRAS_KEY, json.dumps(paths[:MAX_REMEMBERED]))

    def _names(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._load_json(NAMES_KEY, dict).items()}

    def _store_names(self, names: dict[str, str]) -> None:
        self._settings().setValue(NAMES_KEY, json.dumps(names))

    def remember(self, path: str) -> None:
        """Keep ``path`` (a run folder or a checkpoint file) in the list from now on, also after a restart.

        A run folder under the runs folder is listed anyway and is not kept.
        """
        full = os.path.abspath(path)
        root = self.w.runs.root
        if root is not None:
            folder = os.path.dirname(full) if os.path.basename(full) == LATEST_CHECKPOINT else full
            if _norm(os.path.dirname(folder)) == _norm(root):
                self.schedule_refresh()
                return
        paths = [p for p in self.remembered() if _norm(p) != _norm(full)]
        self._store_remembered([full, *paths])
        self.schedule_refresh()

    def _forget(self, paths: Iterable[str]) -> None:
        gone = {_norm(p) for p in paths}
        if not gone:
            return
        self._store_remembered([p for p in self.remembered() if _norm(p) not in gone])
        names = self._names()
        if any(_norm(k) in gone for k in names):
            self._store_names({k: v for k, v in names.items() if _norm(k) not in gone})

    # ---------------------------------------------------------------- listing
    def schedule_refresh(self) -> None:
        """Read the runs again shortly (requests meanwhile join that listing), if the panel is shown."""
        if self.dock.is_open and not self._timer.isActive():
            self._timer.start()

    @Slot()
    def refresh(self) -> None:
        """Read every run again on the worker thread; the table is filled anew and ``listed`` follows."""
        self._timer.stop()
        root, extras, lister = self.w.runs.root, self.remembered(), self._lister

        def job() -> RunListing:
            return lister.list(root, extras)

        self._worker.submit("list", job)

    @Slot(bool)
    def _on_visibility(self, visible: bool) -> None:
        if visible:
            self.refresh()

    @Slot(str)
    @Slot(object)
    def _on_session_changed(self, *_: Any) -> None:
        self.schedule_refresh()

    @Slot(object)
    def _on_batches(self, _batches: Any) -> None:
        """A training here has begun writing its folder: list it as soon as it exists."""
        run_dir = self.s.run_dir
        if run_dir is None or self._timer.isActive() or self._row_of(run_dir) is not None:
            return
        tries = self._looked_for.get(run_dir, 0)
        if tries < LOOK_FOR_RUN_TRIES and self.dock.is_open:
            self._looked_for[run_dir] = tries + 1
            self.schedule_refresh()

    @Slot(object, object, object)
    def _on_model_loaded(self, *_: Any) -> None:
        """A checkpoint opened here joins the list (a followed run joins as its folder, a restored copy not at all)."""
        path = self.s.checkpoint_path
        if path is None or self.s.trainer is not None or self.w.runs.following:
            return
        self.remember(path)

    @Slot(bool)
    def _on_following(self, on: bool) -> None:
        directory = self.w.runs.follower.directory
        if on and directory is not None:
            self.remember(directory)
        else:
            self.schedule_refresh()

    @Slot(str, object)
    def _on_done(self, kind: str, value: Any) -> None:
        if kind == "list":
            self._on_listed(value)
        elif kind.startswith("rename:"):
            ok, text = value
            if not ok:
                self.w.show_message("error", text)
            self.refresh()
        elif kind.startswith("delete:"):
            ok, text = value
            key = kind[len("delete:"):]
            if ok:
                self._forget([key])
                self._checked.discard(_norm(key))
                self.w.show_message("info", text)
            else:
                self.w.show_message("error", text)
            self.refresh()

    @Slot(str, str)
    def _on_failed(self, kind: str, text: str) -> None:
        if kind == "list":
            self.w.show_message("warning", f"Cannot list the runs: {text}")
        else:
            self.w.show_message("error", text)
            self.refresh()

    def _on_listed(self, listing: RunListing) -> None:
        if listing.error is not None:
            self.w.show_message("warning", listing.error)
        self._forget(listing.gone)
        names = self._names()
        named = {_norm(k): v for k, v in names.items()}
        self.runs = [r if r.is_folder or _norm(r.key) not in named else _renamed(r, named[_norm(r.key)])
                     for r in listing.runs]
        self._listed = True
        self._fill()
        self.listed.emit(list(self.runs))

    # ------------------------------------------------------------------ table
    def _here(self, run: RunSummary) -> str | None:
        """"training here", "paused here" or "followed here" for the run this window trains or follows now."""
        if run.directory is None:
            return None
        s = self.s
        if s.run_dir is not None and s.running and _norm(s.run_dir) == _norm(run.directory):
            return "paused here" if s.state == PAUSED else "training here"
        f = self.w.runs.follower
        if f.following and f.directory is not None and _norm(f.directory) == _norm(run.directory):
            return "followed here"
        return None

    def _busy_here(self, run: RunSummary) -> bool:
        return self._here(run) is not None

    def _fill(self) -> None:
        t = self.table
        current = self.current_run()
        keep = None if current is None else _norm(current.key)
        self._filling = True
        t.setSortingEnabled(False)
        t.setRowCount(0)
        t.setRowCount(len(self.runs))
        bold = QtGui.QFont(t.font())
        bold.setBold(True)
        now = time.time()
        for row, run in enumerate(self.runs):
            here = self._here(run)
            status = run.status_text() if here is None else here
            values = (
                (run.name, run.name.lower()),
                (run.dataset or "–", run.dataset.lower()),
                (status, status),
                (str(run.epochs), run.epochs),
                ("–" if run.beta is None else f"{run.beta:g}", run.beta),
                ("–" if run.latent_dim is None else str(run.latent_dim), run.latent_dim),
                (elbo_text(run.elbo), run.elbo),
                (updated_text(run.updated), run.updated),
            )
            tip = self._tooltip(run, here, now)
            for col, (text, key) in enumerate(values):
                item = _Item(text)
                item.setData(SORT_ROLE, key)
                item.setToolTip(tip)
                flags = QtCore.Qt.ItemIsEnabled | QtCore.Qt.ItemIsSelectable
                if col == NAME:
                    item.setData(QtCore.Qt.UserRole, run.key)
                    flags |= QtCore.Qt.ItemIsUserCheckable
                    if self._renamable(run):
                        flags |= QtCore.Qt.ItemIsEditable
                    item.setCheckState(QtCore.Qt.Checked if _norm(run.key) in self._checked else QtCore.Qt.Unchecked)
                if col in (EPOCHS, BETA, LATENT, ELBO):
                    item.setTextAlignment(int(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter))
                item.setFlags(flags)
                if here is not None:
                    item.setFont(bold)
                t.setItem(row, col, item)
        t.setSortingEnabled(True)
        self._filling = False
        if keep is not None:
            row = self._row_of(keep)
            if row is not None:
                t.setCurrentCell(row, NAME)
        empty = not self.runs
        self.empty_label.setVisible(empty)
        t.setVisible(not empty)
        if empty:
            text = "Looking for runs…" if not self._listed else EMPTY_TEXT
            if self._listed and self.w.runs.root is None:
                text += "\n" + NOT_RECORDED_TEXT
            self.empty_label.setText(text)
        self._sync_buttons()

    @staticmethod
    def _renamable(run: RunSummary) -> bool:
        return run.directory is None or run.error is None

    def _tooltip(self, run: RunSummary, here: str | None, now: float) -> str:
        lines = [f"Run folder {run.directory}" if run.is_folder else f"Checkpoint {run.key} (no run folder)"]
        if here == "training here":
            lines.append("Training in this window now")
        elif here == "paused here":
            lines.append("Training in this window now, paused")
        elif here == "followed here":
            lines.append("Followed in this window now (File ▸ Stop following to stop)")
        if run.is_folder:
            lines.append(f"Latest checkpoint {run.checkpoint}" if run.checkpoint is not None
                         else "No checkpoint yet (one is written after every epoch)")
        if run.updated is not None:
            lines.append(f"Updated {age_text(now - run.updated)}")
        if run.error is not None:
            lines.append(run.error)
        return "\n".join(lines)

    def _row_of(self, key: str) -> int | None:
        want = _norm(key)
        for row in range(self.table.rowCount()):
            item = self.table.item(row, NAME)
            if item is not None and _norm(str(item.data(QtCore.Qt.UserRole))) == want:
                return row
        return None

    def _run_at(self, row: int) -> RunSummary | None:
        item = self.table.item(row, NAME) if row >= 0 else None
        if item is None:
            return None
        key = _norm(str(item.data(QtCore.Qt.UserRole)))
        return next((r for r in self.runs if _norm(r.key) == key), None)

    def current_run(self) -> RunSummary | None:
        """The run of the table's current row (None without one)."""
        return self._run_at(self.table.currentRow())

    def select_run(self, path: str) -> bool:
        """Make the run of ``path`` (its folder or checkpoint) the current row; False when it is not listed."""
        row = self._row_of(path)
        if row is None:
            return False
        self.table.setCurrentCell(row, NAME)
        return True

    @Slot()
    @Slot(int, int, int, int)
    def _sync_buttons(self, *_: Any) -> None:
        run = self.current_run()
        here = None if run is None else self._here(run)
        self.reopen_button.setEnabled(run is not None and run.checkpoint is not None and here is None)
        self.rename_button.setEnabled(run is not None and self._renamable(run))
        self.delete_button.setEnabled(run is not None)
        if run is None:
            self.reopen_button.setToolTip("Choose a run in the table to reopen it")
        elif here is not None:
            self.reopen_button.setToolTip(f"{run.name} is on screen already ({here})")
        elif run.checkpoint is None:
            self.reopen_button.setToolTip(f"{run.name} has no checkpoint yet (one is written after every epoch)")
        else:
            self.reopen_button.setToolTip(f"Open {run.checkpoint}, as File ▸ Open does")
        self._sync_compare()

    def _sync_compare(self) -> None:
        checked = self.checked_runs()
        usable = [r for r in checked if r.checkpoint is not None]
        n = len(usable)
        ok = MIN_COMPARED <= n <= MAX_COMPARED
        if ok:
            tip = "Compare the checked runs side by side: " + ", ".join(r.name for r in usable)
        elif n > MAX_COMPARED:
            tip = f"Check at most {MAX_COMPARED} runs to compare them ({n} with a checkpoint are checked)"
        else:
            tip = f"Check {MIN_COMPARED} to {MAX_COMPARED} runs with a checkpoint to compare them ({n} checked)"
        if len(checked) > n:
            tip += f"; {len(checked) - n} checked without a checkpoint yet are left out"
        self.compare_action.setEnabled(ok)
        self.compare_button.setEnabled(ok)
        self.compare_action.setToolTip(tip)
        self.compare_action.setStatusTip(tip)
        self.compare_button.setToolTip(tip)

    @Slot(QtWidgets.QTableWidgetItem)
    def _on_item_changed(self, item: QtWidgets.QTableWidgetItem) -> None:
        if self._filling or item.column() != NAME:
            return
        run = self._run_at(item.row())
        if run is None:
            return
        key = _norm(run.key)
        checked = item.checkState() == QtCore.Qt.Checked
        if checked != (key in self._checked):
            if checked:
                self._checked.add(key)
            else:
                self._checked.discard(key)
            self._sync_compare()
        name = item.text().strip()
        if name != run.name:
            if not name:
                self.w.show_message("warning", "A run's name cannot be empty; it keeps its name.")
                self._filling = True
                item.setText(run.name)
                self._filling = False
                return
            self.rename(run.key, name)

    @Slot(QtWidgets.QTableWidgetItem)
    def _on_double_click(self, item: QtWidgets.QTableWidgetItem) -> None:
        run = self._run_at(item.row())
        if run is None:
            return
        if item.column() == NAME and self._renamable(run):
            self.table.editItem(item)
        else:
            self.reopen(run.key)

    # ---------------------------------------------------------------- actions
    def _find(self, key: str) -> RunSummary | None:
        want = _norm(key)
        return next((r for r in self.runs if _norm(r.key) == want), None)

    @Slot()
    def rename_current(self) -> None:
        """Edit the current run's name in the table (Enter stores it)."""
        row = self.table.currentRow()
        run = self._run_at(row)
        if run is not None and self._renamable(run):
            self.table.editItem(self.table.item(row, NAME))

    def rename(self, key: str, name: str) -> None:
        """Give the run ``key`` (its folder or checkpoint file) the name ``name``.

        A run folder stores it in its ``config.json`` (on the worker thread);
        a checkpoint without a folder keeps it in the settings.
        """
        run = self._find(key)
        name = name.strip()
        if run is None or not name:
            return
        if run.directory is None:
            names = {k: v for k, v in self._names().items() if _norm(k) != _norm(run.key)}
            names[run.key] = name
            self._store_names(names)
            self.runs = [_renamed(r, name) if r is run else r for r in self.runs]
            self._fill()
            self.listed.emit(list(self.runs))
            return
        directory = run.directory

        def job() -> tuple[bool, str]:
            from vae_core.errors import VAEError
            from vae_core.runs import set_run_name

            try:
                set_run_name(directory, name)
            except (OSError, VAEError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                return False, f"Could not rename the run {directory}: {why}. It keeps its name."
            return True, ""

        self._worker.submit(f"rename:{directory}", job)

    @Slot()
    def reopen_current(self) -> None:
        run = self.current_run()
        if run is not None:
            self.reopen(run.key)

    def reopen(self, key: str) -> None:
        """Open the latest checkpoint of the run ``key`` as File ▸ Open does (it asks about unsaved work)."""
        run = self._find(key)
        if run is None:
            return
        here = self._here(run)
        if here is not None:
            self.w.show_message("info", f"{run.name} is on screen already ({here}).")
            return
        if run.checkpoint is None:
            self.w.show_message("warning", f"{run.name} has no checkpoint yet: one is written after every epoch "
                                           f"(in {run.directory}).")
            return
        self.w.open_path(run.checkpoint)

    @Slot()
    def reveal_current(self) -> None:
        """Show the current run's folder (a plain checkpoint's: the folder it is in) in the file manager."""
        run = self.current_run()
        if run is not None:
            folder = run.directory if run.directory is not None else os.path.dirname(run.key)
            QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(folder))

    @Slot()
    def delete_current(self) -> None:
        run = self.current_run()
        if run is not None:
            self.delete(run.key)

    def _confirm(self, title: str, text: str, informative: str, ok_text: str) -> bool:
        box = QtWidgets.QMessageBox(self.w)
        box.setObjectName("deleteRunDialog")
        box.setIcon(QtWidgets.QMessageBox.Warning)
        box.setWindowTitle(title)
        box.setText(text)
        box.setInformativeText(informative)
        box.setStandardButtons(QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.Cancel)
        box.button(QtWidgets.QMessageBox.Yes).setText(ok_text)
        box.setDefaultButton(QtWidgets.QMessageBox.Cancel)
        return box.exec() == QtWidgets.QMessageBox.Yes

    def delete(self, key: str) -> None:
        """Delete the run ``key`` after asking: a run folder from the disk, a plain checkpoint from the list only.

        The run training or followed in this window now is refused, saying why.
        """
        run = self._find(key)
        if run is None:
            return
        if self._refuse_delete(run):
            return
        if run.directory is None:
            if not self._confirm("Remove from the list", f"Take {run.name} off the Runs list?",
                                 f"The checkpoint file {run.key} is not deleted: it stays on the disk, and "
                                 "opening it again brings it back to the list.", "Remove from list"):
                return
            self._forget([run.key])
            self._checked.discard(_norm(run.key))
            self.runs = [r for r in self.runs if r is not run]
            self._fill()
            self.listed.emit(list(self.runs))
            return
        informative = ("Its checkpoints, history and settings are removed from the disk; this cannot be undone.")
        if self.s.checkpoint_path is not None and _norm(os.path.dirname(self.s.checkpoint_path)) == _norm(run.directory):
            informative += " The model on screen came from it and stays open: save it elsewhere to keep it."
        if not self._confirm("Delete run", f"Delete the run folder {run.directory} and every file in it?",
                             informative, "Delete"):
            return
        if self._refuse_delete(run):  # it may have started training while the question was open
            return
        directory = run.directory
        if self.s.run_dir is not None and _norm(self.s.run_dir) == _norm(directory):
            self.s.run_dir = None  # training the model on screen further starts a folder of its own

        def job() -> tuple[bool, str]:
            try:
                delete_run_folder(directory)
            except ValueError as exc:
                return False, str(exc)
            except OSError as exc:
                why = exc.strerror or str(exc)
                return False, (f"Could not delete the run folder {directory}: {why}. What was removed before "
                               "the error is gone; the rest is where it was.")
            return True, f"Deleted the run folder {directory}."

        self._worker.submit(f"delete:{directory}", job)

    def _refuse_delete(self, run: RunSummary) -> bool:
        here = self._here(run)
        if here is None:
            return False
        if here == "followed here":
            why = "it is followed in this window: stop following it (File ▸ Stop following) first"
        else:
            why = "it is training in this window: stop the training first"
        self.w.show_message("warning", f"Cannot delete {run.name} ({run.directory}): {why}.")
        return True

    # --------------------------------------------------------------- compare
    def checked_runs(self) -> list[RunSummary]:
        """The listed runs checked for comparison, in the table's order (with or without a checkpoint)."""
        out = []
        for row in range(self.table.rowCount()):
            run = self._run_at(row)
            if run is not None and _norm(run.key) in self._checked:
                out.append(run)
        return out

    def set_checked(self, paths: Iterable[str]) -> None:
        """Check exactly the runs of ``paths`` (run folders, their ``latest.ckpt`` or checkpoint files).

        Runs not listed yet are checked once they appear; the runs are read again.
        """
        keys = set()
        for p in paths:
            full = os.path.abspath(str(p))
            keys.add(_norm(full))
            if os.path.basename(full) == LATEST_CHECKPOINT:
                keys.add(_norm(os.path.dirname(full)))  # a run folder's row stands for its latest checkpoint
        self._checked = keys
        self._filling = True
        for row in range(self.table.rowCount()):
            item = self.table.item(row, NAME)
            if item is not None:
                key = _norm(str(item.data(QtCore.Qt.UserRole)))
                item.setCheckState(QtCore.Qt.Checked if key in keys else QtCore.Qt.Unchecked)
        self._filling = False
        self._sync_compare()
        self.schedule_refresh()

    @Slot()
    def compare(self) -> None:
        """Open the comparison of the checked runs that have a checkpoint (two to four)."""
        runs = [r for r in self.checked_runs() if r.checkpoint is not None]
        if not MIN_COMPARED <= len(runs) <= MAX_COMPARED:
            self.w.show_message("warning", self.compare_action.toolTip() + ".")
            return
        from .comparison import ComparedRun, open_comparison

        open_comparison(self.w, [ComparedRun(r.name, r.checkpoint, r.directory) for r in runs])

    def show(self) -> None:
        """Show the panel as the front tab of its group."""
        self.w.show_tool_dock(self.dock)

    def close(self) -> bool:
        """Stop the worker (the window closes); True when it ended in time."""
        self._timer.stop()
        return self._worker.close()


def _renamed(run: RunSummary, name: str) -> RunSummary:
    from dataclasses import replace

    return replace(run, name=name)
