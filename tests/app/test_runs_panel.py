"""The Runs panel: every run listed with its figures, renamed, reopened, deleted and checked for comparison."""

from __future__ import annotations

import json
import shutil
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from app.main_window import MainWindow
from app.run_folders import RunLister, delete_run_folder, summarize_checkpoint
from app.session import PAUSED, TRAINED
from app.tools import runs_panel as RP
from vae_core import ModelConfig, TrainConfig
from vae_core.checkpoint import save_checkpoint
from vae_core.data import DatasetSpec, load_dataset
from vae_core.runs import CONFIG, LATEST, RunWriter, read_run
from vae_core.training import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RANKS = [{"rank": 0, "host": "trainer-host", "pid": 1, "device": "cpu"}]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = (rng.random((120, 6, 6)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=np.arange(120) % 2)
    return path


@pytest.fixture(scope="module")
def dataset(data_path):
    return load_dataset(DatasetSpec.from_dict({"source": str(data_path)}))


def train_run(folder, dataset, beta: float, latent_dim: int, epochs: int = 1) -> Trainer:
    model = ModelConfig(input_shape=dataset.input_shape, latent_dim=latent_dim, hidden_dims=(8,))
    config = TrainConfig(epochs=epochs, batch_size=32, seed=2, device="cpu", num_threads=1, beta=beta)
    trainer = Trainer(model, config, dataset)
    writer = RunWriter(folder, trainer, batch_interval_s=0.0)
    writer.start(RANKS)
    for ev in trainer.run():
        writer.record(ev)
    writer.finish()
    return trainer


@pytest.fixture(scope="module")
def made_runs(tmp_path_factory, dataset):
    """Two finished run folders (an autoencoder and a VAE) and a plain checkpoint, made once and copied by tests."""
    base = tmp_path_factory.mktemp("made")
    ae = train_run(base / "ae-run", dataset, beta=0.0, latent_dim=2)
    train_run(base / "vae-run", dataset, beta=1.0, latent_dim=3, epochs=2)
    save_checkpoint(ae, base / "plain.ckpt")
    return base


def copy_runs(made_runs, root, *names):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(made_runs / name, root / name)


def make_window(qtbot) -> MainWindow:
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


def close_window(w: MainWindow) -> None:
    w.runs_panel.close()
    w.runs.close()
    w.session.shutdown(3000)


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def open_panel(qtbot, w) -> QtWidgets.QTableWidget:
    """Show the panel through its View-menu toggle and wait for the first listing."""
    panel = w.runs_panel
    with qtbot.waitSignal(panel.listed, timeout=20000):
        find(w, QtGui.QAction, "runsPanelAction").trigger()
    assert find(w, QtWidgets.QDockWidget, "runsPanel").isVisible()
    return find(w, QtWidgets.QTableWidget, "runsTable")


def relist(qtbot, w) -> list:
    with qtbot.waitSignal(w.runs_panel.listed, timeout=20000) as got:
        qtbot.mouseClick(find(w, QtWidgets.QAbstractButton, "refreshRunsButton"), QtCore.Qt.LeftButton)
    return got.args[0]


def rows(table) -> dict[str, list[str]]:
    """Each row's cells by the run's name."""
    out = {}
    for r in range(table.rowCount()):
        cells = [table.item(r, c).text() for c in range(table.columnCount())]
        out[cells[0]] = cells
    return out


def row_of(table, name: str) -> int:
    for r in range(table.rowCount()):
        if table.item(r, RP.NAME).text() == name:
            return r
    raise AssertionError(f"no row {name}: {list(rows(table))}")


def answer(monkeypatch, reply, asked: list | None = None):
    """Every QMessageBox the test opens answers ``reply``; ``asked`` collects their texts."""

    def exec_(box):
        if asked is not None:
            asked.append((box.objectName(), box.text(), box.informativeText()))
        return reply

    monkeypatch.setattr(QtWidgets.QMessageBox, "exec", exec_)


def test_the_panel_lists_every_run_with_its_figures(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    copy_runs(made_runs, root, "ae-run", "vae-run")
    (root / "not-a-run").mkdir()
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    try:
        empty = find(w, QtWidgets.QLabel, "runsEmptyLabel")
        table = open_panel(qtbot, w)
        assert not empty.isVisible() and table.isVisible()
        got = rows(table)
        assert set(got) == {"ae-run", "vae-run"}
        headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
        assert headers == [title for title, _ in RP.COLUMNS]
        vae_epochs = [e for e in read_run(root / "vae-run").events if e["kind"] == "epoch"]
        assert got["vae-run"][1:6] == ["tiny.npz", "finished", "2", "1", "3"]
        assert got["ae-run"][1:6] == ["tiny.npz", "finished", "1", "0", "2"]
        elbo = vae_epochs[-1]["test_elbo"]
        assert elbo < 0 and got["vae-run"][RP.ELBO] == f"−{abs(elbo):.2f}"
        assert got["vae-run"][RP.UPDATED] != "–"
        tip = table.item(row_of(table, "vae-run"), RP.ELBO).toolTip()
        assert str(root / "vae-run") in tip and str(root / "vae-run" / LATEST) in tip
        assert "nats" in table.horizontalHeaderItem(RP.ELBO).toolTip()
        # Newest first: the VAE was written last.
        assert table.item(0, RP.NAME).text() == "vae-run"
    finally:
        close_window(w)


def test_the_empty_panel_says_what_to_do(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(tmp_path / "none-yet"))
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        label = find(w, QtWidgets.QLabel, "runsEmptyLabel")
        assert label.isVisible() and not table.isVisible()
        assert label.text().startswith(RP.EMPTY_TEXT)
        compare = find(w, QtGui.QAction, "compareAction")
        assert not compare.isEnabled() and "2 to 4" in compare.toolTip()
    finally:
        close_window(w)


def test_rename_stores_the_name_in_the_run_folder(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    copy_runs(made_runs, root, "ae-run")
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        item = table.item(row_of(table, "ae-run"), RP.NAME)
        assert item.flags() & QtCore.Qt.ItemIsEditable
        # The Rename button opens the name's editor; what is typed there is stored.
        table.setCurrentCell(item.row(), RP.EPOCHS)
        qtbot.mouseClick(find(w, QtWidgets.QAbstractButton, "renameRunButton"), QtCore.Qt.LeftButton)
        assert table.state() == QtWidgets.QAbstractItemView.EditingState
        editor = table.focusWidget()
        assert isinstance(editor, QtWidgets.QLineEdit)
        with qtbot.waitSignal(w.runs_panel.listed, timeout=20000):
            editor.setText("autoencoder (beta 0)")
            qtbot.keyClick(editor, QtCore.Qt.Key_Return)
        config = json.loads((root / "ae-run" / CONFIG).read_text())
        assert config["name"] == "autoencoder (beta 0)"
        assert set(rows(table)) == {"autoencoder (beta 0)"}
        with qtbot.waitSignal(w.runs.runsListed, timeout=20000) as listed:  # File ▸ Runs shows the name too
            w.runs.refresh_runs()
        assert [e.label().split(" · ")[0] for e in listed.args[0]] == ["autoencoder (beta 0)"]
        # An empty name is refused and the old one stays.
        item = table.item(0, RP.NAME)
        item.setText("  ")
        assert item.text() == "autoencoder (beta 0)" and "cannot be empty" in w.message_bar.text.text()
        assert json.loads((root / "ae-run" / CONFIG).read_text())["name"] == "autoencoder (beta 0)"
    finally:
        close_window(w)


def test_delete_removes_the_folder_after_asking(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    copy_runs(made_runs, root, "ae-run", "vae-run")
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        delete = find(w, QtWidgets.QAbstractButton, "deleteRunButton")
        table.setCurrentCell(row_of(table, "ae-run"), RP.STATUS)
        asked: list = []
        answer(monkeypatch, QtWidgets.QMessageBox.Cancel, asked)
        qtbot.mouseClick(delete, QtCore.Qt.LeftButton)
        assert asked and asked[0][0] == "deleteRunDialog" and str(root / "ae-run") in asked[0][1]
        assert (root / "ae-run").is_dir()
        table.setFocus()
        qtbot.keyClick(table, QtCore.Qt.Key_Delete)  # the Delete key asks the same
        assert len(asked) == 2 and asked[1] == asked[0] and (root / "ae-run").is_dir()

        answer(monkeypatch, QtWidgets.QMessageBox.Yes)
        with qtbot.waitSignal(w.runs_panel.listed, timeout=20000):
            qtbot.mouseClick(delete, QtCore.Qt.LeftButton)
        assert not (root / "ae-run").exists() and (root / "vae-run").is_dir()
        assert set(rows(table)) == {"vae-run"}
        assert f"Deleted the run folder {root / 'ae-run'}" in w.statusBar().currentMessage()
    finally:
        close_window(w)


def test_a_folder_that_cannot_be_deleted_is_named_and_nothing_else_goes(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    copy_runs(made_runs, root, "ae-run")
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        table.setCurrentCell(row_of(table, "ae-run"), RP.NAME)

        monkeypatch.setattr(shutil, "rmtree", lambda path, onerror=None: onerror(None, str(path), (
            PermissionError, PermissionError(13, "Permission denied"), None)))
        answer(monkeypatch, QtWidgets.QMessageBox.Yes)
        with qtbot.waitSignal(w.runs_panel.listed, timeout=20000):
            qtbot.mouseClick(find(w, QtWidgets.QAbstractButton, "deleteRunButton"), QtCore.Qt.LeftButton)
        text = w.message_bar.text.text()
        assert w.message_bar.level == "error" and str(root / "ae-run") in text and "Permission denied" in text
        assert (root / "ae-run" / CONFIG).is_file() and set(rows(table)) == {"ae-run"}
    finally:
        close_window(w)


def test_only_run_folders_are_deleted(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.png").write_bytes(b"not a run")
    with pytest.raises(ValueError, match="not a run folder"):
        delete_run_folder(other)
    assert (other / "cat.png").is_file()


@dataclass(frozen=True)
class _Compared:
    name: str
    checkpoint: str
    directory: str | None = None


def comparison_calls(monkeypatch) -> list:
    """Calls of ``app.tools.comparison.open_comparison``, recorded instead of opening a window."""
    calls: list = []
    try:
        from app.tools import comparison
    except ImportError:
        comparison = types.ModuleType("app.tools.comparison")
        comparison.ComparedRun = _Compared
        monkeypatch.setitem(sys.modules, "app.tools.comparison", comparison)
    monkeypatch.setattr(comparison, "open_comparison", lambda window, runs: calls.append((window, list(runs))),
                        raising=False)
    return calls


def test_compare_is_enabled_with_two_to_four_checked_runs(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    copy_runs(made_runs, root, "ae-run", "vae-run")
    for k in range(3):
        shutil.copytree(made_runs / "vae-run", root / f"copy-{k}")
    (root / "no-checkpoint").mkdir()
    shutil.copy(made_runs / "vae-run" / CONFIG, root / "no-checkpoint" / CONFIG)
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    calls = comparison_calls(monkeypatch)
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        panel = w.runs_panel
        action = find(w, QtGui.QAction, "compareAction")
        button = find(w, QtWidgets.QAbstractButton, "compareButton")
        assert table.rowCount() == 6

        def check(name, on=True):
            table.item(row_of(table, name), RP.NAME).setCheckState(QtCore.Qt.Checked if on else QtCore.Qt.Unchecked)

        assert not action.isEnabled() and not button.isEnabled()
        check("ae-run")
        assert not action.isEnabled() and "(1 checked)" in action.toolTip()
        check("no-checkpoint")
        assert not action.isEnabled() and "without a checkpoint" in action.toolTip()
        check("vae-run")
        assert action.isEnabled() and button.isEnabled()
        assert [r.name for r in panel.checked_runs()] == [table.item(r, 0).text() for r in range(6)
                                                          if table.item(r, 0).text() in
                                                          ("ae-run", "no-checkpoint", "vae-run")]
        check("copy-0")
        check("copy-1")
        assert action.isEnabled()
        check("copy-2")
        assert not action.isEnabled() and "at most 4" in action.toolTip()
        check("copy-2", False)
        check("copy-1", False)
        check("copy-0", False)

        qtbot.mouseClick(button, QtCore.Qt.LeftButton)
        assert len(calls) == 1 and calls[0][0] is w
        compared = calls[0][1]
        assert sorted(r.name for r in compared) == ["ae-run", "vae-run"]
        by_name = {r.name: r for r in compared}
        assert by_name["ae-run"].checkpoint == str(root / "ae-run" / LATEST)
        assert by_name["ae-run"].directory == str(root / "ae-run")

        # set_checked replaces the checks, by folder or by latest checkpoint; they survive a new listing.
        panel.set_checked([str(root / "copy-0"), str(root / "copy-1" / LATEST)])
        assert sorted(r.name for r in panel.checked_runs()) == ["copy-0", "copy-1"] and action.isEnabled()
        relist(qtbot, w)
        assert sorted(r.name for r in panel.checked_runs()) == ["copy-0", "copy-1"] and action.isEnabled()
        assert table.item(row_of(table, "copy-0"), RP.NAME).checkState() == QtCore.Qt.Checked
    finally:
        close_window(w)


def test_an_opened_checkpoint_joins_the_list_and_is_remembered(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    root.mkdir()
    ckpt = tmp_path / "elsewhere" / "plain.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(made_runs / "plain.ckpt", ckpt)
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        assert table.rowCount() == 0
        with qtbot.waitSignal(w.runs_panel.listed, timeout=30000):
            w.open_path(str(ckpt))
        qtbot.waitUntil(lambda: w.session.state == TRAINED, timeout=30000)
        got = rows(table)
        assert list(got) == ["plain"] and got["plain"][1:6] == ["tiny.npz", "checkpoint", "1", "0", "2"]
        assert got["plain"][RP.ELBO].startswith("−")
        assert str(ckpt) in table.item(0, RP.NAME).toolTip()
        # A plain checkpoint's name is kept in the settings, the file is not touched.
        before = ckpt.read_bytes()
        w.runs_panel.rename(str(ckpt), "the autoencoder")
        assert list(rows(table)) == ["the autoencoder"] and ckpt.read_bytes() == before
    finally:
        close_window(w)

    # After a restart the checkpoint is still listed, with its name.
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        assert list(rows(table)) == ["the autoencoder"]
        # Delete only takes it off the list, and says so.
        asked: list = []
        answer(monkeypatch, QtWidgets.QMessageBox.Yes, asked)
        table.setCurrentCell(0, RP.NAME)
        qtbot.mouseClick(find(w, QtWidgets.QAbstractButton, "deleteRunButton"), QtCore.Qt.LeftButton)
        assert "is not deleted" in asked[0][2] and ckpt.is_file() and table.rowCount() == 0
        assert w.runs_panel.remembered() == []
        # Opened again, it is back; once its file is gone it leaves the list.
        w.runs_panel.remember(str(ckpt))
        assert [r.name for r in relist(qtbot, w)] == ["plain"]
        ckpt.unlink()
        assert relist(qtbot, w) == [] and w.runs_panel.remembered() == []
    finally:
        close_window(w)


def test_reopen_opens_the_runs_latest_checkpoint(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    copy_runs(made_runs, root, "ae-run", "vae-run")
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    s = w.session
    try:
        table = open_panel(qtbot, w)
        reopen = find(w, QtWidgets.QAbstractButton, "reopenRunButton")
        table.setCurrentCell(row_of(table, "vae-run"), RP.DATASET)
        assert reopen.isEnabled()
        qtbot.mouseClick(reopen, QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: s.checkpoint is not None and s.state == TRAINED, timeout=30000)
        assert s.checkpoint_path == str(root / "vae-run" / LATEST) and s.checkpoint.epoch == 2
        # A double-click on a cell other than the name reopens too.
        r = row_of(table, "ae-run")
        rect = table.visualItemRect(table.item(r, RP.EPOCHS))
        qtbot.mouseClick(table.viewport(), QtCore.Qt.LeftButton, pos=rect.center())
        qtbot.mouseDClick(table.viewport(), QtCore.Qt.LeftButton, pos=rect.center())
        qtbot.waitUntil(lambda: s.checkpoint_path == str(root / "ae-run" / LATEST) and s.state == TRAINED,
                        timeout=30000)
        # Runs opened from the runs folder are listed once, not remembered as extra entries.
        assert w.runs_panel.remembered() == [] and table.rowCount() == 2
    finally:
        close_window(w)


def test_the_run_training_here_is_marked_and_cannot_be_deleted(qtbot, tmp_path, monkeypatch, data_path):
    root = tmp_path / "runs"
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    s = w.session
    try:
        table = open_panel(qtbot, w)
        with qtbot.waitSignal(s.datasetLoaded, timeout=30000):
            w.open_path(str(data_path))
        find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(1000)
        train = find(w, QtWidgets.QPushButton, "trainButton")
        qtbot.waitUntil(train.isEnabled, timeout=5000)
        qtbot.mouseClick(train, QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: s.run_dir is not None and table.rowCount() == 1, timeout=30000)
        s.toggle_pause()
        assert s.state == PAUSED
        relist(qtbot, w)
        item = table.item(0, RP.STATUS)
        assert item.text() == "paused here" and item.font().bold()
        assert "Training in this window now" in item.toolTip()
        table.setCurrentCell(0, RP.NAME)
        reopen = find(w, QtWidgets.QAbstractButton, "reopenRunButton")
        assert not reopen.isEnabled() and "on screen already (paused here)" in reopen.toolTip()
        asked: list = []
        answer(monkeypatch, QtWidgets.QMessageBox.Yes, asked)
        qtbot.mouseClick(find(w, QtWidgets.QAbstractButton, "deleteRunButton"), QtCore.Qt.LeftButton)
        assert asked == [] and "training in this window" in w.message_bar.text.text()
        qtbot.wait(300)
        assert (root / table.item(0, RP.NAME).text() / CONFIG).is_file()
        # Stopped, it reads as the run folder says.
        with qtbot.waitSignal(w.runs_panel.listed, timeout=30000):
            s.stop()
        qtbot.waitUntil(lambda: not s.running, timeout=30000)
        qtbot.waitUntil(lambda: table.item(0, RP.STATUS).text() == "stopped", timeout=30000)
        assert not table.item(0, RP.STATUS).font().bold()
        with qtbot.waitSignal(s.checkpointSaved, timeout=10000):  # closing the window asks nothing then
            s.save_checkpoint(str(tmp_path / "saved.ckpt"))
    finally:
        close_window(w)


def test_a_followed_run_joins_the_list_marked_and_cannot_be_deleted(qtbot, tmp_path, monkeypatch, made_runs):
    root = tmp_path / "runs"
    root.mkdir()
    elsewhere = tmp_path / "cluster"
    copy_runs(made_runs, elsewhere, "vae-run")
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(root))
    w = make_window(qtbot)
    try:
        table = open_panel(qtbot, w)
        assert w.follow_run(str(elsewhere / "vae-run"))
        qtbot.waitUntil(lambda: table.rowCount() == 1 and table.item(0, RP.STATUS).text() == "followed here",
                        timeout=30000)
        assert w.runs_panel.remembered() == [str(elsewhere / "vae-run")]
        answer(monkeypatch, QtWidgets.QMessageBox.Yes)
        table.setCurrentCell(0, RP.NAME)
        qtbot.mouseClick(find(w, QtWidgets.QAbstractButton, "deleteRunButton"), QtCore.Qt.LeftButton)
        assert "followed in this window" in w.message_bar.text.text() and (elsewhere / "vae-run").is_dir()
        w.runs.stop()
        qtbot.waitUntil(lambda: table.item(0, RP.STATUS).text() == "finished", timeout=30000)
    finally:
        close_window(w)


def test_the_lister_reads_each_unchanged_folder_once(tmp_path, made_runs, monkeypatch):
    copy_runs(made_runs, tmp_path / "runs", "ae-run")
    shutil.copy(made_runs / "plain.ckpt", tmp_path / "plain.ckpt")
    lister = RunLister()
    first = lister.list(str(tmp_path / "runs"), [str(tmp_path / "plain.ckpt"), str(tmp_path / "gone.ckpt")])
    assert [r.name for r in first.runs] == ["ae-run", "plain"] or [r.name for r in first.runs] == ["plain", "ae-run"]
    assert first.gone == [str(tmp_path / "gone.ckpt")]
    import app.run_folders as RF

    read: list = []
    real = RF.summarize_run
    monkeypatch.setattr(RF, "summarize_run", lambda d: read.append(d) or real(d))
    again = lister.list(str(tmp_path / "runs"), [str(tmp_path / "plain.ckpt")])
    assert read == [] and again.runs == first.runs
    with open(tmp_path / "runs" / "ae-run" / "events.jsonl", "a") as f:
        f.write(json.dumps({"kind": "status", "status": "stopped", "message": "", "step": 4, "time": 1e10}) + "\n")
    third = lister.list(str(tmp_path / "runs"), [])
    assert len(read) == 1 and [r.status_text() for r in third.runs] == ["stopped"]


def test_a_damaged_checkpoint_is_listed_with_its_problem(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x04 a pickle")
    row = summarize_checkpoint(bad)
    assert row.status_text() == "unreadable" and str(bad) in row.error and row.checkpoint == str(bad)


def test_view_runs_brings_the_panel_to_the_front_of_its_tabs(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_RUNS", str(tmp_path / "none-yet"))
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1400, 900)  # wide: the KL bars have their own dock, in front of the tool tabs
    w.show()
    qtbot.waitExposed(w)
    try:
        dock = find(w, QtWidgets.QDockWidget, "runsPanel")
        with qtbot.waitSignal(w.runs_panel.listed, timeout=20000):
            find(w, QtGui.QAction, "runsPanelAction").trigger()
        assert w.monitor.kl_dock in w.tabifiedDockWidgets(dock)
        qtbot.waitUntil(lambda: not dock.visibleRegion().isEmpty(), timeout=5000)
        assert w.monitor.kl_dock.visibleRegion().isEmpty()
    finally:
        close_window(w)


def test_a_folder_that_only_looks_like_a_run_is_never_deleted(tmp_path, made_runs):
    # A config.json of something else (a model folder of another tool, a project).
    project = tmp_path / "project"
    project.mkdir()
    (project / CONFIG).write_text('{"model_type": "bert"}')
    (project / "weights.bin").write_bytes(b"precious")
    with pytest.raises(ValueError, match="not a run folder"):
        delete_run_folder(project)
    assert (project / "weights.bin").is_file()
    # A real run folder that a user also put their own files in.
    run = tmp_path / "run"
    shutil.copytree(made_runs / "ae-run", run)
    (run / "notes.txt").write_text("mine")
    (run / "plots").mkdir()
    with pytest.raises(ValueError, match="notes.txt, plots"):
        delete_run_folder(run)
    assert (run / "notes.txt").is_file() and (run / CONFIG).is_file()
    # What a run writes, a temporary file of a killed save included, goes.
    (run / "notes.txt").unlink()
    (run / "plots").rmdir()
    (run / ".latest.ckpt.ab12cd.tmp").write_bytes(b"half")
    delete_run_folder(run)
    assert not run.exists()


def test_the_window_knows_the_engines_run_format():
    from app.run_folders import LATEST_CHECKPOINT, RUN_FILES, RUN_FORMAT
    from vae_core import runs

    assert RUN_FORMAT == runs.FORMAT and RUN_FILES == (runs.CONFIG, runs.EVENTS) and LATEST_CHECKPOINT == runs.LATEST
