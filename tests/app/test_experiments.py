"""The Experiment menu: Autoencoder vs VAE and the beta sweep, trained in the window, offscreen, with real actions."""

from __future__ import annotations

import errno
import json
import re
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from app.main_window import MainWindow
from app.session import TRAINED
from app.tools.experiments import NO_RUNS_TIP, parse_betas

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def make_window(qtbot) -> MainWindow:
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


@pytest.fixture
def runs(tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(folder))
    return folder


@pytest.fixture
def compared(monkeypatch):
    """Every call of open_comparison, as (names, checkpoints, directories); the comparison window is not opened."""
    calls: list[tuple[list[str], list[str], list[str | None]]] = []

    def record(window, runs):
        calls.append(([r.name for r in runs], [r.checkpoint for r in runs], [r.directory for r in runs]))

    try:
        import app.tools.comparison as module
    except ImportError:
        @dataclass(frozen=True)
        class ComparedRun:
            name: str
            checkpoint: str
            directory: str | None = None

        module = types.ModuleType("app.tools.comparison")
        module.ComparedRun = ComparedRun
        monkeypatch.setitem(sys.modules, "app.tools.comparison", module)
    monkeypatch.setattr(module, "open_comparison", record, raising=False)
    return calls


@pytest.fixture
def win(qtbot, runs):
    w = make_window(qtbot)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    find(w, QtWidgets.QLineEdit, "hiddenEdit").setText("16")
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(1)
    yield w
    w.experiments.close()
    w.runs.close()
    w.session.shutdown(3000)


def action(w, name) -> QtGui.QAction:
    return find(w, QtGui.QAction, name)


def open_dialog(qtbot, w, action_name, dialog_name) -> QtWidgets.QDialog:
    act = action(w, action_name)
    assert act.isEnabled(), act.toolTip()
    act.trigger()
    dialog = find(w, QtWidgets.QDialog, dialog_name)
    qtbot.waitUntil(dialog.isVisible, timeout=5000)
    return dialog


def start(qtbot, dialog) -> None:
    button = find(dialog, QtWidgets.QPushButton, "experimentStartButton")
    assert button.isEnabled()
    qtbot.mouseClick(button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5000)


def folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_ctime_ns) if root.exists() else []


def config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def wait_named(qtbot, folder: Path, name: str) -> None:
    """The name is written on a worker thread: wait for it to reach the folder's config.json."""
    qtbot.waitUntil(lambda: config(folder).get("name") == name, timeout=10000)


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def test_the_menu_sits_before_view_and_says_why_it_is_disabled(qtbot, runs, monkeypatch):
    monkeypatch.delenv("LATENT_EXPLORER_RUNS")
    w = make_window(qtbot)
    try:
        titles = [a.menu().objectName() for a in w.menuBar().actions() if a.menu() is not None]
        assert titles.index("experimentMenu") == titles.index("exploreMenu") + 1
        assert titles[titles.index("experimentMenu") + 1] == w.view_menu.objectName()
        assert w.runs.root is None
        for name in ("aeVsVaeAction", "betaSweepAction"):
            assert not action(w, name).isEnabled() and action(w, name).toolTip() == NO_RUNS_TIP
        assert not action(w, "stopExperimentAction").isEnabled()
    finally:
        w.runs.close()
        w.session.shutdown(3000)

    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(runs))
    w = make_window(qtbot)
    try:
        assert w.session.dataset is None
        act = action(w, "aeVsVaeAction")
        assert not act.isEnabled() and "Load a dataset" in act.toolTip()
        with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
            w.load_initial_dataset("digits")
        assert act.isEnabled() and action(w, "betaSweepAction").isEnabled()
    finally:
        w.runs.close()
        w.session.shutdown(3000)


def test_autoencoder_vs_vae_trains_two_named_runs_one_after_another_and_compares_them(qtbot, win, runs, compared):
    s = win.session
    panel = win.panel
    panel.apply_settings(train={"warmup": "linear", "free_bits": 0.5, "beta": 2.0})
    dialog = open_dialog(qtbot, win, "aeVsVaeAction", "experimentDialog")
    plan = find(dialog, QtWidgets.QLabel, "experimentPlan").text()
    for said in ("digits", "1 epoch each", "seed 0", "MLP", "AE (β = 0)", "VAE (β = 1)", str(runs)):
        assert said in plan, said
    label = find(win, QtWidgets.QLabel, "experimentLabel")
    started = []
    s.stateChanged.connect(lambda st: started.append((st, label.text(), s.train_config.beta if s.train_config else None)))
    start(qtbot, dialog)
    assert s.running and label.isVisible() and label.text() == "Experiment: run 1 of 2 (β = 0)"
    assert not action(win, "aeVsVaeAction").isEnabled() and not action(win, "betaSweepAction").isEnabled()
    assert "experiment is running" in action(win, "aeVsVaeAction").toolTip()
    assert action(win, "stopExperimentAction").isEnabled()
    assert "AE (β = 0)" in label.toolTip() and "VAE (β = 1)" in label.toolTip()

    qtbot.waitUntil(lambda: bool(compared), timeout=120000)
    qtbot.waitUntil(lambda: s.state == TRAINED and not s.running, timeout=10000)
    assert ("training", "Experiment: run 2 of 2 (β = 1)", 1.0) in started, "the second run was shown as it trained"
    made = folders(runs)
    assert len(made) == 2
    first, second = made
    assert [config(f)["train_config"]["beta"] for f in made] == [0.0, 1.0]
    for f in made:
        tc = config(f)["train_config"]
        assert tc["warmup"] == "none" and tc["free_bits"] == 0.0 and tc["seed"] == 0 and tc["epochs"] == 1
        assert config(f)["model_config"] == config(first)["model_config"]
        assert [e["status"] for e in events(f) if e["kind"] == "status"][-1] == "finished"
    wait_named(qtbot, first, "AE (β = 0)")
    wait_named(qtbot, second, "VAE (β = 1)")
    assert events(first)[-1]["time"] <= events(second)[0]["time"], "one after another"
    names, checkpoints, directories = compared[0]
    assert len(compared) == 1 and names == ["AE (β = 0)", "VAE (β = 1)"]
    assert checkpoints == [str(f / "latest.ckpt") for f in made] and all(Path(c).is_file() for c in checkpoints)
    assert directories == [str(f) for f in made]
    # The window keeps the last run's model, and the panel shows its settings.
    assert s.run_dir == str(second) and s.trainer.train_config.beta == 1.0 and s.trainer.epoch == 1
    assert panel.train_settings()["beta"] == 1.0
    assert not label.isVisible() and action(win, "aeVsVaeAction").isEnabled()
    assert not action(win, "stopExperimentAction").isEnabled()
    assert "comparison" in win.statusBar().currentMessage()


def test_the_beta_sweep_dialog_rejects_bad_lists_and_says_why(qtbot, win, compared):
    dialog = open_dialog(qtbot, win, "betaSweepAction", "betaSweepDialog")
    edit = find(dialog, QtWidgets.QLineEdit, "betaListEdit")
    error = find(dialog, QtWidgets.QLabel, "betaListError")
    button = find(dialog, QtWidgets.QPushButton, "experimentStartButton")
    plan = find(dialog, QtWidgets.QLabel, "experimentPlan")
    assert edit.text() == "0, 0.5, 1, 4" and button.isEnabled() and not error.isVisible()
    assert "β = 0.5" in plan.text() and "β = 4" in plan.text()
    for text, said in (("0, -1", "≥ 0"), ("1", "2 to 4"), ("0, 1, 2, 3, 4", "up to 4"), ("0, x", "not a number"),
                       ("", "2 to 4"), ("1, 1", "twice"), ("0, nan", "finite"), ("0, 1000", "at most 100")):
        edit.setText(text)
        assert not button.isEnabled() and error.isVisible() and said in error.text(), (text, error.text())
        dialog.accept()  # Return in the dialog: it stays, saying why
        assert dialog.isVisible()
    edit.setText("0 2")
    assert button.isEnabled() and not error.isVisible() and "β = 2" in plan.text()
    cancel = dialog.findChild(QtWidgets.QDialogButtonBox).button(QtWidgets.QDialogButtonBox.Cancel)
    qtbot.mouseClick(cancel, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5000)
    assert not win.experiments.running and not win.session.running and not compared


def test_parse_betas():
    assert parse_betas("0, 0.5, 1, 4") == [0.0, 0.5, 1.0, 4.0]
    assert parse_betas(" 4;1e-3 ") == [4.0, 0.001]
    for bad in ("0", "a, b", "-1, 1", "1, 2, 3, 4, 5", "inf, 1"):
        with pytest.raises(ValueError):
            parse_betas(bad)


def test_stopping_the_training_by_hand_ends_the_experiment(qtbot, win, runs, compared):
    s = win.session
    find(win, QtWidgets.QSpinBox, "epochsSpin").setValue(10_000)
    dialog = open_dialog(qtbot, win, "betaSweepAction", "betaSweepDialog")
    find(dialog, QtWidgets.QLineEdit, "betaListEdit").setText("0, 1, 4")
    start(qtbot, dialog)
    assert find(win, QtWidgets.QLabel, "experimentLabel").text() == "Experiment: run 1 of 3 (β = 0)"
    qtbot.waitUntil(lambda: s.trainer is not None and s.trainer.step > 0, timeout=60000)
    qtbot.mouseClick(find(win, QtWidgets.QPushButton, "stopButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: not s.running and not win.experiments.running, timeout=60000)
    assert not compared and action(win, "betaSweepAction").isEnabled()
    assert win.message_bar.isVisible() and win.message_bar.level == "warning"
    said = win.message_bar.text.text()
    assert "experiment ended" in said and "β = 0" in said and re.search(r"stopped after \d+ of its 10000 epochs", said), said
    made = folders(runs)
    assert len(made) == 1, "no further run started"
    wait_named(qtbot, made[0], "β = 0")
    assert s.state == TRAINED and s.trainer.train_config.beta == 0.0, "the stopped run stays on screen"


def test_stop_experiment_stops_the_training_and_the_rest(qtbot, win, runs, compared):
    s = win.session
    find(win, QtWidgets.QSpinBox, "epochsSpin").setValue(10_000)
    dialog = open_dialog(qtbot, win, "aeVsVaeAction", "experimentDialog")
    start(qtbot, dialog)
    qtbot.waitUntil(lambda: s.trainer is not None and s.trainer.step > 0, timeout=60000)
    stop = action(win, "stopExperimentAction")
    assert stop.isEnabled()
    stop.trigger()
    qtbot.waitUntil(lambda: not s.running and not win.experiments.running, timeout=60000)
    assert not compared and not stop.isEnabled() and action(win, "aeVsVaeAction").isEnabled()
    assert "Experiment stopped" in win.statusBar().currentMessage()
    made = folders(runs)
    assert len(made) == 1
    wait_named(qtbot, made[0], "AE (β = 0)")
    assert s.state == TRAINED and s.trainer.train_config.beta == 0.0, "the stopped run stays on screen"


def test_names_are_written_off_the_gui_thread_and_one_that_fails_is_a_warning_naming_the_folder(
        qtbot, win, runs, compared, monkeypatch):
    import vae_core.runs

    real = vae_core.runs.set_run_name
    calls: list[tuple[str, bool]] = []

    def set_run_name(directory, name):
        calls.append((name, threading.current_thread() is threading.main_thread()))
        if name == "AE (β = 0)":
            raise OSError(errno.EACCES, "Permission denied")
        real(directory, name)

    said: list[tuple[str, str]] = []
    show = win.show_message
    monkeypatch.setattr(win, "show_message", lambda level, text: (said.append((level, text)), show(level, text)))
    monkeypatch.setattr(vae_core.runs, "set_run_name", set_run_name)
    start(qtbot, open_dialog(qtbot, win, "aeVsVaeAction", "experimentDialog"))
    qtbot.waitUntil(lambda: bool(compared), timeout=120000)
    first, second = folders(runs)
    wait_named(qtbot, second, "VAE (β = 1)")
    assert calls == [("AE (β = 0)", False), ("VAE (β = 1)", False)], "each name written once, never on the GUI thread"
    assert "name" not in config(first)
    warnings = [text for level, text in said if level == "warning"]
    assert len(warnings) == 1 and str(first) in warnings[0] and "Permission denied" in warnings[0], said
    assert "experiment goes on" in warnings[0]
    assert compared[0][0] == ["AE (β = 0)", "VAE (β = 1)"], "the experiment went on to the comparison"


def test_an_unsaved_model_is_asked_about_first(qtbot, win, runs, compared, monkeypatch):
    asked = []
    monkeypatch.setattr(win, "confirm_discard", lambda what: asked.append(what) or False)
    dialog = open_dialog(qtbot, win, "aeVsVaeAction", "experimentDialog")
    start(qtbot, dialog)
    assert asked and "experiment" in asked[0]
    assert not win.experiments.running and not win.session.running and not folders(runs)
