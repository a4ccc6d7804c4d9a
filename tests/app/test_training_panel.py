"""The training panel: defaults, validation, states, signals and settings dicts."""

from __future__ import annotations

import pytest
from PySide6 import QtCore, QtWidgets

from app.display import format_duration
from app.widgets.training_panel import ScientificSpinBox, TrainingPanel
from vae_core.config import parse_hidden_dims


@pytest.fixture
def panel(qtbot):
    w = TrainingPanel(hidden_parser=parse_hidden_dims)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


def type_into(qtbot, spin: QtWidgets.QAbstractSpinBox, text: str) -> None:
    """Replace a spin box's text by typing, then press Enter."""
    spin.setFocus()
    spin.lineEdit().selectAll()
    qtbot.keyClick(spin.lineEdit(), QtCore.Qt.Key.Key_Delete)
    qtbot.keyClicks(spin.lineEdit(), text)
    qtbot.keyClick(spin.lineEdit(), QtCore.Qt.Key.Key_Return)
    spin.interpretText()


def test_defaults(panel):
    assert panel.objectName() == "trainingPanel"
    assert [panel.datasetCombo.itemData(i) for i in range(3)] == ["mnist", "digits", "shapes"]
    assert panel.datasetCombo.itemText(0) == "MNIST (5,000 digits)"
    assert panel.dataset_settings() == {"source": "mnist", "size": None, "binarize": "none", "n": 20000}
    assert panel.sizeSpin.text() == "native"
    assert panel.model_settings() == {
        "latent_dim": 2,
        "architecture": "mlp",
        "hidden_dims": (512, 256),
        "likelihood": "bernoulli",
        "sigma": pytest.approx(0.1),
        "learn_sigma": False,
    }
    assert panel.train_settings() == {
        "epochs": 20,
        "batch_size": 64,
        "lr": pytest.approx(1e-3),
        "beta": 1.0,
        "warmup": "none",
        "warmup_epochs": 10,
        "free_bits": 0.0,
        "device": "auto",  # the GPUs there are have not been told yet: CUDA when present
        "precision": "fp32",
    }
    assert panel.hiddenEdit.placeholderText() == "e.g. 512,256 (empty = linear)"
    assert panel.lrSpin.text() == "1e-3"
    assert "KL" in panel.betaSpin.toolTip()
    # Shapes count and sigma only apply to the shapes dataset / Gaussian likelihood.
    assert not panel.shapesCountSpin.isEnabled()
    assert not panel.sigmaSpin.isEnabled()
    assert panel.trainButton.isEnabled()
    assert not panel.pauseButton.isEnabled()
    assert not panel.stopButton.isEnabled()


def test_buttons_emit(panel, qtbot):
    with qtbot.waitSignal(panel.trainRequested, timeout=1000):
        qtbot.mouseClick(panel.trainButton, QtCore.Qt.MouseButton.LeftButton)
    panel.set_state("training")
    with qtbot.waitSignal(panel.pauseToggled, timeout=1000):
        qtbot.mouseClick(panel.pauseButton, QtCore.Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(panel.stopRequested, timeout=1000):
        qtbot.mouseClick(panel.stopButton, QtCore.Qt.MouseButton.LeftButton)
    panel.set_state("trained")
    with qtbot.waitSignal(panel.resetRequested, timeout=1000):
        qtbot.mouseClick(panel.resetButton, QtCore.Qt.MouseButton.LeftButton)


def test_disabled_train_button_does_not_emit(panel, qtbot):
    panel.set_state("training")
    with qtbot.assertNotEmitted(panel.trainRequested):
        qtbot.mouseClick(panel.trainButton, QtCore.Qt.MouseButton.LeftButton)


def test_states(panel):
    live = [panel.betaSpin, panel.lrSpin, panel.warmupCombo, panel.freeBitsSpin]

    panel.set_state("training")
    assert not panel.trainButton.isEnabled()
    assert panel.pauseButton.isEnabled() and panel.pauseButton.text() == "Pause"
    assert panel.stopButton.isEnabled()
    assert not panel.datasetGroup.isEnabled() and not panel.datasetCombo.isEnabled()
    assert not panel.modelGroup.isEnabled() and not panel.latentDimSpin.isEnabled()
    assert all(w.isEnabled() for w in live)
    assert not panel.epochsSpin.isEnabled() and not panel.batchSizeSpin.isEnabled()

    panel.set_state("paused")
    assert panel.pauseButton.text() == "Resume"
    assert panel.pauseButton.isEnabled() and panel.stopButton.isEnabled()
    assert all(w.isEnabled() for w in live)

    panel.set_state("trained")
    assert panel.trainButton.isEnabled() and panel.trainButton.text() == "Continue training"
    assert not panel.pauseButton.isEnabled() and not panel.stopButton.isEnabled()
    assert panel.pauseButton.text() == "Pause"
    assert panel.resetButton.isEnabled()
    assert not panel.modelGroup.isEnabled() and not panel.datasetGroup.isEnabled()
    assert panel.epochsSpin.isEnabled() and all(w.isEnabled() for w in live)

    panel.set_state("busy")
    for w in (panel.trainButton, panel.pauseButton, panel.resetButton,
              panel.datasetCombo, panel.latentDimSpin, panel.betaSpin, panel.lrSpin):
        assert not w.isEnabled()
    assert panel.stopButton.isEnabled() and "loading" in panel.stopButton.toolTip()  # drops what is loading
    panel.set_progress(1, 2, 3, 4, 100.0, 5.0)  # nothing breaks while busy

    panel.set_state("idle")
    assert panel.trainButton.isEnabled() and panel.trainButton.text() == "Train"
    assert not panel.pauseButton.isEnabled() and not panel.stopButton.isEnabled()
    assert panel.datasetGroup.isEnabled() and panel.modelGroup.isEnabled()
    assert panel.epochsSpin.isEnabled() and panel.batchSizeSpin.isEnabled()

    with pytest.raises(ValueError):
        panel.set_state("flying")


def test_typed_zero_ends_at_minimum(panel, qtbot):
    for spin in (panel.batchSizeSpin, panel.latentDimSpin):
        type_into(qtbot, spin, "0")
        assert spin.value() == 1


def test_lr_refuses_zero_and_negative(panel, qtbot):
    type_into(qtbot, panel.lrSpin, "0")
    assert panel.lrSpin.value() > 0
    assert panel.lrSpin.value() == pytest.approx(1e-6)
    type_into(qtbot, panel.lrSpin, "-1")  # the minus sign cannot be typed
    assert panel.lrSpin.value() > 0
    type_into(qtbot, panel.lrSpin, "50")  # above the maximum: clamped
    assert panel.lrSpin.value() == pytest.approx(10.0)
    panel.lrSpin.setValue(-3.0)
    assert panel.lrSpin.value() == pytest.approx(1e-6)


def test_a_clamped_learning_rate_says_so_in_ordinary_notation(panel, qtbot):
    notices = []
    panel.notice.connect(lambda level, text: notices.append((level, text)))
    type_into(qtbot, panel.lrSpin, "100")
    assert panel.lrSpin.value() == pytest.approx(10.0) and panel.lrSpin.text() == "10"
    assert notices == [("warning", "Learning rate 100 is above the maximum, 10: set to 10.")]
    type_into(qtbot, panel.lrSpin, "0")
    assert notices[-1] == ("warning", "Learning rate 0 is below the minimum, 0.000001: set to 0.000001.")
    type_into(qtbot, panel.lrSpin, "0.5")  # in range: nothing to say
    assert len(notices) == 2 and panel.lrSpin.text() == "0.5"


def test_a_dataset_loading_leaves_the_panel_usable_and_train_pressable(panel, qtbot):
    panel.set_state("loading")
    assert panel.trainButton.isEnabled() and panel.trainButton.text() == "Train"
    assert panel.datasetGroup.isEnabled() and panel.modelGroup.isEnabled() and panel.trainingGroup.isEnabled()
    assert panel.stopButton.isEnabled() and "loading" in panel.stopButton.toolTip()
    assert not panel.pauseButton.isEnabled() and not panel.resetButton.isEnabled()
    with qtbot.waitSignal(panel.trainRequested, timeout=1000):
        qtbot.mouseClick(panel.trainButton, QtCore.Qt.LeftButton)
    panel.reset_progress("Training starts as soon as the data is loaded…")
    panel.set_state("idle")  # the data came: what the read-out says stays until training starts
    assert panel.progressLabel.text().startswith("Training starts")


def test_locked_settings_say_why_and_what_to_do(panel):
    tip = panel.latentDimSpin.toolTip()
    assert panel.locked_tip() == ""
    for state in ("training", "trained"):
        panel.set_state(state)
        for w in (panel.datasetGroup, panel.modelGroup, panel.datasetCombo, panel.latentDimSpin, panel.hiddenEdit):
            assert "a model exists" in w.toolTip() and "Reset" in w.toolTip() and "save it first" in w.toolTip()
        assert panel.latentDimSpin.toolTip().startswith(tip), "the field's own explanation stays first"
    panel.set_state("idle")
    assert panel.latentDimSpin.toolTip() == tip and panel.locked_tip() == ""
    assert "a model exists" not in panel.hiddenEdit.toolTip()


def test_lr_scientific_parse_and_display(panel, qtbot):
    type_into(qtbot, panel.lrSpin, "1e-4")
    assert panel.lrSpin.value() == pytest.approx(1e-4)
    assert panel.lrSpin.text() == "1e-4"
    type_into(qtbot, panel.lrSpin, "0.0003")
    assert panel.lrSpin.value() == pytest.approx(3e-4)
    assert panel.lrSpin.text() == "3e-4"
    assert panel.lrSpin.valueFromText("2.5E-5") == pytest.approx(2.5e-5)
    assert ScientificSpinBox.format_value(0.5) == "0.5"
    assert ScientificSpinBox.format_value(2.5e-5) == "2.5e-5"
    panel.lrSpin.setValue(1e-3)
    panel.lrSpin.stepBy(1)
    assert panel.lrSpin.value() == pytest.approx(2e-3)
    panel.lrSpin.stepBy(-2)
    assert panel.lrSpin.value() == pytest.approx(5e-4)


def test_hidden_sizes_validation(panel, qtbot):
    edit = panel.hiddenEdit
    for bad in ("abc", "-3"):
        edit.clear()
        qtbot.keyClicks(edit, bad)
        assert edit.text() != bad  # refused at the keyboard
        edit.setText(bad)  # pasted programmatically it is still not acceptable
        assert not edit.hasAcceptableInput()
        assert not panel.hidden_valid()
        assert "c62828" in edit.styleSheet()  # shown in red
        assert not panel.trainButton.isEnabled()
    for good, dims in (("", ()), ("128, 64", (128, 64))):
        edit.clear()
        qtbot.keyClicks(edit, good)
        assert edit.text() == good
        assert edit.hasAcceptableInput()
        assert panel.hidden_valid()
        assert edit.styleSheet() == ""
        assert panel.model_settings()["hidden_dims"] == dims
    assert panel.trainButton.isEnabled()
    edit.setText("128,")  # incomplete list: not acceptable yet
    assert not panel.hidden_valid()
    edit.setText("0")
    assert not panel.hidden_valid()


def test_live_setting_emitted_once_on_commit(panel, qtbot):
    seen = []
    panel.liveSettingChanged.connect(lambda name, value: seen.append((name, value)))
    panel.set_state("training")
    panel.betaSpin.setFocus()
    panel.betaSpin.lineEdit().selectAll()
    qtbot.keyClicks(panel.betaSpin.lineEdit(), "2.5")
    assert seen == []  # no emission per keystroke
    panel.betaSpin.setValue(2.5)
    panel.betaSpin.editingFinished.emit()
    panel.betaSpin.editingFinished.emit()  # committing again without a change emits nothing
    assert seen == [("beta", 2.5)]

    type_into(qtbot, panel.lrSpin, "1e-2")
    assert seen[-1] == ("lr", pytest.approx(1e-2))
    assert len(seen) == 2

    panel.warmupCombo.setCurrentIndex(panel.warmupCombo.findData("linear"))
    panel.warmupCombo.activated.emit(panel.warmupCombo.currentIndex())
    assert seen[-1] == ("warmup", "linear")
    assert len(seen) == 3


def test_apply_settings_round_trip_without_live_signal(panel, qtbot):
    model = {
        "latent_dim": 16,
        "architecture": "conv",
        "hidden_dims": (32, 64),
        "likelihood": "gaussian",
        "sigma": 0.25,
        "learn_sigma": True,
    }
    train = {
        "epochs": 7,
        "batch_size": 64,
        "lr": 3e-4,
        "beta": 4.0,
        "warmup": "cyclical",
        "warmup_epochs": 5,
        "free_bits": 0.5,
    }
    dataset = {"source": "/data/faces", "size": 32, "binarize": "dynamic", "n": 1000}
    with qtbot.assertNotEmitted(panel.liveSettingChanged):
        with qtbot.assertNotEmitted(panel.datasetChanged):
            panel.apply_settings(model=model, train=train, dataset=dataset)
    assert panel.model_settings() == {**model, "sigma": pytest.approx(0.25)}
    assert panel.train_settings() == {**train, "lr": pytest.approx(3e-4), "device": "auto", "precision": "fp32"}
    assert panel.dataset_settings() == dataset
    assert panel.datasetCombo.currentText() == "faces"
    assert panel.sigmaSpin.isEnabled()
    # Extra keys (as in ModelConfig.to_dict) are ignored; lists become tuples.
    panel.apply_settings(model={"input_shape": [1, 28, 28], "hidden_dims": [10], "architecture": "mlp"})
    assert panel.model_settings()["hidden_dims"] == (10,)
    # Applied values count as committed: a later commit of the same value is silent.
    with qtbot.assertNotEmitted(panel.liveSettingChanged):
        panel.betaSpin.editingFinished.emit()


def test_dataset_entries_and_signal(panel, qtbot):
    with qtbot.waitSignal(panel.datasetChanged, timeout=1000) as blocker:
        panel.datasetCombo.setCurrentIndex(2)
    assert blocker.args == ["shapes"]
    assert panel.shapesCountSpin.isEnabled()
    with qtbot.waitSignal(panel.datasetChanged, timeout=1000) as blocker:
        panel.add_dataset_entry("my.npz", "/tmp/my.npz")
    assert blocker.args == ["/tmp/my.npz"]
    assert not panel.shapesCountSpin.isEnabled()
    count = panel.datasetCombo.count()
    panel.datasetCombo.setCurrentIndex(0)
    panel.add_dataset_entry("my.npz", "/tmp/my.npz")  # present: selected, not duplicated
    assert panel.datasetCombo.count() == count
    assert panel.dataset_settings()["source"] == "/tmp/my.npz"


def test_open_buttons_emit_path(panel, qtbot, monkeypatch):
    monkeypatch.setattr(QtWidgets.QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: "/data/imgs"))
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("/data/x.npy", "")))
    with qtbot.waitSignal(panel.openPathRequested, timeout=1000) as blocker:
        qtbot.mouseClick(panel.openFolderButton, QtCore.Qt.MouseButton.LeftButton)
    assert blocker.args == ["/data/imgs"]
    with qtbot.waitSignal(panel.openPathRequested, timeout=1000) as blocker:
        qtbot.mouseClick(panel.openFileButton, QtCore.Qt.MouseButton.LeftButton)
    assert blocker.args == ["/data/x.npy"]
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    with qtbot.assertNotEmitted(panel.openPathRequested):
        qtbot.mouseClick(panel.openFileButton, QtCore.Qt.MouseButton.LeftButton)


def test_size_spin_refuses_tiny_sizes(panel, qtbot):
    type_into(qtbot, panel.sizeSpin, "5")
    assert panel.sizeSpin.value() == 8
    panel.sizeSpin.setValue(0)
    panel.sizeSpin.stepBy(1)
    assert panel.sizeSpin.value() == 8
    panel.sizeSpin.stepBy(-1)
    assert panel.sizeSpin.value() == 0
    type_into(qtbot, panel.sizeSpin, "64")
    assert panel.dataset_settings()["size"] == 64


def test_sigma_only_for_gaussian(panel):
    panel.likelihoodCombo.setCurrentIndex(panel.likelihoodCombo.findData("gaussian"))
    assert panel.sigmaSpin.isEnabled() and panel.learnSigmaCheck.isEnabled()
    panel.likelihoodCombo.setCurrentIndex(panel.likelihoodCombo.findData("continuous_bernoulli"))
    assert not panel.sigmaSpin.isEnabled()


def test_progress_label(panel):
    panel.set_progress(3, 20, 12, 40, 8412.3, 42)
    assert panel.progressLabel.text() == "Epoch 3/20 · batch 12/40\n8,412 samples/s · ETA 0:42"
    assert panel.progressBar.value() == round(1000 * (2 * 40 + 12) / (20 * 40))
    panel.set_progress(20, 20, 40, 40, float("nan"), None)
    assert panel.progressBar.value() == panel.progressBar.maximum()
    assert panel.progressLabel.text().endswith("ETA –")
    assert format_duration(3723) == "1:02:03"


def test_fits_a_narrow_column(panel):
    hint = panel.sizeHint()
    assert hint.width() <= 400
    # Labels are never squeezed below the width of their text.
    for label in panel.findChildren(QtWidgets.QLabel):
        if label.text() and label.isVisible() and label is not panel.progressLabel:
            assert label.width() >= label.fontMetrics().horizontalAdvance(label.text()) - 1


# ------------------------------------------------------------ device and precision
def _row_shown(panel, field) -> bool:
    label = panel.deviceLabel if field is panel.deviceCombo else panel.precisionLabel
    assert field.isVisible() == label.isVisible()
    return field.isVisible()


def test_device_and_precision_are_hidden_without_cuda(panel):
    from vae_core.model import cuda_devices

    assert not _row_shown(panel, panel.deviceCombo) and not _row_shown(panel, panel.precisionCombo)
    names = cuda_devices()  # asked as the window asks it (an empty list on a machine without CUDA)
    panel.set_devices(names)
    assert panel.devices() == names
    assert _row_shown(panel, panel.deviceCombo) == bool(names)
    assert _row_shown(panel, panel.precisionCombo) == bool(names)
    if not names:
        settings = panel.train_settings()
        assert settings["device"] == "cpu" and settings["precision"] == "fp32"
        panel.archCombo.setCurrentIndex(panel.archCombo.findData("conv"))
        assert panel.train_settings()["precision"] == "fp32"


def test_a_gpu_offers_the_device_and_bf16_for_conv_models(panel):
    panel.set_devices(["NVIDIA H200"])
    assert _row_shown(panel, panel.deviceCombo) and _row_shown(panel, panel.precisionCombo)
    combo = panel.deviceCombo
    assert [combo.itemData(i) for i in range(combo.count())] == ["cpu", "cuda:0"]
    assert combo.currentData() == "cuda:0" and combo.currentText() == "GPU 0: NVIDIA H200"
    tip = panel.precisionCombo.toolTip()
    assert "ELBO is still computed and reported in float32" in tip

    # The default MLP: bf16 is not offered.
    assert panel.archCombo.currentData() == "mlp"
    assert not panel.precisionCombo.isEnabled()
    assert "Convolutional" in panel.precisionCombo.toolTip()
    assert panel.train_settings()["device"] == "cuda:0" and panel.train_settings()["precision"] == "fp32"

    # A conv model on the GPU: it is.
    panel.archCombo.setCurrentIndex(panel.archCombo.findData("conv"))
    assert panel.precisionCombo.isEnabled()
    panel.precisionCombo.setCurrentIndex(panel.precisionCombo.findData("bf16"))
    assert {k: panel.train_settings()[k] for k in ("device", "precision")} == {"device": "cuda:0", "precision": "bf16"}
    from vae_core.config import TrainConfig

    cfg = TrainConfig(**panel.train_settings())  # what the session builds from them
    assert (cfg.device, cfg.precision) == ("cuda:0", "bf16")

    # The CPU: float32 only.
    combo.setCurrentIndex(combo.findData("cpu"))
    assert not panel.precisionCombo.isEnabled()
    assert {k: panel.train_settings()[k] for k in ("device", "precision")} == {"device": "cpu", "precision": "fp32"}
    combo.setCurrentIndex(combo.findData("cuda:0"))
    assert panel.precisionCombo.isEnabled()
    panel.archCombo.setCurrentIndex(panel.archCombo.findData("mlp"))
    assert not panel.precisionCombo.isEnabled() and panel.train_settings()["precision"] == "fp32"

    # A model keeps its device and precision: both are fixed until Reset.
    panel.archCombo.setCurrentIndex(panel.archCombo.findData("conv"))
    for state in ("training", "paused", "trained"):
        panel.set_state(state)
        assert not combo.isEnabled() and not panel.precisionCombo.isEnabled()
    panel.set_state("idle")
    assert combo.isEnabled() and panel.precisionCombo.isEnabled()

    # Told again (the same GPUs), the choice stays.
    combo.setCurrentIndex(combo.findData("cpu"))
    panel.set_devices(["NVIDIA H200"])
    assert combo.currentData() == "cpu"


def test_a_checkpoint_device_is_shown_when_known(panel):
    train = {"device": "cuda", "precision": "bf16"}
    model = {"architecture": "conv", "hidden_dims": (32, 64)}
    panel.apply_settings(model=model, train=train)  # before the GPUs are known: remembered
    assert panel.train_settings()["device"] == "auto"
    panel.set_devices(["GPU A", "GPU B"])
    assert panel.deviceCombo.currentData() == "cuda:0" and panel.precisionCombo.currentData() == "bf16"
    panel.apply_settings(train={"device": "cuda:1", "precision": "fp32"})
    assert panel.train_settings()["device"] == "cuda:1" and panel.train_settings()["precision"] == "fp32"
    # A device this machine does not have leaves the choice as it is.
    panel.apply_settings(train={"device": "cuda:7"})
    assert panel.deviceCombo.currentData() == "cuda:1"


class _IdleThread(QtCore.QObject):
    """The training thread's interface, never started: the session's configs are what is looked at."""

    trainerReady = QtCore.Signal(object)
    batches = QtCore.Signal(object)
    modelsReady = QtCore.Signal(object)
    epochEnded = QtCore.Signal(object)
    statusChanged = QtCore.Signal(object)
    settingChanged = QtCore.Signal(object)
    failed = QtCore.Signal(str)
    finished = QtCore.Signal()

    def __init__(self, factory, epochs=None, num_threads=1, parent=None):
        super().__init__(parent)

    def start(self) -> None:
        pass

    def isRunning(self) -> bool:  # noqa: N802 - Qt's name
        return False

    def wait(self, timeout_ms: int = 0) -> bool:
        return True


def test_the_session_trains_with_the_chosen_device_and_precision(panel, qtbot):
    from app.session import Session
    from vae_core.data import DatasetSpec, load_dataset

    s = Session(num_threads=1, train_thread=_IdleThread)
    messages = []
    s.message.connect(lambda level, text: messages.append((level, text)))
    s.dataset = load_dataset(DatasetSpec("shapes", n=200, size=32))
    panel.set_devices(["NVIDIA H200"])
    panel.archCombo.setCurrentIndex(panel.archCombo.findData("conv"))
    panel.precisionCombo.setCurrentIndex(panel.precisionCombo.findData("bf16"))
    s.train(panel.model_settings(), panel.train_settings())
    assert not messages
    assert (s.train_config.device, s.train_config.precision) == ("cuda:0", "bf16")
    s.shutdown(1000)


def test_the_window_asks_for_gpus_on_a_worker_thread(qtbot):
    from app.main_window import MainWindow
    from vae_core.model import cuda_devices

    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.panel.devices() is not None, timeout=15000)
    names = cuda_devices()
    assert w.panel.devices() == names
    assert w.panel.deviceCombo.isVisible() == bool(names)
    if not names:
        assert w.panel.train_settings()["device"] == "cpu"
    w.session.shutdown(3000)


@pytest.mark.skipif(bool(__import__("vae_core.model", fromlist=["cuda_devices"]).cuda_devices()),
                    reason="CUDA is here: a checkpoint's GPU is there")
def test_a_gpu_checkpoint_opened_without_cuda_says_it_continues_on_the_cpu(qtbot, tmp_path, monkeypatch):
    from app.main_window import MainWindow
    from app.session import TRAINED
    from vae_core.checkpoint import save_checkpoint
    from vae_core.config import ModelConfig, TrainConfig
    from vae_core.data import load_dataset
    from vae_core.training import Trainer

    ds = load_dataset("digits")
    t = Trainer(ModelConfig(input_shape=ds.input_shape, hidden_dims=(16,)),
                TrainConfig(epochs=1, batch_size=256, device="cuda:0"), ds, device="cpu")
    list(t.run())
    path = save_checkpoint(t, tmp_path / "gpu.ckpt")

    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    said = []
    show = w.show_message
    monkeypatch.setattr(w, "show_message", lambda level, text: (said.append((level, text)), show(level, text)))
    w.show()
    w.open_path(str(path))
    qtbot.waitUntil(lambda: any("no CUDA GPU here" in text for _, text in said), timeout=30000)
    assert any(level == "info" and "cuda:0" in text and "CPU" in text for level, text in said)
    w.panel.epochsSpin.setValue(1)
    qtbot.mouseClick(w.panel.trainButton, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and not w.session.running
                    and w.session.trainer is not None and w.session.trainer.epoch == 2, timeout=60000)
    assert w.session.trainer.device.type == "cpu"
    assert not [text for level, text in said if level == "error"]
    w.session.shutdown(3000)


# ------------------------------------------------ data settings reload the dataset shown

def _emissions(panel) -> list[dict]:
    """What datasetChanged asks to load, each time it is emitted."""
    seen: list[dict] = []
    panel.datasetChanged.connect(lambda key: seen.append({**panel.dataset_settings(), "key": key}))
    return seen


def _rest(panel, qtbot) -> None:
    """Wait past the panel's reload delay."""
    qtbot.wait(panel.RELOAD_DELAY_MS + 200)


@pytest.fixture
def shapes_panel(panel, qtbot):
    with qtbot.waitSignal(panel.datasetChanged, timeout=1000):
        panel.datasetCombo.setCurrentIndex(panel.datasetCombo.findData("shapes"))
    return panel


def test_typing_a_shapes_count_loads_shapes_again_once(shapes_panel, qtbot):
    panel = shapes_panel
    seen = _emissions(panel)
    type_into(qtbot, panel.shapesCountSpin, "737280")
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=2000)
    _rest(panel, qtbot)
    assert seen == [{"source": "shapes", "size": None, "binarize": "none", "n": 737280, "key": "shapes"}]


def test_spinning_the_shapes_count_loads_once_it_rests(shapes_panel, qtbot):
    panel = shapes_panel
    seen = _emissions(panel)
    panel.shapesCountSpin.setFocus()
    for _ in range(3):
        qtbot.keyClick(panel.shapesCountSpin, QtCore.Qt.Key.Key_Up)
    assert panel.shapesCountSpin.value() == 23000
    assert seen == []  # not yet: the user may still be spinning
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=2000)
    _rest(panel, qtbot)
    assert [s["n"] for s in seen] == [23000]


@pytest.mark.parametrize("key", ["shapes", "digits", "/tmp/faces.npz"])
def test_a_new_image_size_loads_the_dataset_shown_again(panel, qtbot, key):
    if panel.datasetCombo.findData(key) < 0:
        panel.add_dataset_entry("faces.npz", key)
    panel.datasetCombo.setCurrentIndex(panel.datasetCombo.findData(key))
    seen = _emissions(panel)
    type_into(qtbot, panel.sizeSpin, "32")
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=2000)
    panel.sizeSpin.setFocus()
    qtbot.keyClick(panel.sizeSpin, QtCore.Qt.Key.Key_Down)
    qtbot.waitUntil(lambda: len(seen) == 2, timeout=2000)
    _rest(panel, qtbot)
    assert [(s["key"], s["size"]) for s in seen] == [(key, 32), (key, 31)]


def test_a_new_binarization_loads_the_dataset_shown_again(panel, qtbot):
    panel.datasetCombo.setCurrentIndex(panel.datasetCombo.findData("digits"))
    seen = _emissions(panel)
    panel.binarizeCombo.setFocus()
    qtbot.keyClick(panel.binarizeCombo, QtCore.Qt.Key.Key_Down)
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=2000)
    _rest(panel, qtbot)
    assert [(s["key"], s["binarize"]) for s in seen] == [("digits", "static")]


def test_the_shapes_count_of_another_dataset_loads_nothing(panel, qtbot):
    panel.datasetCombo.setCurrentIndex(panel.datasetCombo.findData("digits"))
    assert not panel.shapesCountSpin.isEnabled()
    with qtbot.assertNotEmitted(panel.datasetChanged, wait=panel.RELOAD_DELAY_MS + 200):
        panel.shapesCountSpin.setValue(5000)


def test_settings_shown_from_a_checkpoint_load_nothing(shapes_panel, qtbot):
    panel = shapes_panel
    with qtbot.assertNotEmitted(panel.datasetChanged, wait=panel.RELOAD_DELAY_MS + 200):
        panel.apply_settings(dataset={"source": "shapes", "size": 48, "binarize": "dynamic", "n": 3000})
        # As the main window shows a loaded checkpoint or the dataset it loaded.
        panel.blockSignals(True)
        panel.apply_settings(dataset={"source": "shapes", "size": 40, "binarize": "static", "n": 4000})
        panel.add_dataset_entry("faces", "/tmp/faces")
        panel.blockSignals(False)
    assert panel.dataset_settings() == {"source": "/tmp/faces", "size": 40, "binarize": "static", "n": 4000}


def test_checkpoint_settings_replace_a_change_waiting_to_load(shapes_panel, qtbot):
    panel = shapes_panel
    type_into(qtbot, panel.shapesCountSpin, "5000")
    with qtbot.assertNotEmitted(panel.datasetChanged, wait=panel.RELOAD_DELAY_MS + 200):
        panel.apply_settings(dataset={"source": "shapes", "n": 3000})


def test_train_right_after_a_change_loads_the_new_data_first(shapes_panel, qtbot):
    panel = shapes_panel
    order: list[tuple] = []
    panel.datasetChanged.connect(lambda key: order.append(("load", panel.dataset_settings()["size"])))
    panel.trainRequested.connect(lambda: order.append(("train",)))
    type_into(qtbot, panel.sizeSpin, "32")
    qtbot.mouseClick(panel.trainButton, QtCore.Qt.MouseButton.LeftButton)
    _rest(panel, qtbot)
    assert order == [("load", 32), ("train",)]


def test_stop_drops_a_change_waiting_to_load(shapes_panel, qtbot):
    panel = shapes_panel
    panel.set_state("loading")
    type_into(qtbot, panel.sizeSpin, "32")
    with qtbot.assertNotEmitted(panel.datasetChanged, wait=panel.RELOAD_DELAY_MS + 200):
        with qtbot.waitSignal(panel.stopRequested, timeout=1000):
            qtbot.mouseClick(panel.stopButton, QtCore.Qt.MouseButton.LeftButton)


def test_the_data_settings_are_disabled_while_a_model_trains(shapes_panel, qtbot):
    panel = shapes_panel
    type_into(qtbot, panel.shapesCountSpin, "5000")
    with qtbot.assertNotEmitted(panel.datasetChanged, wait=panel.RELOAD_DELAY_MS + 200):
        panel.set_state("training")
    for name in ("sizeSpin", "binarizeCombo", "shapesCountSpin", "datasetCombo"):
        assert not panel.findChild(QtWidgets.QWidget, name).isEnabled(), name


def test_the_window_loads_shapes_again_with_the_new_count_and_size(qtbot):
    from app.main_window import MainWindow

    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.show()
    panel = w.panel
    panel.apply_settings(dataset={"n": 300})
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("shapes")
    assert w.session.dataset.n == 300
    assert panel.shapesCountSpin.isEnabled(), "the count belongs to the Shapes the window started with"
    type_into(qtbot, panel.findChild(QtWidgets.QSpinBox, "shapesCountSpin"), "400")
    qtbot.waitUntil(lambda: w.session.dataset.n == 400, timeout=60000)
    type_into(qtbot, panel.findChild(QtWidgets.QSpinBox, "sizeSpin"), "16")
    qtbot.waitUntil(lambda: tuple(w.session.dataset.input_shape)[-2:] == (16, 16), timeout=60000)
    assert w.session.dataset.n == 400 and not w.session.loading_dataset
    w.session.shutdown(3000)
