"""Runs in the window: File ▸ Runs, File ▸ Follow run…, File ▸ Stop following, and the status of a followed run.

* Training started here writes a run folder (``app.run_folders``) under the
  runs folder: ``$LATENT_EXPLORER_RUNS``, else ``runs`` in the program's
  data folder (``recovery.data_dir()``, ``~/.local/share/latent-explorer``
  on Linux).  A window made by a script or a test, with neither, records
  no runs.
* File ▸ Runs lists the newest run folders there, newest first, read on a
  worker thread each time the menu opens; each entry opens that run's
  latest checkpoint, as File ▸ Open would.
* File ▸ Follow run… (also ``vae-explorer --follow DIR`` and
  ``MainWindow.follow_run``) follows a run folder written anywhere, by
  ``vae-explorer train --run-dir``, ``torchrun`` or another window
  (``app.session.follow``): the curves grow as the run appends events,
  setting changes appear as markers, and each new checkpoint becomes the
  model on screen.  The status bar says which folder is followed, where the
  run trains, how far it is and how old its newest event is (updated every
  second), with a button to stop following.  While following, the controls
  that would change the model are disabled, with a tooltip saying why: the
  run's model is read-only here.  Stopping keeps the last checkpoint on
  screen, to explore or to train further here.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from .. import recovery
from ..run_folders import RunEntry, list_runs, runs_root
from ..session.follow import CurvePoints, FollowedRun
from ..worker import LatestWins

if TYPE_CHECKING:
    from ..main_window import MainWindow

Slot = QtCore.Slot

#: Why the model cannot be changed while a run is followed (the tooltip of the disabled controls).
READ_ONLY_TIP = ("Following a run: its model is read-only here. Stop following (File ▸ Stop following) "
                 "to train it further in this window.")
#: The followed run's status line is refreshed this often (the age of its newest event).
AGE_INTERVAL_MS = 1000


def install(window: "MainWindow") -> "RunsTool":
    """Add File ▸ Runs, following a run and recording the runs trained in ``window``."""
    return RunsTool(window)


def age_text(seconds: float) -> str:
    """"just now", "12 s ago", "3 min ago", "2 h ago", "4 days ago" ("–" when unknown)."""
    if not math.isfinite(seconds):
        return "–"
    s = max(0.0, seconds)
    if s < 2:
        return "just now"
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 90 * 60:
        return f"{s / 60:.0f} min ago"
    if s < 48 * 3600:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} days ago"


class RunsTool(QtCore.QObject):
    """The window's run folders: recording, listing and following them."""

    runsListed = QtCore.Signal(object)  # list[RunEntry], each time File ▸ Runs has been filled anew

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.w = window
        self.s = window.session
        root = runs_root(recovery.data_dir())
        #: Where runs trained here go (None: they are not recorded).
        self.root: str | None = None if root is None else str(root)
        self.s.runs_root = self.root
        self.follower = FollowedRun(self.s, self)
        self.entries: list[RunEntry] = []
        self._listed = False  # File ▸ Runs has been filled at least once
        self._saved_tips: dict[Any, str] = {}  # the tooltips of the controls disabled while following
        self._lister = LatestWins(self)
        self._lister.done.connect(self._on_listed)
        self._lister.failed.connect(self._on_list_failed)
        self._age_timer = QtCore.QTimer(self)
        self._age_timer.setInterval(AGE_INTERVAL_MS)
        self._age_timer.timeout.connect(self._update_status)
        self._build()
        self._wire()
        self._fill_runs()

    # ------------------------------------------------------------------ build
    def _build(self) -> None:
        w = self.w
        self.follow_action = QtGui.QAction("&Follow run…", w)
        self.follow_action.setObjectName("followRunAction")
        tip = ("Follow a run folder as it is written (by vae-explorer train --run-dir, torchrun or another window, "
               "here or on a shared drive): the curves grow and each new checkpoint is shown")
        self.follow_action.setStatusTip(tip)
        self.follow_action.setToolTip(tip)
        self.stop_action = QtGui.QAction("Stop &following", w)
        self.stop_action.setObjectName("stopFollowingAction")
        self.stop_action.setStatusTip("Stop following the run; its last checkpoint stays on screen")
        self.stop_action.setToolTip("Stop following the run; its last checkpoint stays on screen")
        self.stop_action.setEnabled(False)
        self.runs_menu = QtWidgets.QMenu("R&uns", w)
        self.runs_menu.setObjectName("runsMenu")
        self.runs_menu.setToolTipsVisible(True)
        menu = w.file_menu
        after_recent = self._action_after(menu, w.recent_menu.menuAction())
        menu.insertMenu(after_recent, self.runs_menu)
        menu.insertAction(after_recent, self.follow_action)
        menu.insertAction(after_recent, self.stop_action)
        w.addAction(self.follow_action)
        w.addAction(self.stop_action)

        self.status_label = QtWidgets.QLabel("")
        self.status_label.setObjectName("followLabel")
        self.stop_button = QtWidgets.QToolButton()
        self.stop_button.setObjectName("stopFollowingButton")
        self.stop_button.setDefaultAction(self.stop_action)
        self.stop_button.setAutoRaise(True)
        sb = w.statusBar()
        sb.addPermanentWidget(self.status_label)
        sb.addPermanentWidget(self.stop_button)
        self.status_label.hide()
        self.stop_button.hide()

    @staticmethod
    def _action_after(menu: QtWidgets.QMenu, action: QtGui.QAction) -> QtGui.QAction | None:
        actions = menu.actions()
        i = actions.index(action) if action in actions else len(actions) - 1
        return actions[i + 1] if i + 1 < len(actions) else None

    def _wire(self) -> None:
        f = self.follower
        self.follow_action.triggered.connect(self.follow_dialog)
        self.stop_action.triggered.connect(self.stop)
        self.runs_menu.aboutToShow.connect(self.refresh_runs)
        f.followingChanged.connect(self._on_following)
        f.curvesReplaced.connect(self._on_curves_replaced)
        f.curvesAppended.connect(self._on_curves_appended)
        f.statusChanged.connect(self._update_status)
        f.readable.connect(self._update_status)
        f.checkpointShown.connect(self._update_status)
        f.waiting.connect(self._on_waiting)
        f.message.connect(self.w.show_message)
        # After the window's own handlers, which enable the controls for the new state.
        self.s.stateChanged.connect(self._keep_read_only)
        self.s.modelLoaded.connect(self._keep_read_only)

    # ------------------------------------------------------------- following
    @property
    def following(self) -> bool:
        return self.follower.following

    def follow(self, path: str) -> bool:
        """Follow the run folder at ``path``; False when it cannot be followed now (the window says why)."""
        return self.follower.start(path)

    @Slot()
    def stop(self) -> None:
        """Stop following; the run's last checkpoint stays on screen."""
        self.follower.stop()

    @Slot()
    def follow_dialog(self) -> None:
        start = self.root if self.root is not None and os.path.isdir(self.root) else self.w.last_directory()
        path = QtWidgets.QFileDialog.getExistingDirectory(self.w, "Follow a run folder", start)
        if path:
            self.w.remember_directory(os.path.dirname(path.rstrip("/")) or path)
            self.w.follow_run(path)

    @Slot(bool)
    def _on_following(self, on: bool) -> None:
        self.stop_action.setEnabled(on)
        self.status_label.setVisible(on)
        self.stop_button.setVisible(on)
        if on:
            self._age_timer.start()
            self._keep_read_only()
        else:
            self._age_timer.stop()
            self._lift_read_only()
        self._update_status()

    def _read_only_controls(self) -> list[Any]:
        w = self.w
        return [w.panel.trainButton, w.panel.resetButton, w.train_action, w.reset_action]

    @Slot()
    def _keep_read_only(self, *_: Any) -> None:
        """While following, the controls that would change the model stay disabled, saying why."""
        if not self.following:
            return
        self.w.panel.setEnabled(False)
        self.w.panel.setToolTip(READ_ONLY_TIP)
        for control in self._read_only_controls():
            if control not in self._saved_tips:
                self._saved_tips[control] = control.toolTip()
            control.setToolTip(READ_ONLY_TIP)
            control.setEnabled(False)

    def _lift_read_only(self) -> None:
        self.w.panel.setEnabled(True)
        self.w.panel.setToolTip("")
        for control, tip in self._saved_tips.items():
            control.setToolTip(tip)
            control.setEnabled(True)
        self._saved_tips.clear()
        # The window enables its actions for the session's state as after any change of state.
        self.w._on_state(self.s.state)

    @Slot(object)
    def _on_curves_replaced(self, p: CurvePoints) -> None:
        self.w.loss_plot.set_history(p.steps, p.recon, p.kl, p.loss, epochs=p.epochs, markers=p.markers, wall_s=p.wall_s)

    @Slot(object)
    def _on_curves_appended(self, p: CurvePoints) -> None:
        plot = self.w.loss_plot
        if len(p.steps):
            plot.append(p.steps, p.recon, p.kl, p.loss, wall_s=p.wall_s)
        for e in p.epochs:
            plot.add_epoch(*e)
        for step, text in p.markers:
            plot.add_marker(step, text)

    @Slot(str)
    def _on_waiting(self, text: str) -> None:
        self.w.latent_view.set_message(text)

    @Slot()
    @Slot(object)
    def _update_status(self, *_: Any) -> None:
        """The status line of the followed run: which folder, where it trains, how far, how old its news is."""
        f = self.follower
        if not f.following or f.directory is None:
            self.status_label.setText("")
            return
        st = f.status
        head = f"Following {os.path.basename(f.directory)}"
        if st is not None and st.where():
            head += f" ({st.where()})"
        parts = [head]
        if f.error is not None:
            parts.append("⚠ the folder cannot be read")
        elif st is not None:
            parts.append(st.describe())
        if f.shown is not None:
            parts.append(f"showing epoch {f.shown.epoch}")
        newest = st.newest_time if st is not None else None
        parts.append("no events yet" if newest is None else f"newest event {age_text(time.time() - newest)}")
        self.status_label.setText(" · ".join(parts))
        tip = f"Following the run folder {f.directory}"
        if st is not None and st.message:
            tip += f"\nIts last status: {st.message}"
        if f.error is not None:
            tip += f"\n{f.error}"
        self.status_label.setToolTip(tip)

    # ------------------------------------------------------------ File ▸ Runs
    @Slot()
    def refresh_runs(self) -> None:
        """Read the runs folder again (on a worker thread); File ▸ Runs is filled anew and ``runsListed`` follows."""
        root = self.root
        if root is None:
            self._listed = True
            self._fill_runs()
            self.runsListed.emit([])
            return

        def job() -> list[RunEntry] | str:
            try:
                return list_runs(root)
            except OSError as exc:
                return f"Cannot list the runs in {root}: {exc.strerror or exc}"

        self._lister.submit("runs", job)

    @Slot(str, object)
    def _on_listed(self, _kind: str, value: list[RunEntry] | str) -> None:
        if isinstance(value, str):
            self.w.show_message("warning", value)
            value = []
        self.entries = list(value)
        self._listed = True
        self._fill_runs()
        self.runsListed.emit(self.entries)

    @Slot(str, str)
    def _on_list_failed(self, _kind: str, text: str) -> None:
        self.w.show_message("warning", f"Cannot list the runs in {self.root}: {text}")

    def _fill_runs(self) -> None:
        m = self.runs_menu
        m.clear()
        if not self.entries:
            if self.root is None:
                text = "(runs trained in this window are not recorded)"
            elif not self._listed:
                text = "(looking for runs…)"
            else:
                text = "(no runs yet)"
            m.addAction(text).setEnabled(False)
            return
        for entry in self.entries:
            act = m.addAction(entry.label())
            act.setData(entry.checkpoint)
            act.setToolTip(entry.directory if entry.checkpoint is not None
                           else f"{entry.directory}: no checkpoint yet (one is written after every epoch)")
            act.setEnabled(entry.checkpoint is not None)
            act.triggered.connect(self._open_run)

    @Slot()
    def _open_run(self) -> None:
        act = self.sender()
        if isinstance(act, QtGui.QAction) and act.data():
            self.w.open_path(str(act.data()))

    def close(self) -> bool:
        """Stop following and the workers (the window closes); True when they ended in time."""
        ok = self.follower.close()
        return self._lister.close() and ok
