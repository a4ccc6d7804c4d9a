"""Unsaved work is never lost without asking; a recovery copy comes back as the model it was.

The question is ``MainWindow.ask_unsaved``, replaced here by a function that
records the question and gives the test's answer.
"""

from __future__ import annotations

import pytest
from PySide6 import QtCore, QtWidgets

from app import main_window as mw
from app import recovery as rec_mod
from app.main_window import CANCEL, DISCARD, SAVE, MainWindow
from app.session import TRAINED
from app.session.map import captions
from vae_core.checkpoint import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory, monkeypatch):
    """Recovery files of these tests go to a directory of their own, and windows ask as the program's do."""
    d = tmp_path_factory.mktemp("userdata")
    monkeypatch.setenv(rec_mod.ENV_DATA_DIR, str(d))
    monkeypatch.setattr(mw, "_ask_about_unsaved", True)
    return d


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


class Answers:
    """Stands in for the question: records each action asked about and answers from a list."""

    def __init__(self, w: MainWindow, monkeypatch):
        self.asked: list[str] = []
        self.replies: list[str] = []
        monkeypatch.setattr(w, "ask_unsaved", self)

    def __call__(self, action: str) -> str:
        self.asked.append(action)
        assert self.replies, f"asked about {action!r} without an answer ready"
        return self.replies.pop(0)


def make_window(qtbot) -> MainWindow:
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1100, 750)
    w.show()
    qtbot.waitExposed(w)
    return w


def load_digits(qtbot, w, latent_dim=2):
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    find(w, QtWidgets.QSpinBox, "latentDimSpin").setValue(latent_dim)
    find(w, QtWidgets.QLineEdit, "hiddenEdit").setText("64")


def train(qtbot, w, epochs=1):
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(epochs)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None and not w.session.running,
                    timeout=120000)


def save_dialog(monkeypatch, path):
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))


def recovery_files(data_dir):
    d = data_dir / "recovery"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_reset_open_and_close_ask_only_when_there_is_unsaved_work(qtbot, monkeypatch, tmp_path, data_dir):
    w = make_window(qtbot)
    answers = Answers(w, monkeypatch)
    load_digits(qtbot, w)
    assert not w.session.unsaved
    train(qtbot, w)
    assert w.session.unsaved

    # Cancel stops the action; Discard lets it go on.
    answers.replies = [CANCEL]
    w.reset_action.trigger()
    assert answers.asked == ["Reset the model"] and w.session.trainer is not None
    answers.replies = [DISCARD]
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "resetButton"), QtCore.Qt.LeftButton)
    assert len(answers.asked) == 2 and w.session.trainer is None and not w.session.unsaved

    # Save saves (asking where: the model has no file yet), then the action goes on.
    train(qtbot, w)
    first = tmp_path / "first.ckpt"
    save_dialog(monkeypatch, first)
    answers.replies = [SAVE]
    w.reset_action.trigger()
    assert answers.asked[-1] == "Reset the model" and first.exists() and w.session.trainer is None
    assert load_checkpoint(first).epoch == 1

    # Opening a checkpoint over a model trained since its last save asks; the opened one is not unsaved.
    train(qtbot, w)
    second = tmp_path / "second.ckpt"
    save_dialog(monkeypatch, second)
    answers.replies = [SAVE]
    with qtbot.waitSignal(w.session.modelLoaded, timeout=60000):
        w.open_path(str(first))
    assert answers.asked[-1] == "Open first.ckpt" and second.exists()
    assert w.session.checkpoint_path == str(first) and not w.session.unsaved
    n = len(answers.asked)
    with qtbot.waitSignal(w.session.modelLoaded, timeout=60000):
        w.open_path(str(second))
    assert len(answers.asked) == n, "nothing unsaved: no question"

    # Trained on after opening: closing asks; Cancel keeps the window open.
    train(qtbot, w)
    assert w.session.unsaved
    answers.replies = [CANCEL]
    w.close()
    assert w.isVisible() and answers.asked[-1] == "Close Latent Explorer"
    # Save writes to the file the model came from, then the window closes and keeps no recovery copy.
    answers.replies = [SAVE]
    w.close()
    assert not w.isVisible()
    assert load_checkpoint(second).epoch == w.session.trainer.epoch
    assert recovery_files(data_dir) == []


def test_closing_during_training_asks_and_leaves_no_false_crash_offer(qtbot, monkeypatch, data_dir):
    monkeypatch.setenv(rec_mod.ENV_EPOCHS, "1")
    w = make_window(qtbot)
    answers = Answers(w, monkeypatch)
    load_digits(qtbot, w)
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(1000)
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.recovery.path.exists(), timeout=60000)  # an autosave copy exists
    answers.replies = [DISCARD]
    w.close()
    assert answers.asked == ["Close Latent Explorer"] and not w.session.running
    assert recovery_files(data_dir) == [], "discarded: no recovery copy stays"
    w2 = make_window(qtbot)
    assert w2.findChild(QtWidgets.QPushButton, "restoreRecoveryButton") is None
    assert not find(w2, QtWidgets.QFrame, "messageBar").isVisible()

    # Closed without asking while training (as Ctrl+C or SIGTERM close it): the copy stays, and the
    # next start says what happened instead of "did not close properly".
    load_digits(qtbot, w2)
    find(w2, QtWidgets.QSpinBox, "epochsSpin").setValue(1000)
    qtbot.mouseClick(find(w2, QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w2.session.trainer is not None and w2.session.trainer.step > 3, timeout=60000)
    w2.close_without_asking()
    assert not w2.session.running and w2.recovery.path.exists()
    assert rec_mod.read_note(w2.recovery.path)["closed"] == rec_mod.CLOSED_TRAINING
    w3 = make_window(qtbot)
    text = find(w3, QtWidgets.QLabel, "messageText").text()
    assert "Training was stopped when the window closed" in text and "Restore it?" in text
    assert "did not close properly" not in text
    qtbot.mouseClick(find(w3, QtWidgets.QPushButton, "discardRecoveryButton"), QtCore.Qt.LeftButton)
    assert recovery_files(data_dir) == []


def test_a_restored_copy_is_a_trained_model_with_its_epochs_and_map(qtbot, monkeypatch, tmp_path, data_dir):
    w = make_window(qtbot)
    load_digits(qtbot, w, latent_dim=4)
    train(qtbot, w, epochs=3)
    combo = find(w, QtWidgets.QComboBox, "projectionCombo")
    combo.setCurrentIndex(combo.findData("pca"))
    qtbot.waitUntil(lambda: type(w.session.projection).__name__ == "PCAProjection", timeout=10000)
    w.close_without_asking()  # unsaved: the copy stays, with how the window showed the model

    w2 = make_window(qtbot)
    answers = Answers(w2, monkeypatch)
    assert "closed with unsaved training" in find(w2, QtWidgets.QLabel, "messageText").text()
    assert find(w2, QtWidgets.QSpinBox, "epochsSpin").value() != 3
    with qtbot.waitSignal(w2.session.modelLoaded, timeout=60000):
        qtbot.mouseClick(find(w2, QtWidgets.QPushButton, "restoreRecoveryButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w2.session.state == TRAINED and w2.session.xy is not None
                    and type(w2.session.projection).__name__ == "PCAProjection", timeout=30000)
    panel = w2.panel
    assert panel.trainButton.text() == "Continue training" and panel.trainButton.isEnabled()
    assert w2.save_action.isEnabled() and w2.save_as_action.isEnabled()
    assert panel.progressLabel.text() == "Trained for 3 epochs (" + f"{w2.session.checkpoint.step:,} steps)"
    assert find(w2, QtWidgets.QSpinBox, "epochsSpin").value() == 3
    assert find(w2, QtWidgets.QComboBox, "projectionCombo").currentData() == "pca" and w2.session.map.mode == "pca"
    assert w2.latent_view.axis_labels() == captions(w2.session.projection)
    # A restored copy is unsaved work: Reset asks; saved, it is not any more and its recovery copy goes.
    assert w2.session.unsaved
    answers.replies = [CANCEL]
    w2.reset_action.trigger()
    assert answers.asked == ["Reset the model"] and w2.session.has_model
    mine = tmp_path / "restored.ckpt"
    save_dialog(monkeypatch, mine)
    w2.save_action.trigger()
    assert mine.exists() and load_checkpoint(mine).step == w2.session.checkpoint.step
    assert not w2.session.unsaved and not [n for n in recovery_files(data_dir) if n.endswith(".ckpt")]
    w2.close()
    assert answers.asked == ["Reset the model"], "nothing unsaved at the close: no question"


def test_a_dataset_the_model_cannot_take_replaces_it_only_when_the_user_agrees(qtbot, monkeypatch, tmp_path):
    import numpy as np

    w = make_window(qtbot)
    answers = Answers(w, monkeypatch)
    load_digits(qtbot, w)
    train(qtbot, w)
    other = tmp_path / "faces.npy"
    np.save(other, np.random.default_rng(0).integers(0, 255, (200, 12, 12), dtype=np.uint8))
    answers.replies = [CANCEL]
    w.open_path(str(other))
    qtbot.waitUntil(lambda: bool(answers.asked) and w.session.state == TRAINED, timeout=30000)
    assert answers.asked == ["Replace the model to train on the new dataset"]
    assert w.session.dataset.name == "digits" and w.session.trainer is not None
    answers.replies = [DISCARD]
    w.open_path(str(other))
    qtbot.waitUntil(lambda: w.session.dataset is not None and w.session.dataset.n == 200, timeout=30000)
    assert len(answers.asked) == 2 and not w.session.has_model
    assert w.panel.trainButton.text() == "Train" and w.panel.datasetGroup.isEnabled()
