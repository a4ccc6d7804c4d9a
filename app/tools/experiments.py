"""The Experiment menu: several runs trained one after another with one setting changed, then compared.

* Experiment ▸ Autoencoder vs VAE (``aeVsVaeAction``) trains β = 0 (an
  autoencoder with noise) and β = 1 (the VAE: its loss is −ELBO) on the
  window's dataset.
* Experiment ▸ Beta sweep… (``betaSweepAction``) does the same for a list of
  2 to 4 values of β (the comparison shows up to four runs side by side).

Every run is a new model with the training panel's model settings, epochs,
batch size and learning rate, seed 0, and warm-up and free bits off, so that
β is the only difference.  Each trains as any training does (curves, map and
tools live), writes its own run folder (``app.run_folders``) and is named
there ("AE (β = 0)", "β = 0.5", ...).  When the last one has finished, the
comparison of them all opens (``app.tools.comparison``) and the window keeps
the last run's model on screen.  The names are written, and the runs'
checkpoints looked for, on a worker thread (``app.worker.LatestWins``): run
folders may lie on a network file system, and the window never waits on
one.  A name that cannot be written is said in a warning naming the folder,
and the experiment goes on.

An experiment needs the runs folder: its runs are kept there, listed by the
Runs panel and compared from their ``latest.ckpt``.  A window that records no
runs (one made by a script or a test, with neither ``LATENT_EXPLORER_RUNS``
nor a data folder) cannot keep them, so it offers no experiment; a temporary
folder would lose them as soon as the window closes.

Stopping the experiment (``stopExperimentAction``), or stopping its training
by hand, ends it: the runs finished so far stay in the runs folder.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from vae_core.errors import VAEError

from ..run_folders import ENV_RUNS, LATEST_CHECKPOINT
from ..session import EMPTY, IDLE, LOADING, PAUSED, TRAINED, TRAINING
from ..worker import LatestWins

if TYPE_CHECKING:
    from vae_core.data import Dataset

    from ..main_window import MainWindow

Slot = QtCore.Slot

#: The betas Beta sweep… proposes.
DEFAULT_BETAS = "0, 0.5, 1, 4"
#: A sweep has this many runs at least and at most (the comparison shows up to four).
MIN_RUNS, MAX_RUNS = 2, 4
#: Every run of an experiment trains with this seed.
SEED = 0
#: Kinds of the worker's requests: naming a run folder (followed by the folder), looking for the checkpoints.
NAME_KIND = "name:"
CHECK_KIND = "check"

AE_VS_VAE_TIP = ("Train an autoencoder (β = 0) and a VAE (β = 1) with the same model, seed and epochs, "
                 "one after another, then compare them side by side")
SWEEP_TIP = ("Train the same model for 2 to 4 values of β, one after another, then compare them side by side")
NO_RUNS_TIP = ("Runs trained in this window are not recorded (there is no runs folder), so an experiment could "
               f"not keep its runs to compare them. Set {ENV_RUNS} to a folder to record them.")


def beta_text(beta: float) -> str:
    """β as people write it: 0, 0.5, 1, 4, 0.001."""
    return f"{beta:g}"


def parse_betas(text: str, maximum: float = math.inf) -> list[float]:
    """The values of β in ``text`` (separated by commas or spaces); ValueError saying what is wrong."""
    items = [t for t in re.split(r"[,;\s]+", text.strip()) if t]
    if not items:
        raise ValueError(f"Enter {MIN_RUNS} to {MAX_RUNS} values of β, separated by commas.")
    betas: list[float] = []
    for item in items:
        try:
            beta = float(item)
        except ValueError:
            raise ValueError(f"“{item}” is not a number.") from None
        if not math.isfinite(beta):
            raise ValueError(f"“{item}” is not a finite number.")
        if beta < 0:
            raise ValueError(f"β must be ≥ 0 (the KL term's weight); {beta_text(beta)} is not.")
        if beta > maximum:
            raise ValueError(f"β can be at most {beta_text(maximum)}; {beta_text(beta)} is more.")
        if beta in betas:
            raise ValueError(f"β = {beta_text(beta)} is listed twice.")
        betas.append(beta)
    if not MIN_RUNS <= len(betas) <= MAX_RUNS:
        raise ValueError(f"Enter {MIN_RUNS} to {MAX_RUNS} values (you entered {len(betas)}): "
                         f"the comparison shows up to {MAX_RUNS} runs side by side.")
    return betas


@dataclass
class PlannedRun:
    beta: float
    name: str
    directory: str | None = None  # its run folder, once the run has started
    named: bool = False  # its name was sent to be written in the folder's config.json


@dataclass
class Experiment:
    title: str
    runs: list[PlannedRun]
    dataset: "Dataset"
    model: dict[str, Any]
    train: dict[str, Any]  # the settings every run shares (β is set per run)
    index: int = 0  # the run that trains now (or next)
    training: bool = False  # the current run was started and has not ended yet
    stopping: bool = False  # Stop experiment was chosen
    finished: list[PlannedRun] = field(default_factory=list)

    @property
    def current(self) -> PlannedRun:
        return self.runs[self.index]

    def progress_text(self) -> str:
        return f"Experiment: run {self.index + 1} of {len(self.runs)} (β = {beta_text(self.current.beta)})"


class ExperimentDialog(QtWidgets.QDialog):
    """What an experiment will train, for the user to confirm; with ``betas`` the list of β to edit."""

    def __init__(self, parent: QtWidgets.QWidget, title: str, describe: Any, betas: str | None = None,
                 maximum: float = math.inf) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self._describe = describe
        self._maximum = maximum
        self.betas: list[float] = []
        lay = QtWidgets.QVBoxLayout(self)
        self.edit: QtWidgets.QLineEdit | None = None
        self.error: QtWidgets.QLabel | None = None
        if betas is not None:
            form = QtWidgets.QFormLayout()
            self.edit = QtWidgets.QLineEdit(betas)
            self.edit.setObjectName("betaListEdit")
            self.edit.setToolTip(f"{MIN_RUNS} to {MAX_RUNS} values of β ≥ 0, separated by commas: the comparison "
                                 f"shows up to {MAX_RUNS} runs side by side")
            form.addRow("Values of β:", self.edit)
            lay.addLayout(form)
            hint = QtWidgets.QLabel(f"{MIN_RUNS} to {MAX_RUNS} values, each ≥ 0: the comparison shows up to "
                                    f"{MAX_RUNS} runs side by side.")
            hint.setWordWrap(True)
            lay.addWidget(hint)
            self.error = QtWidgets.QLabel("")
            self.error.setObjectName("betaListError")
            self.error.setWordWrap(True)
            self.error.setStyleSheet("color: #b3261e;")
            lay.addWidget(self.error)
        self.plan = QtWidgets.QLabel("")
        self.plan.setObjectName("experimentPlan")
        self.plan.setWordWrap(True)
        self.plan.setTextFormat(QtCore.Qt.RichText)
        self.plan.setMinimumWidth(420)
        lay.addWidget(self.plan)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Cancel)
        self.start_button = buttons.addButton("Train", QtWidgets.QDialogButtonBox.AcceptRole)
        self.start_button.setObjectName("experimentStartButton")
        self.start_button.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        if self.edit is not None:
            self.edit.textChanged.connect(self._check)
            self._check()
        else:
            self.plan.setText(describe(None))

    @Slot()
    def _check(self, *_: Any) -> None:
        assert self.edit is not None and self.error is not None
        try:
            self.betas = parse_betas(self.edit.text(), self._maximum)
        except ValueError as exc:
            self.betas = []
            self.error.setText(str(exc))
            self.error.show()
            self.start_button.setEnabled(False)
            self.start_button.setText("Train")
            self.plan.setText(self._describe(None))
            return
        self.error.setText("")
        self.error.hide()
        self.start_button.setEnabled(True)
        self.start_button.setText(f"Train {len(self.betas)} runs")
        self.plan.setText(self._describe(self.betas))

    def accept(self) -> None:
        if self.edit is not None:
            self._check()
            if not self.betas:
                return  # the list is wrong: the dialog stays, saying why
        super().accept()


class ExperimentsTool(QtCore.QObject):
    """Experiment ▸ Autoencoder vs VAE, Beta sweep… and Stop experiment; the status line of a running experiment."""

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.w = window
        self.s = window.session
        self.experiment: Experiment | None = None
        self._dialog: ExperimentDialog | None = None
        self._checking: Experiment | None = None  # the experiment whose checkpoints the worker looks for
        # Writes the runs' names and looks for their checkpoints, off the GUI thread.
        self._worker = LatestWins(self)
        self._worker.done.connect(self._on_worker_done)
        self._worker.failed.connect(self._on_worker_failed)
        self._build()
        self._wire()
        self._update_actions()

    # ------------------------------------------------------------------ build
    def _build(self) -> None:
        w = self.w
        self.ae_vs_vae_action = QtGui.QAction("&Autoencoder vs VAE", w)
        self.ae_vs_vae_action.setObjectName("aeVsVaeAction")
        self.sweep_action = QtGui.QAction("&Beta sweep…", w)
        self.sweep_action.setObjectName("betaSweepAction")
        self.stop_action = QtGui.QAction("&Stop experiment", w)
        self.stop_action.setObjectName("stopExperimentAction")
        tip = "Stop the training and the rest of the experiment; the runs finished so far are kept"
        self.stop_action.setToolTip(tip)
        self.stop_action.setStatusTip(tip)
        self.stop_action.setEnabled(False)
        self.menu = QtWidgets.QMenu("&Experiment", w)
        self.menu.setObjectName("experimentMenu")
        self.menu.setToolTipsVisible(True)  # a disabled experiment says why
        self.menu.addAction(self.ae_vs_vae_action)
        self.menu.addAction(self.sweep_action)
        self.menu.addSeparator()
        self.menu.addAction(self.stop_action)
        # Compare the runs checked in the Runs panel (installed before this tool).
        self.menu.addSeparator()
        self.menu.addAction(w.runs_panel.compare_action)
        w.menuBar().insertMenu(w.view_menu.menuAction(), self.menu)
        for act in (self.ae_vs_vae_action, self.sweep_action, self.stop_action):
            w.addAction(act)

        self.status_label = QtWidgets.QLabel("")
        self.status_label.setObjectName("experimentLabel")
        self.stop_button = QtWidgets.QToolButton()
        self.stop_button.setObjectName("stopExperimentButton")
        self.stop_button.setDefaultAction(self.stop_action)
        self.stop_button.setAutoRaise(True)
        sb = w.statusBar()
        sb.addPermanentWidget(self.status_label)
        sb.addPermanentWidget(self.stop_button)
        self.status_label.hide()
        self.stop_button.hide()

    def _wire(self) -> None:
        s = self.s
        self.ae_vs_vae_action.triggered.connect(self.ae_vs_vae)
        self.sweep_action.triggered.connect(self.beta_sweep)
        self.stop_action.triggered.connect(self.stop)
        s.stateChanged.connect(self._on_state)
        s.datasetLoaded.connect(self._update_actions)
        s.batchesArrived.connect(self._on_batches)
        self.w.runs.follower.followingChanged.connect(self._on_following)

    # --------------------------------------------------------------- enabling
    @property
    def running(self) -> bool:
        return self.experiment is not None

    def blocked_reason(self) -> str:
        """Why no experiment can start now ("" when one can)."""
        s = self.s
        if self.experiment is not None:
            return "An experiment is running: stop it first (Experiment ▸ Stop experiment)."
        if self.w.runs.root is None:
            return NO_RUNS_TIP
        if self.w.runs.following:
            return "Following a run: stop following it first (File ▸ Stop following)."
        if s.state == LOADING:
            return "Wait until loading has finished."
        if s.state in (TRAINING, PAUSED) or s.running:
            return "Training is running: stop it first."
        if s.dataset is None or s.state == EMPTY:
            return "Load a dataset first: the experiment trains on the window's dataset."
        return ""

    @Slot()
    @Slot(object)
    def _update_actions(self, *_: Any) -> None:
        why = self.blocked_reason()
        for act, tip in ((self.ae_vs_vae_action, AE_VS_VAE_TIP), (self.sweep_action, SWEEP_TIP)):
            act.setEnabled(not why)
            act.setToolTip(why or tip)
            act.setStatusTip(why or tip)
        self.stop_action.setEnabled(self.experiment is not None)

    # ---------------------------------------------------------------- actions
    @Slot()
    def ae_vs_vae(self) -> None:
        """Ask to train an autoencoder (β = 0) and a VAE (β = 1), then do it."""
        plan = self._plan_or_say_why()
        if plan is None:
            return
        runs = [PlannedRun(0.0, "AE (β = 0)"), PlannedRun(1.0, "VAE (β = 1)")]
        dialog = self._open_dialog("Autoencoder vs VAE", "experimentDialog",
                                   lambda _betas: self._describe(plan, runs), None)
        dialog.start_button.setText(f"Train {len(runs)} runs")
        dialog.accepted.connect(lambda: self._start("Autoencoder vs VAE", runs, plan))

    @Slot()
    def beta_sweep(self) -> None:
        """Ask for the values of β, then train one run for each."""
        plan = self._plan_or_say_why()
        if plan is None:
            return

        def runs_of(betas: list[float] | None) -> list[PlannedRun] | None:
            return None if betas is None else [PlannedRun(b, f"β = {beta_text(b)}") for b in betas]

        dialog = self._open_dialog("Beta sweep", "betaSweepDialog",
                                   lambda betas: self._describe(plan, runs_of(betas)), DEFAULT_BETAS)
        dialog.accepted.connect(lambda: self._start("Beta sweep", runs_of(dialog.betas) or [], plan))

    def _open_dialog(self, title: str, name: str, describe: Any, betas: str | None) -> ExperimentDialog:
        if self._dialog is not None:
            self._dialog.close()
            self._dialog.deleteLater()
        maximum = float(self.w.panel.betaSpin.maximum())
        dialog = self._dialog = ExperimentDialog(self.w, title, describe, betas, maximum)
        dialog.setObjectName(name)
        dialog.finished.connect(self._on_dialog_finished)
        dialog.open()
        return dialog

    @Slot(int)
    def _on_dialog_finished(self, _result: int) -> None:
        dialog = self.sender()
        if dialog is self._dialog:
            self._dialog = None
        if isinstance(dialog, QtWidgets.QDialog):
            dialog.deleteLater()

    def _plan_or_say_why(self) -> dict[str, Any] | None:
        """The settings every run shares, from the training panel; None (the window says why) when there are none."""
        why = self.blocked_reason()
        if why:
            self.w.show_message("warning", why)
            return None
        p = self.w.panel
        try:
            if not p.hidden_valid():
                raise ValueError("they must be comma-separated positive integers (or empty for a linear model)")
            model = p.model_settings()
        except ValueError as exc:
            self.w.show_message("error", f"Hidden sizes: {exc}")
            return None
        train = {**p.train_settings(), "warmup": "none", "free_bits": 0.0, "seed": SEED}
        hidden = p.hiddenEdit.text().strip() or "none (linear)"
        ds = self.s.dataset
        assert ds is not None
        return {"model": model, "train": train, "dataset": ds,
                "model_text": (f"{p.archCombo.currentText()}, hidden sizes {hidden}, {model['latent_dim']} latent "
                               f"dimension{'s' if model['latent_dim'] != 1 else ''}, "
                               f"{p.likelihoodCombo.currentText()} likelihood")}

    def _describe(self, plan: dict[str, Any], runs: list[PlannedRun] | None) -> str:
        ds, train = plan["dataset"], plan["train"]
        epochs = int(train["epochs"])
        device = str(train.get("device") or "")
        where = f", on {device}" if device.startswith("cuda") else ""
        if where and train.get("precision") == "bf16":
            where += " in bf16 mixed precision"
        rows = [
            ("Dataset", f"{ds.name} ({ds.n:,} images)"),
            ("Model", plan["model_text"]),
            ("Training", f"{epochs} epoch{'s' if epochs != 1 else ''} each, batch size {train['batch_size']}, "
                         f"learning rate {train['lr']:g}, seed {train['seed']}{where}; warm-up and free bits off, "
                         "so that only β differs"),
        ]
        if runs:
            rows.append(("Runs", ", ".join(r.name for r in runs)))
        html = "<table cellspacing='4'>" + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows)
        html += "</table>"
        html += (f"<p>Each run is a new model, trained one after another and shown live as it trains; each keeps "
                 f"its own run folder in {self.w.runs.root}. When the last one has finished the comparison opens, "
                 "and the window keeps the last run's model.</p>")
        if self.s.has_model:
            html += "<p>The model on screen is replaced by the first run.</p>"
        return html

    # ------------------------------------------------------------- the runs
    def _start(self, title: str, runs: list[PlannedRun], plan: dict[str, Any]) -> None:
        why = self.blocked_reason()
        if why:
            self.w.show_message("warning", why)
            return
        if len(runs) < MIN_RUNS or self.s.dataset is not plan["dataset"]:
            self.w.show_message("warning", "The experiment did not start: the dataset changed meanwhile.")
            return
        if not self.w.confirm_discard(f"Start the experiment “{title}”"):
            return
        self.experiment = Experiment(title, runs, plan["dataset"], plan["model"], plan["train"])
        self._update_actions()
        self._next_run()

    def _next_run(self) -> None:
        exp = self.experiment
        if exp is None:
            return
        if exp.stopping:
            self._end_stopped()
            return
        s, run = self.s, exp.current
        if s.running or s.state == LOADING:
            self._end("warning", f"The experiment ended before {run.name}: something else is training or loading.")
            return
        if s.dataset is not exp.dataset:
            self._end("warning", f"The experiment ended before {run.name}: the dataset changed.")
            return
        if s.has_model:
            s.reset()  # the previous run is kept in its run folder
        train = {**exp.train, "beta": run.beta}
        self.w.panel.apply_settings(train=train)  # the panel shows the settings the run trains with
        self._show_status()
        s.train(dict(exp.model), train)
        if not s.running:
            self._end("error", f"The experiment ended: {run.name} could not start (see the message above).")
            return
        exp.training = True
        run.directory = s.run_dir

    @Slot(object)
    def _on_batches(self, _batches: Any) -> None:
        exp = self.experiment
        if exp is not None and exp.training and not exp.current.named:
            self._name(exp.current)  # its config.json is written before the first batch

    def _name(self, run: PlannedRun) -> None:
        """Write the run's name in its folder's config.json, on the worker thread (``_on_worker_done`` follows)."""
        if run.named or run.directory is None:
            return
        run.named = True
        directory, name = run.directory, run.name

        def job() -> tuple[str, str, str | None]:
            from vae_core.runs import set_run_name

            try:
                set_run_name(directory, name)
            except (VAEError, OSError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                return directory, name, why
            return directory, name, None

        self._worker.submit(NAME_KIND + directory, job)

    @Slot(str, object)
    def _on_worker_done(self, kind: str, value: Any) -> None:
        if kind.startswith(NAME_KIND):
            directory, name, why = value
            if why is not None:
                self._name_not_written(directory, f"“{name}”: {why}")
                return
            panel = getattr(self.w, "runs_panel", None)
            if panel is not None:
                panel.schedule_refresh()  # the panel lists the run by its new name
        elif kind == CHECK_KIND:
            self._on_checked(value)

    @Slot(str, str)
    def _on_worker_failed(self, kind: str, text: str) -> None:
        if kind.startswith(NAME_KIND):
            self._name_not_written(kind[len(NAME_KIND):], text)
        elif kind == CHECK_KIND and self.experiment is not None and self.experiment is self._checking:
            self._checking = None
            self._end("error", f"The experiment's runs were trained, but their checkpoints could not be looked "
                               f"for: {text}. Compare them from the Runs panel.")

    def _name_not_written(self, directory: str, why: str) -> None:
        self.w.show_message("warning", f"Could not name the run folder {directory} {why}. The experiment goes on; "
                                       "the run keeps its folder's name (rename it in the Runs panel).")

    @Slot(str)
    def _on_state(self, state: str) -> None:
        self._update_actions()
        exp = self.experiment
        if exp is None or not exp.training or state in (TRAINING, PAUSED):
            return
        if state == LOADING:
            self._end("warning", f"The experiment ended during {exp.current.name}: another model or dataset is "
                                 f"being opened. {self._kept_text()}")
            return
        if state in (TRAINED, IDLE, EMPTY) and not self.s.running:
            exp.training = False
            # The session finishes handling the run's end after this signal: go on from the event loop.
            QtCore.QTimer.singleShot(0, self._run_ended)

    @Slot()
    def _run_ended(self) -> None:
        exp = self.experiment
        if exp is None:
            return
        run, s = exp.current, self.s
        self._name(run)
        trainer = s.trainer
        complete = (trainer is not None and s.run_dir == run.directory
                    and int(trainer.epoch) >= int(exp.train["epochs"]))
        if exp.stopping:
            if complete:
                exp.finished.append(run)
            self._end_stopped()
            return
        if not complete:
            done = int(trainer.epoch) if trainer is not None and s.run_dir == run.directory else 0
            self._end("warning", f"The experiment ended: run {exp.index + 1} of {len(exp.runs)}, {run.name}, stopped "
                                 f"after {done} of its {exp.train['epochs']} epochs. {self._kept_text()}")
            return
        exp.finished.append(run)
        if exp.index + 1 < len(exp.runs):
            exp.index += 1
            self._next_run()
            return
        self._compare(exp)

    def _kept_text(self) -> str:
        exp = self.experiment
        done = [] if exp is None else exp.finished
        if not done:
            return "None of its runs had finished."
        names = ", ".join(r.name for r in done)
        return (f"The run{'s' if len(done) != 1 else ''} finished so far ({names}) "
                f"{'are' if len(done) != 1 else 'is'} kept: compare them from the Runs panel.")

    def _compare(self, exp: Experiment) -> None:
        """Look for every run's checkpoint on the worker thread (after the names), then compare them."""
        folders = [r.directory for r in exp.runs]

        def job() -> list[bool]:
            return [d is not None and os.path.isfile(os.path.join(d, LATEST_CHECKPOINT)) for d in folders]

        self._checking = exp
        self._worker.submit(CHECK_KIND, job)

    def _on_checked(self, found: list[bool]) -> None:
        exp = self._checking
        self._checking = None
        if exp is None or exp is not self.experiment:
            return  # stopped, ended or the window closes meanwhile
        missing = [r for r, ok in zip(exp.runs, found) if not ok]
        if missing:
            where = ", ".join(f"{r.name} ({r.directory})" for r in missing)
            self._end("error", f"The experiment's runs were trained, but {where} has no {LATEST_CHECKPOINT} "
                               "(its run folder could not be written): they cannot be compared.")
            return
        from .comparison import ComparedRun, open_comparison

        runs = [ComparedRun(name=r.name, checkpoint=os.path.join(r.directory, LATEST_CHECKPOINT),
                            directory=r.directory) for r in exp.runs if r.directory is not None]
        last = exp.runs[-1].name
        self._end("info", f"{exp.title}: {len(runs)} runs trained ({', '.join(r.name for r in exp.runs)}); "
                          f"the comparison opens. The window shows the last run, {last}.")
        try:
            open_comparison(self.w, runs)
        except (VAEError, OSError, ValueError) as exc:
            self.w.show_message("error", f"Could not open the comparison: {exc}")

    # ------------------------------------------------------------- stopping
    @Slot()
    def stop(self) -> None:
        """Stop the training and the rest of the experiment; the runs finished so far are kept."""
        exp = self.experiment
        if exp is None:
            return
        exp.stopping = True
        if exp.training and self.s.running:
            self.s.stop()  # the run's end finishes the experiment
        elif not exp.training:
            self._end_stopped()

    def _end_stopped(self) -> None:
        exp = self.experiment
        if exp is None:
            return
        self._end("info", f"Experiment stopped in run {exp.index + 1} of {len(exp.runs)}, {exp.current.name}. "
                          f"{self._kept_text()}")

    @Slot(bool)
    def _on_following(self, on: bool) -> None:
        if on and self.experiment is not None:
            self._end("warning", f"The experiment ended: a run is followed now. {self._kept_text()}")
        self._update_actions()

    def _end(self, level: str, text: str) -> None:
        self.experiment = None
        self._show_status()
        self._update_actions()
        self.w.show_message(level, text)

    def _show_status(self) -> None:
        exp = self.experiment
        if exp is None:
            self.status_label.hide()
            self.stop_button.hide()
            self.status_label.setText("")
            return
        self.status_label.setText(exp.progress_text())
        lines = [exp.title + ":"]
        for i, r in enumerate(exp.runs):
            mark = "✓" if r in exp.finished else ("▶" if i == exp.index else "·")
            lines.append(f"{mark} {r.name}")
        self.status_label.setToolTip("\n".join(lines))
        self.status_label.show()
        self.stop_button.show()

    def close(self) -> bool:
        """The window closes: no further run starts (the window's shutdown stops the one training).

        Waits for a name being written; True when that ended in time.
        """
        self.experiment = None
        self._checking = None
        if self._dialog is not None:
            self._dialog.close()
            self._dialog = None
        return self._worker.close()


def install(window: "MainWindow") -> ExperimentsTool:
    """Add the Experiment menu to ``window``."""
    return ExperimentsTool(window)
