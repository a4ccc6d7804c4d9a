"""Faults the program must survive: bad files, a diverging loss, crashes, signals.

Each bad input must give a message naming the file and the problem while the
model trained before stays; a NaN loss pauses and rolls back; a recovery
checkpoint written during training survives ``kill -9`` and is offered back;
Ctrl+C and SIGTERM close the program cleanly, leaving no partial file.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shiboken6
import torch
from PySide6 import QtCore, QtWidgets

from app import recovery as rec_mod
from app.main_window import MainWindow
from app.session import LOADING, PAUSED, TRAINED
from vae_core.checkpoint import FORMAT_VERSION, METADATA_KEY, load_checkpoint, save_checkpoint
from vae_core.config import ModelConfig, TrainConfig
from vae_core.training import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory, monkeypatch):
    """Recovery files of these tests go to a directory of their own."""
    d = tmp_path_factory.mktemp("userdata")
    monkeypatch.setenv(rec_mod.ENV_DATA_DIR, str(d))
    return d


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def make_window(qtbot):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(1100, 750)
    w.show()
    qtbot.waitExposed(w)
    return w


def load_digits(qtbot, w):
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")


def start_training(qtbot, w, epochs):
    find(w, QtWidgets.QSpinBox, "epochsSpin").setValue(epochs)
    btn = find(w, QtWidgets.QPushButton, "trainButton")
    assert btn.isEnabled()
    qtbot.mouseClick(btn, QtCore.Qt.LeftButton)


def train(qtbot, w, epochs=1):
    start_training(qtbot, w, epochs)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None, timeout=120000)


def type_into(qtbot, spin, text):
    """Replace a spin box's text by typing, then press Enter."""
    spin.setFocus()
    spin.lineEdit().selectAll()
    qtbot.keyClick(spin.lineEdit(), QtCore.Qt.Key.Key_Delete)
    qtbot.keyClicks(spin.lineEdit(), text)
    qtbot.keyClick(spin.lineEdit(), QtCore.Qt.Key.Key_Return)


def decodes(w) -> bool:
    """The session's decoder (callable from any thread, this one included) makes finite images."""
    d = w.session.model_config.latent_dim
    imgs = w.session.decoder.decode(np.zeros((2, d), np.float32))
    return imgs.shape[0] == 2 and bool(np.all(np.isfinite(imgs)))


def weights_finite(trainer) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


def message(w) -> str:
    return find(w, QtWidgets.QLabel, "messageText").text()


# ---------------------------------------------------------------------------
# File builders (small copies of the engine tests' helpers)
# ---------------------------------------------------------------------------


def write_idx(path, arr, code=0x08):
    arr = np.asarray(arr)
    payload = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += arr.astype(">u1").tobytes()
    Path(path).write_bytes(payload)
    return payload


class _Evil:
    """Unpickling this creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Spec:
    def __init__(self, source):
        self.source = source

    def to_dict(self):
        return {"source": self.source}


@dataclass
class TinyDataset:
    images: np.ndarray
    labels: np.ndarray | None = None
    label_names: list | None = None
    name: str = "tiny"
    binarize: str = "none"
    spec: object = None

    def __post_init__(self):
        n = self.images.shape[0]
        self.test_idx, self.train_idx = np.arange(n // 5), np.arange(n // 5, n)

    @property
    def n(self):
        return self.images.shape[0]

    @property
    def input_shape(self):
        return tuple(self.images.shape[1:])


def tiny_checkpoint(path: Path, side: int, source: str) -> bytes:
    """A real checkpoint of a model of side x side images whose dataset lives at ``source``."""
    images = np.random.default_rng(0).random((60, 1, side, side)).astype(np.float32)
    ds = TinyDataset(images, np.zeros(60, np.int64), ["a"], spec=_Spec(source))
    t = Trainer(ModelConfig(input_shape=(1, side, side), latent_dim=2, hidden_dims=(8,)),
                TrainConfig(epochs=1, batch_size=20, num_threads=1), ds)
    list(t.run())
    save_checkpoint(t, path)
    return path.read_bytes()


def with_metadata(data: bytes, change) -> bytes:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"][METADATA_KEY])
    change(meta)
    return st_save(st_load(data), metadata={METADATA_KEY: json.dumps(meta)})


def bad_inputs(root: Path):
    """(name, path, fragments the message must hold besides the file's name, marker that must not appear)."""
    from PIL import Image

    cases = []
    folder = root / "corrupt_folder"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    cases.append(("folder with a corrupt image", folder, folder / "broken.png", ()))

    only_text = root / "only_text"
    only_text.mkdir()
    (only_text / "notes.txt").write_text("not an image")
    cases.append(("folder with a non-image file only", only_text, only_text, ("no images",)))

    empty = root / "empty_folder"
    empty.mkdir()
    cases.append(("folder with no images", empty, empty, ("no images",)))

    a = np.random.default_rng(1).random((20, 8, 8)).astype(np.float32)
    a[3, 2, 2] = np.nan
    np.savez(root / "nan.npz", images=a)
    cases.append(("npz with NaN", root / "nan.npz", root / "nan.npz", ("NaN",)))

    payload = write_idx(root / "cut-images-idx3-ubyte", np.zeros((20, 8, 8), np.uint8))
    (root / "cut-images-idx3-ubyte").write_bytes(payload[:-9])
    cases.append(("IDX file truncated", root / "cut-images-idx3-ubyte", root / "cut-images-idx3-ubyte", ("truncated",)))

    good = tiny_checkpoint(root / "tiny.ckpt", 6, str(root / "moved-away.npz"))
    (root / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    cases.append(("checkpoint truncated", root / "truncated.ckpt", root / "truncated.ckpt", ("truncated",)))

    (root / "future.ckpt").write_bytes(with_metadata(good, lambda m: m.update(format_version=FORMAT_VERSION + 1)))
    cases.append(("checkpoint from a future format", root / "future.ckpt", root / "future.ckpt", ("newer version",)))

    (root / "other-shape.ckpt").write_bytes(good)
    cases.append(("checkpoint for 6x6 images while digits (8x8) is loaded", root / "other-shape.ckpt",
                  root / "other-shape.ckpt", ("6x6", "8x8", "current model is kept")))

    marker = root / "pwned"
    torch.save({"model": _Evil(str(marker))}, root / "evil.ckpt")
    cases.append(("crafted pickle", root / "evil.ckpt", root / "evil.ckpt", ("pickle",)))
    return cases, marker


def test_bad_input_gives_a_message_and_keeps_the_model(qtbot, tmp_path):
    w = make_window(qtbot)
    load_digits(qtbot, w)
    train(qtbot, w, epochs=1)
    trainer = w.session.trainer
    n_steps = len(trainer.history)
    curve = len(w.session.history)
    cases, marker = bad_inputs(tmp_path)
    # The crafted pickle really would run code when unpickled.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(str(probe)))).close()
    assert probe.exists()
    bar = find(w, QtWidgets.QFrame, "messageBar")
    for what, path, named, fragments in cases:
        bar.hide()
        w.open_path(str(path))
        qtbot.waitUntil(lambda: bar.isVisible() and w.session.state != LOADING, timeout=30000)
        text = message(w)
        assert named.name in text, f"{what}: the message does not name the file: {text!r}"
        for frag in fragments:
            assert frag in text, f"{what}: {frag!r} missing from {text!r}"
        assert w.session.trainer is trainer, what
        assert w.session.state == TRAINED, what
        assert len(trainer.history) == n_steps and len(w.session.history) == curve, what
        assert w.session.dataset.name == "digits" and w.session.xy is not None, what
        assert decodes(w), what
    assert not marker.exists(), "the crafted pickle was unpickled"
    # Still a working program: it trains on.
    train(qtbot, w, epochs=1)
    assert w.session.trainer is trainer and trainer.epoch == 2
    w.close()


# ---------------------------------------------------------------------------
# A diverging loss
# ---------------------------------------------------------------------------


def _wait_diverged(qtbot, w):
    bar = find(w, QtWidgets.QFrame, "messageBar")
    qtbot.waitUntil(lambda: w.session.state == PAUSED and bar.isVisible() and "rolled back" in message(w), timeout=60000)
    text = message(w)
    assert "Training paused" in text and ("NaN" in text or "infinite" in text) and "learning rate 10" in text
    assert "Lower the learning rate" in text


def _lower_rate_and_resume(qtbot, w, step_at_resume):
    trainer = w.session.trainer
    type_into(qtbot, find(w, QtWidgets.QAbstractSpinBox, "lrSpin"), "1e-3")
    qtbot.waitUntil(lambda: trainer.train_config.lr == pytest.approx(1e-3), timeout=10000)
    pause = find(w, QtWidgets.QPushButton, "pauseButton")
    assert pause.text() == "Resume"
    qtbot.mouseClick(pause, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED, timeout=120000)
    table = trainer.history.table()
    after = table[table[:, 0] > step_at_resume]
    assert len(after) > 20 and np.all(np.isfinite(after[:, 1:4])), "losses after resuming are finite"
    assert np.all(after[:, 5] == pytest.approx(1e-3))
    assert weights_finite(trainer) and decodes(w)
    assert np.all(np.isfinite(w.session.latents))
    bar = find(w, QtWidgets.QFrame, "messageBar")
    assert not (bar.isVisible() and "Training paused" in message(w)), "the report goes once training recovered"


def test_nan_from_a_typed_learning_rate_pauses_rolls_back_and_resumes(qtbot):
    w = make_window(qtbot)
    load_digits(qtbot, w)
    type_into(qtbot, find(w, QtWidgets.QAbstractSpinBox, "lrSpin"), "10")
    start_training(qtbot, w, epochs=2)
    _wait_diverged(qtbot, w)
    trainer = w.session.trainer
    rollback = trainer.history.changes[-1]
    assert rollback["name"] == "rollback" and rollback["new"] == 0
    assert weights_finite(trainer)
    assert decodes(w), "the rolled-back model decodes although no epoch has ended yet"
    _lower_rate_and_resume(qtbot, w, trainer.step)
    assert trainer.epoch == 2
    w.close()


def test_nan_from_a_live_change_rolls_back_to_the_last_good_state(qtbot):
    w = make_window(qtbot)
    load_digits(qtbot, w)
    start_training(qtbot, w, epochs=3)
    qtbot.waitUntil(lambda: w.session.last_epoch is not None, timeout=60000)
    good_step = w.session.last_epoch.step
    type_into(qtbot, find(w, QtWidgets.QAbstractSpinBox, "lrSpin"), "10")
    _wait_diverged(qtbot, w)
    trainer = w.session.trainer
    rollback = trainer.history.changes[-1]
    assert rollback["name"] == "rollback" and rollback["new"] >= good_step > 0
    assert weights_finite(trainer) and decodes(w)
    markers = find(w, QtWidgets.QWidget, "lossPlot").markers()
    assert any("rolled back" in text for _, text in markers)
    _lower_rate_and_resume(qtbot, w, trainer.step)
    assert trainer.epoch == 3
    w.close()


# ---------------------------------------------------------------------------
# Autosave
# ---------------------------------------------------------------------------


class _FakeTrainer:
    def __init__(self):
        self.epoch = 0
        self.step = 0


def test_autosave_is_due_every_n_epochs_or_every_t_seconds_whichever_first(qtbot, monkeypatch):
    w = make_window(qtbot)
    rec = w.recovery
    writes = []
    monkeypatch.setattr(rec, "_write", lambda t: writes.append((t.epoch, t.step)) or True)
    rec.every_epochs, rec.every_seconds = 3, 3600.0
    t = _FakeTrainer()
    rec.on_boundary(t, False)  # a new run starts the clock
    for epoch in range(1, 8):
        for _ in range(5):
            t.step += 1
            rec.on_boundary(t, False)
        t.epoch = epoch
        rec.on_boundary(t, True)
        if writes and writes[-1][0] == epoch:
            rec._last_epoch = epoch  # what a real write records
    assert [e for e, _ in writes] == [3, 6]
    writes.clear()
    clock = [1000.0]
    monkeypatch.setattr(rec_mod, "_now", lambda: clock[0])
    rec.every_epochs, rec.every_seconds = 100, 120.0
    t2 = _FakeTrainer()
    rec.on_boundary(t2, False)
    t2.step = 1
    clock[0] += 119
    rec.on_boundary(t2, False)
    assert writes == []
    clock[0] += 2
    rec.on_boundary(t2, False)
    assert writes == [(0, 1)], "mid-epoch, from time alone"
    w.close()


def _recovery_files(d: Path):
    rd = d / "recovery"
    return sorted(p.name for p in rd.iterdir()) if rd.exists() else []


def test_autosave_lifecycle_in_the_training_thread(qtbot, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv(rec_mod.ENV_EPOCHS, "1")
    w = make_window(qtbot)
    rec = w.recovery
    threads = []
    rec.saved.connect(lambda p: threads.append(threading.current_thread()), QtCore.Qt.DirectConnection)
    load_digits(qtbot, w)
    train(qtbot, w, epochs=2)
    qtbot.waitUntil(lambda: rec.path.exists(), timeout=5000)
    assert threads and all(t is not threading.main_thread() for t in threads), "saved by the training thread"
    ck = load_checkpoint(rec.path)
    assert 1 <= ck.epoch <= 2
    assert not [n for n in _recovery_files(data_dir) if n.endswith(".tmp")]

    # Saving the model makes the recovery copy unnecessary.
    w.session.save_checkpoint(str(tmp_path / "mine.ckpt"))
    assert not rec.path.exists()
    train(qtbot, w, epochs=2)
    qtbot.waitUntil(lambda: rec.path.exists(), timeout=5000)
    # Resetting the model removes it too.
    qtbot.mouseClick(find(w, QtWidgets.QPushButton, "resetButton"), QtCore.Qt.LeftButton)
    assert not rec.path.exists()

    # Closing with unsaved training without asking (a window made by a script: nobody to ask)
    # keeps an up-to-date copy for the next launch.
    train(qtbot, w, epochs=2)
    qtbot.waitUntil(lambda: rec.path.exists(), timeout=5000)
    step = w.session.trainer.step
    path = rec.path
    w.close()
    assert path.exists() and load_checkpoint(path).step == step
    assert not [n for n in _recovery_files(data_dir) if n.endswith((".tmp", ".lock"))]
    # The next window offers it; Discard removes it.
    w2 = make_window(qtbot)
    find(w2, QtWidgets.QFrame, "messageBar")
    discard = find(w2, QtWidgets.QPushButton, "discardRecoveryButton")
    assert "closed with unsaved training" in message(w2) and "digits" in message(w2)
    qtbot.mouseClick(discard, QtCore.Qt.LeftButton)
    assert not path.exists()
    w2.close()
    w3 = make_window(qtbot)
    assert w3.findChild(QtWidgets.QPushButton, "restoreRecoveryButton") is None
    w3.close()


def _env(data_dir: Path, **extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["QT_QPA_PLATFORM"] = "offscreen"
    env[rec_mod.ENV_DATA_DIR] = str(data_dir)
    env.update(extra)
    return env


def _launch(data_dir: Path, cwd: Path):
    env = _env(data_dir, **{rec_mod.ENV_EPOCHS: "1", rec_mod.ENV_SECONDS: "1"})
    return subprocess.Popen([sys.executable, "-m", "app", "--dataset", "digits", "--epochs", "1000", "--train"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_saves(proc, rd: Path, count: int, timeout=120.0) -> Path:
    """Wait until the running program has written its recovery file ``count`` times."""
    t0 = time.monotonic()
    seen: list[float] = []
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        files = list(rd.glob("autosave-*.ckpt")) if rd.exists() else []
        if files:
            m = files[0].stat().st_mtime_ns
            if not seen or seen[-1] != m:
                seen.append(m)
            if len(seen) >= count:
                return files[0]
        time.sleep(0.05)
    raise AssertionError("the program wrote no recovery file")


def test_killed_program_is_offered_back_and_restores(qtbot, tmp_path, data_dir):
    proc = _launch(data_dir, tmp_path)
    try:
        path = _wait_for_saves(proc, data_dir / "recovery", 2)
        time.sleep(0.15)  # somewhere in the middle of an epoch
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.exists()
    w = make_window(qtbot)
    restore = find(w, QtWidgets.QPushButton, "restoreRecoveryButton")
    assert find(w, QtWidgets.QFrame, "messageBar").isVisible()
    assert "did not close properly" in message(w) and "digits" in message(w)
    with qtbot.waitSignal(w.session.modelLoaded, timeout=60000):
        qtbot.mouseClick(restore, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.xy is not None and w.session.state == TRAINED, timeout=30000)
    ck = w.session.checkpoint
    assert ck is not None and ck.epoch >= 1 and ck.step > 0
    assert len(w.session.history) == ck.step
    assert find(w, QtWidgets.QWidget, "latentMap").point_count() == 1797
    assert decodes(w)
    assert w.session.checkpoint_path is None, "Save must ask for a file instead of writing into the recovery folder"
    assert not [n for n in _recovery_files(data_dir) if n.endswith(".tmp")], "a killed save leaves no temp file"
    # Another window of this process does not offer the copy that this one restored.
    assert rec_mod.find_orphans(data_dir / "recovery") == []
    # It trains on from there.
    start_training(qtbot, w, epochs=1)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.trainer is not None
                    and w.session.trainer.epoch == ck.epoch + 1, timeout=60000)
    w.close()


# ---------------------------------------------------------------------------
# Signals and closing
# ---------------------------------------------------------------------------


def test_sigterm_closes_the_program_cleanly(tmp_path, data_dir):
    proc = _launch(data_dir, tmp_path)
    try:
        _wait_for_saves(proc, data_dir / "recovery", 2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "Traceback" not in out and "QThread: Destroyed" not in out, out[-3000:]
    names = _recovery_files(data_dir)
    assert [n for n in names if n.endswith(".ckpt")] and not [n for n in names if not n.endswith((".ckpt", ".json"))], names
    path = next((data_dir / "recovery").glob("*.ckpt"))
    ck = load_checkpoint(path)
    assert ck.epoch >= 1
    # The copy's note says the window closed while training ran: the next start says so.
    assert rec_mod.read_note(path)["closed"] == rec_mod.CLOSED_TRAINING


def test_ctrl_c_closes_the_window_and_stops_training(qtbot, tmp_path, monkeypatch):
    from app import program

    monkeypatch.setenv(rec_mod.ENV_EPOCHS, "1")
    w = make_window(qtbot)
    load_digits(qtbot, w)
    start_training(qtbot, w, epochs=1000)
    rec = w.recovery
    qtbot.waitUntil(lambda: rec.path.exists() and w.session.trainer.epoch >= 2, timeout=60000)
    # A user save asked for while training runs is done at the next batch boundary.
    target = tmp_path / "saving.ckpt"
    w.session.save_checkpoint(str(target))
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    app = QtWidgets.QApplication.instance()
    quit_calls = []
    monkeypatch.setattr(app, "quit", lambda: quit_calls.append(1))
    try:
        stopper = program._close_on_signals(app, w)
        thread = w.session.thread
        os.kill(os.getpid(), signal.SIGINT)
        qtbot.waitUntil(lambda: not w.isVisible(), timeout=5000)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    stopper.deleteLater()
    assert stopper.signum == signal.SIGINT and quit_calls
    assert thread is None or not shiboken6.isValid(thread) or not thread.isRunning()
    assert load_checkpoint(target).step > 0
    for d in (tmp_path, rec.directory):
        assert not [p.name for p in d.iterdir() if p.name.endswith((".tmp", ".part"))]
    # The user's save removed the recovery copy; one written since then is complete and up to date.
    if rec.path.exists():
        assert load_checkpoint(rec.path).step == w.session.trainer.step


def test_a_window_without_a_data_directory_keeps_no_recovery_files(qtbot, monkeypatch):
    monkeypatch.delenv(rec_mod.ENV_DATA_DIR)
    monkeypatch.setattr(rec_mod, "_use_user_data_dir", False)
    w = make_window(qtbot)
    assert w.recovery.enabled is False and w.session.boundary_hook is None
    assert not w.recovery.offer()
    w.close()
