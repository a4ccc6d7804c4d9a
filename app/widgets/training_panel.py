"""The left-hand control panel: dataset, model and training settings, and the
Train / Pause / Stop / Reset buttons with a progress read-out.

The Device and Precision choices appear once the panel is told of a CUDA
GPU (``set_devices``); without one training runs on the CPU in float32.

The panel holds no logic beyond input validation and enabling/disabling its
own widgets.  It reports what the user asked for through signals and gives
its settings as plain dicts; the main window turns those into configs.  The
hidden sizes are parsed by the function the panel is given (the engine's
parser: the panel itself knows no engine).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Sequence

from PySide6 import QtCore, QtGui, QtWidgets

from ..display import format_duration

BUILTIN_DATASETS = (
    ("MNIST (5,000 digits)", "mnist"),
    ("Digits (1,797 8x8)", "digits"),
    ("Shapes (dSprites-style)", "shapes"),
)
ARCHITECTURES = (("MLP", "mlp"), ("Convolutional", "conv"))
LIKELIHOODS = (
    ("Bernoulli", "bernoulli"),
    ("Continuous Bernoulli", "continuous_bernoulli"),
    ("Gaussian", "gaussian"),
)
BINARIZE = (("None", "none"), ("Static", "static"), ("Dynamic", "dynamic"))
WARMUPS = (("None", "none"), ("Linear", "linear"), ("Cyclical", "cyclical"))
PRECISIONS = (("fp32 (float32)", "fp32"), ("bf16 mixed precision", "bf16"))
DEVICE_TIP = ("Where a new model trains: the CPU or a CUDA GPU. A model keeps its device and precision "
              "until it is reset.")
PRECISION_TIP = ("bf16 mixed precision: the encoder and decoder compute in bfloat16 on the GPU (faster, less "
                 "memory); the weights and their updates stay float32, and the ELBO is still computed and "
                 "reported in float32. For convolutional models on a GPU.")
PRECISION_NEEDS = "Needs the Convolutional architecture and a GPU device; this model trains in float32."
STATES = ("idle", "loading", "training", "paused", "trained", "busy")
#: Why the dataset and model settings are greyed out while a model exists, and what to do about it.
LOCKED_TIP = ("Locked: a model exists, and it was built for these settings. To change them, reset the model "
              "(the Reset button or Training ▸ Reset model); to keep this model, save it first "
              "(File ▸ Save checkpoint), then reset.")

FILE_FILTER = "Image arrays: NumPy, MNIST IDX (*.npy *.npz *.gz *ubyte *idx*);;All files (*)"

# Default hidden sizes per architecture: layer widths for the MLP, channel
# counts of the stride-2 convolutions for the conv net.
DEFAULT_HIDDEN = {"mlp": "512,256", "conv": "32,64"}
MAX_HIDDEN_WIDTH = 16384

_INVALID_STYLE = "QLineEdit { color: #c62828; border: 1px solid #c62828; }"


class ScientificSpinBox(QtWidgets.QDoubleSpinBox):
    """A double spin box for quantities spanning decades, such as a learning rate.

    Shows values like ``1e-3`` or ``3e-4`` (and 0.1 to 10,000 in plain
    notation), parses plain or scientific text, clamps out-of-range input to
    the nearest bound and says so (``clamped``: the value typed and the bound
    it became), and steps along the 1-2-5 sequence (1e-4, 2e-4, 5e-4, 1e-3, ...).
    """

    _PARTIAL = re.compile(r"^\s*(\d+\.?\d*|\.\d*)?([eE][+-]?\d*)?\s*$")
    clamped = QtCore.Signal(float, float)  # the value typed, the bound it was set to

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        # Enough decimals that QDoubleSpinBox's rounding never touches values
        # down to the 1e-6 minimum.
        self.setDecimals(12)
        self.setCorrectionMode(QtWidgets.QAbstractSpinBox.CorrectionMode.CorrectToNearestValue)
        self._clamped_text: str | None = None  # the text whose clamping was last said
        self.lineEdit().textEdited.connect(self._on_text_edited)

    @staticmethod
    def format_value(value: float) -> str:
        if value == 0 or not math.isfinite(value):
            return f"{value:g}"
        if 0.1 <= abs(value) < 10_000:
            return f"{value:.4g}"
        mantissa, exponent = f"{value:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"

    @staticmethod
    def _parse(text: str) -> float | None:
        try:
            value = float(text.strip())
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt override)
        return self.format_value(value)

    def valueFromText(self, text: str) -> float:  # noqa: N802 (Qt override)
        value = self._parse(text)
        if value is None:
            return self.value()
        return min(max(value, self.minimum()), self.maximum())


    def validate(self, text: str, pos: int) -> QtGui.QValidator.State:
        if not self._PARTIAL.match(text):
            return QtGui.QValidator.State.Invalid
        value = self._parse(text)
        if value is None:
            return QtGui.QValidator.State.Intermediate
        if self.minimum() <= value <= self.maximum():
            return QtGui.QValidator.State.Acceptable
        return QtGui.QValidator.State.Intermediate

    def fixup(self, text: str) -> str:
        """Qt asks for a valid text at the end of an edit: the nearest bound of an out-of-range value, said once."""
        value = self._parse(text)
        if value is None:
            return text
        bound = min(max(value, self.minimum()), self.maximum())
        if bound != value and text != self._clamped_text:
            self._clamped_text = text
            self.clamped.emit(value, bound)
        return self.format_value(bound)

    def _on_text_edited(self, _text: str) -> None:
        self._clamped_text = None  # a new edit: its clamping is said again

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt override)
        value = self.value()
        for _ in range(abs(steps)):
            value = self._next_125(value, up=steps > 0)
        self.setValue(min(max(value, self.minimum()), self.maximum()))
        self.selectAll()

    @staticmethod
    def _next_125(value: float, up: bool) -> float:
        if value <= 0:
            return value
        exponent = math.floor(math.log10(value))
        candidates = [m * 10.0**e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]
        if up:
            above = [c for c in candidates if c > value * (1 + 1e-9)]
            return float(f"{min(above):.6g}")
        below = [c for c in candidates if c < value * (1 - 1e-9)]
        return float(f"{max(below):.6g}")


class ImageSizeSpinBox(QtWidgets.QSpinBox):
    """Image side length: 0 means the dataset's native size, otherwise 8..128.

    Sizes 1..7 are refused: typed, they round up to 8; stepping jumps
    between "native" and 8.
    """

    MIN_SIZE = 8

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, 128)
        self.setSpecialValueText("native")
        self.setCorrectionMode(QtWidgets.QAbstractSpinBox.CorrectionMode.CorrectToNearestValue)

    def _number(self, text: str) -> int | None:
        core = text.strip()
        suffix = self.suffix().strip()
        if suffix and core.endswith(suffix):
            core = core[: -len(suffix)].strip()
        return int(core) if core.isdigit() else None

    def validate(self, text: str, pos: int) -> QtGui.QValidator.State:
        state = super().validate(text, pos)
        if isinstance(state, tuple):  # the binding may hand back (state, text, pos)
            state = state[0]
        number = self._number(text)
        if state == QtGui.QValidator.State.Acceptable and number is not None and 0 < number < self.MIN_SIZE:
            return QtGui.QValidator.State.Intermediate
        return state

    def fixup(self, text: str) -> str:
        number = self._number(text)
        if number is not None and 0 < number < self.MIN_SIZE:
            return self.textFromValue(self.MIN_SIZE) + self.suffix()
        return text

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt override)
        value = self.value()
        if steps > 0 and value == 0:
            self.setValue(self.MIN_SIZE + (steps - 1) * self.singleStep())
        elif steps < 0 and value + steps * self.singleStep() < self.MIN_SIZE:
            self.setValue(0)
        else:
            super().stepBy(steps)

    def setValue(self, value: int) -> None:  # noqa: N802 (Qt override)
        value = int(value)
        if 0 < value < self.MIN_SIZE:
            value = self.MIN_SIZE
        super().setValue(value)


class HiddenSizesValidator(QtGui.QValidator):
    """Comma-separated positive layer widths; empty text means no hidden layer.

    Characters other than digits, commas and spaces are refused outright;
    incomplete lists (a trailing comma, a zero width) are intermediate.
    """

    def __init__(self, parent: QtCore.QObject | None = None, allow_empty: bool = True) -> None:
        super().__init__(parent)
        self.allow_empty = allow_empty

    def validate(self, text: str, pos: int) -> QtGui.QValidator.State:
        return self.check(text, self.allow_empty)

    @staticmethod
    def check(text: str, allow_empty: bool = True) -> QtGui.QValidator.State:
        if not re.fullmatch(r"[\d,\s]*", text):
            return QtGui.QValidator.State.Invalid
        stripped = text.strip()
        if not stripped:
            return QtGui.QValidator.State.Acceptable if allow_empty else QtGui.QValidator.State.Intermediate
        tokens = [t.strip() for t in stripped.split(",")]
        state = QtGui.QValidator.State.Acceptable
        for token in tokens:
            if not token:
                state = QtGui.QValidator.State.Intermediate
                continue
            if " " in token or "\t" in token:  # "12 34": two numbers without a comma
                return QtGui.QValidator.State.Invalid
            width = int(token)
            if width > MAX_HIDDEN_WIDTH:
                return QtGui.QValidator.State.Invalid
            if width < 1:
                state = QtGui.QValidator.State.Intermediate
        return state


def plain_number(value: float) -> str:
    """A number in ordinary notation: 100, 10, 0.5, 0.000001 (never "1e1")."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) >= 1:
        return f"{value:,.6f}".rstrip("0").rstrip(".")
    digits = max(0, -math.floor(math.log10(abs(value)))) + 5
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def format_progress(
    epoch: int,
    n_epochs: int,
    batch: int,
    n_batches: int,
    samples_per_s: float | None,
    eta_s: float | None,
) -> str:
    """Two lines: where the run is, then its speed and the time left (a narrow panel never breaks "samples/s")."""
    speed = []
    if samples_per_s is not None and math.isfinite(samples_per_s):
        speed.append(f"{samples_per_s:,.0f} samples/s")
    if eta_s is not None and math.isfinite(eta_s):
        speed.append(f"ETA {format_duration(eta_s)}")
    else:
        speed.append("ETA –")
    return f"Epoch {epoch}/{n_epochs} · batch {batch}/{n_batches}\n" + " · ".join(speed)


class TrainingPanel(QtWidgets.QWidget):
    """Settings and run controls for training a VAE."""

    datasetChanged = QtCore.Signal(str)
    openPathRequested = QtCore.Signal(str)
    trainRequested = QtCore.Signal()
    pauseToggled = QtCore.Signal()
    stopRequested = QtCore.Signal()
    resetRequested = QtCore.Signal()
    liveSettingChanged = QtCore.Signal(str, object)
    notice = QtCore.Signal(str, str)  # level, text: something the user should know about their input

    PROGRESS_STEPS = 1000
    #: A change of image size, binarization or shapes count reloads the dataset once the
    #: values have rested this long, so that holding a spin box's arrow loads once.
    RELOAD_DELAY_MS = 300

    def __init__(self, hidden_parser: Callable[[str], tuple[int, ...]],
                 parent: QtWidgets.QWidget | None = None) -> None:
        """``hidden_parser`` turns the hidden-sizes text into layer widths (raising ValueError)."""
        super().__init__(parent)
        self.setObjectName("trainingPanel")
        self._parse_hidden = hidden_parser
        self._state = "idle"
        self._suppress = False  # set while the panel fills itself programmatically
        self._last_dir = ""
        self._committed: dict[str, Any] = {}
        self._locked = False  # the dataset and model settings are locked: a model exists
        self._tips: dict[QtWidgets.QWidget, str] = {}  # their own tooltips, while the lock note is added
        self._devices: list[str] | None = None  # the CUDA GPUs' names; None until the owner says
        self._wanted: dict[str, str] = {}  # the device and precision applied before the devices were known
        self._reload_timer = QtCore.QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(self.RELOAD_DELAY_MS)
        self._reload_timer.timeout.connect(self._emit_reload)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        self.datasetGroup = self._build_dataset_group()
        self.modelGroup = self._build_model_group()
        self.trainingGroup = self._build_training_group()
        layout.addWidget(self.datasetGroup)
        layout.addWidget(self.modelGroup)
        layout.addWidget(self.trainingGroup)
        layout.addLayout(self._build_buttons())
        layout.addWidget(self._build_progress())
        layout.addStretch(1)

        self._install_wheel_guard()
        self._committed = self._live_values()
        self._update_dependent_widgets()
        self.set_state("idle")

    # ------------------------------------------------------------------ build

    @staticmethod
    def _form(group: QtWidgets.QGroupBox) -> QtWidgets.QFormLayout:
        form = QtWidgets.QFormLayout(group)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        # When the panel is narrow a label moves above its field instead of clipping.
        form.setRowWrapPolicy(QtWidgets.QFormLayout.RowWrapPolicy.WrapLongRows)
        form.setLabelAlignment(QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignVCenter)
        form.setContentsMargins(6, 6, 6, 6)
        form.setVerticalSpacing(4)
        return form

    @staticmethod
    def _add_row(form: QtWidgets.QFormLayout, label: str, field: QtWidgets.QWidget | QtWidgets.QLayout, tip: str) -> QtWidgets.QLabel:
        lab = QtWidgets.QLabel(label)
        lab.setToolTip(tip)
        if isinstance(field, QtWidgets.QWidget):
            field.setToolTip(tip)
            lab.setBuddy(field)
        form.addRow(lab, field)
        return lab

    @staticmethod
    def _combo(name: str, items: tuple[tuple[str, str], ...]) -> QtWidgets.QComboBox:
        combo = QtWidgets.QComboBox()
        combo.setObjectName(name)
        for label, key in items:
            combo.addItem(label, key)
        combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
        return combo

    @staticmethod
    def _spin(name: str, lo: int, hi: int, value: int) -> QtWidgets.QSpinBox:
        spin = QtWidgets.QSpinBox()
        spin.setObjectName(name)
        spin.setRange(lo, hi)
        spin.setValue(value)
        spin.setGroupSeparatorShown(hi >= 10000)
        spin.setKeyboardTracking(False)
        spin.setCorrectionMode(QtWidgets.QAbstractSpinBox.CorrectionMode.CorrectToNearestValue)
        return spin

    @staticmethod
    def _dspin(name: str, lo: float, hi: float, step: float, decimals: int, value: float) -> QtWidgets.QDoubleSpinBox:
        spin = QtWidgets.QDoubleSpinBox()
        spin.setObjectName(name)
        spin.setDecimals(decimals)
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setValue(value)
        spin.setKeyboardTracking(False)
        spin.setCorrectionMode(QtWidgets.QAbstractSpinBox.CorrectionMode.CorrectToNearestValue)
        return spin

    def _build_dataset_group(self) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox("Dataset")
        group.setObjectName("datasetGroup")
        form = self._form(group)

        self.datasetCombo = self._combo("datasetCombo", BUILTIN_DATASETS)
        self.datasetCombo.setMinimumContentsLength(20)  # room for the built-in names
        self._add_row(form, "Data", self.datasetCombo, "The images to train on: a built-in set or one you opened")

        self.openFolderButton = QtWidgets.QPushButton("Open folder…")
        self.openFolderButton.setObjectName("openFolderButton")
        self.openFolderButton.setToolTip("Use a folder of images (PNG, JPEG, ...) as the dataset")
        self.openFileButton = QtWidgets.QPushButton("Open file…")
        self.openFileButton.setObjectName("openFileButton")
        self.openFileButton.setToolTip("Use an image array file as the dataset: .npy, .npz or MNIST-style IDX")
        row = QtWidgets.QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.openFolderButton)
        row.addWidget(self.openFileButton)
        form.addRow(row)

        self.sizeSpin = ImageSizeSpinBox()
        self.sizeSpin.setObjectName("sizeSpin")
        self.sizeSpin.setKeyboardTracking(False)
        self.sizeSpin.setSuffix(" px")
        self._add_row(form, "Image size", self.sizeSpin, "Resize images to this many pixels a side (native = keep their size)")

        self.binarizeCombo = self._combo("binarizeCombo", BINARIZE)
        self._add_row(
            form,
            "Binarize",
            self.binarizeCombo,
            "Turn grey levels into 0/1 pixels: static = once at load, dynamic = resampled each time a batch is drawn",
        )

        self.shapesCountSpin = self._spin("shapesCountSpin", 100, 1_000_000, 20_000)
        self.shapesCountSpin.setSingleStep(1000)
        self._add_row(form, "Shapes count", self.shapesCountSpin, "How many shape images to generate (Shapes dataset only)")

        self.datasetCombo.currentIndexChanged.connect(self._on_dataset_index)
        # Each of these changes the data itself, so the dataset shown loads again with it.
        self.sizeSpin.valueChanged.connect(self._schedule_reload)
        self.binarizeCombo.currentIndexChanged.connect(self._schedule_reload)
        self.shapesCountSpin.valueChanged.connect(self._on_shapes_count)
        self.openFolderButton.clicked.connect(self._ask_folder)
        self.openFileButton.clicked.connect(self._ask_file)
        return group

    def _build_model_group(self) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox("Model")
        group.setObjectName("modelGroup")
        form = self._form(group)

        self.archCombo = self._combo("archCombo", ARCHITECTURES)
        self._add_row(form, "Architecture", self.archCombo, "MLP = fully connected layers; Convolutional = stride-2 conv layers (28 to 64 px images)")

        self.latentDimSpin = self._spin("latentDimSpin", 1, 256, 2)
        self._add_row(form, "Latent dims", self.latentDimSpin, "Size of the latent code z; 2 can be viewed directly without a projection")

        self.hiddenEdit = QtWidgets.QLineEdit(DEFAULT_HIDDEN["mlp"])
        self.hiddenEdit.setObjectName("hiddenEdit")
        self.hiddenEdit.setPlaceholderText("e.g. 512,256 (empty = linear)")
        self._hidden_validator = HiddenSizesValidator(self.hiddenEdit)
        self.hiddenEdit.setValidator(self._hidden_validator)
        self._hidden_tip = "Hidden layer widths, comma-separated (MLP); empty = a linear encoder and decoder"
        self._add_row(form, "Hidden sizes", self.hiddenEdit, self._hidden_tip)

        self.likelihoodCombo = self._combo("likelihoodCombo", LIKELIHOODS)
        self._add_row(
            form,
            "Likelihood",
            self.likelihoodCombo,
            "p(x|z): Bernoulli is exact for binary pixels, Continuous Bernoulli is a density on [0, 1], Gaussian has std sigma",
        )

        self.sigmaSpin = self._dspin("sigmaSpin", 0.001, 10.0, 0.01, 3, 0.1)
        self._add_row(form, "Sigma", self.sigmaSpin, "Standard deviation of the Gaussian likelihood (its initial value if learned)")

        self.learnSigmaCheck = QtWidgets.QCheckBox("Learn sigma")
        self.learnSigmaCheck.setObjectName("learnSigmaCheck")
        self.learnSigmaCheck.setToolTip("Train sigma as a parameter instead of keeping it fixed (Gaussian only)")
        form.addRow("", self.learnSigmaCheck)

        self.archCombo.currentIndexChanged.connect(self._on_arch_changed)
        self.likelihoodCombo.currentIndexChanged.connect(self._update_dependent_widgets)
        self.hiddenEdit.textChanged.connect(self._update_hidden_feedback)
        return group

    def _build_training_group(self) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox("Training")
        group.setObjectName("trainingGroup")
        form = self._form(group)

        self.epochsSpin = self._spin("epochsSpin", 1, 100_000, 20)
        self._add_row(form, "Epochs", self.epochsSpin, "Passes over the dataset in one run")

        self.batchSizeSpin = self._spin("batchSizeSpin", 1, 65_536, 64)
        self._add_row(form, "Batch size", self.batchSizeSpin, "Examples per gradient step")

        # Shown only when there is a CUDA GPU (set_devices).
        self.deviceCombo = self._combo("deviceCombo", (("CPU", "cpu"),))
        self.deviceLabel = self._add_row(form, "Device", self.deviceCombo, DEVICE_TIP)
        self.precisionCombo = self._combo("precisionCombo", PRECISIONS)
        self.precisionLabel = self._add_row(form, "Precision", self.precisionCombo, PRECISION_TIP)
        self._training_form = form
        form.setRowVisible(self.deviceCombo, False)
        form.setRowVisible(self.precisionCombo, False)
        self.deviceCombo.currentIndexChanged.connect(self._update_precision)

        self.lrSpin = ScientificSpinBox()
        self.lrSpin.setObjectName("lrSpin")
        # The maximum is deliberately far above sensible values so that
        # divergence can be provoked and watched; zero and negatives never pass.
        self.lrSpin.setRange(1e-6, 10.0)
        self.lrSpin.setValue(1e-3)
        self.lrSpin.setKeyboardTracking(False)
        self.lrSpin.clamped.connect(self._on_lr_clamped)
        self._add_row(form, "Learning rate", self.lrSpin, "Adam step size; accepts 1e-3 notation; arrows step 1, 2, 5, 10, ... (changes apply live)")

        self.betaSpin = self._dspin("betaSpin", 0.0, 100.0, 0.1, 3, 1.0)
        self._add_row(
            form,
            "Beta",
            self.betaSpin,
            "Weight of the KL term: 1 = the true ELBO, 0 = a plain autoencoder with noise, >1 = beta-VAE",
        )

        self.warmupCombo = self._combo("warmupCombo", WARMUPS)
        self._add_row(
            form,
            "KL warm-up",
            self.warmupCombo,
            "Ramp the KL weight from 0 to beta: linear = once, cyclical = repeated every warm-up period",
        )

        self.warmupEpochsSpin = self._spin("warmupEpochsSpin", 1, 1000, 10)
        self._add_row(form, "Warm-up epochs", self.warmupEpochsSpin, "Length of the KL ramp (or of one cycle), in epochs")

        self.freeBitsSpin = self._dspin("freeBitsSpin", 0.0, 10.0, 0.05, 2, 0.0)
        self._add_row(
            form,
            "Free bits",
            self.freeBitsSpin,
            "Minimum KL in nats charged per latent dimension, against posterior collapse (0 = off)",
        )

        # Live settings are committed on Enter / focus-out / arrow steps
        # (keyboard tracking is off), never on each keystroke.
        for name, spin in (
            ("beta", self.betaSpin),
            ("lr", self.lrSpin),
            ("warmup_epochs", self.warmupEpochsSpin),
            ("free_bits", self.freeBitsSpin),
        ):
            spin.valueChanged.connect(lambda _v, n=name: self._commit_live(n))
            spin.editingFinished.connect(lambda n=name: self._commit_live(n))
        self.warmupCombo.activated.connect(lambda _i: self._commit_live("warmup"))
        self.warmupCombo.currentIndexChanged.connect(self._update_dependent_widgets)
        return group

    def _build_buttons(self) -> QtWidgets.QGridLayout:
        self.trainButton = QtWidgets.QPushButton("Train")
        self.trainButton.setObjectName("trainButton")
        self.trainButton.setToolTip("Start training with these settings (or continue training the current model)")
        self.pauseButton = QtWidgets.QPushButton("Pause")
        self.pauseButton.setObjectName("pauseButton")
        self.pauseButton.setToolTip("Pause or resume training between batches")
        self.stopButton = QtWidgets.QPushButton("Stop")
        self.stopButton.setObjectName("stopButton")
        self.stopButton.setToolTip("Stop training and keep the model as it is now")
        self.resetButton = QtWidgets.QPushButton("Reset")
        self.resetButton.setObjectName("resetButton")
        self.resetButton.setToolTip("Forget the model and start fresh (unlocks the dataset and model settings)")

        self.trainButton.clicked.connect(self._on_train_clicked)
        self.pauseButton.clicked.connect(self.pauseToggled)
        self.stopButton.clicked.connect(self._on_stop_clicked)
        self.resetButton.clicked.connect(self.resetRequested)

        grid = QtWidgets.QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.trainButton, 0, 0)
        grid.addWidget(self.pauseButton, 0, 1)
        grid.addWidget(self.stopButton, 1, 0)
        grid.addWidget(self.resetButton, 1, 1)
        return grid

    def _build_progress(self) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.progressBar = QtWidgets.QProgressBar()
        self.progressBar.setObjectName("progressBar")
        self.progressBar.setRange(0, self.PROGRESS_STEPS)
        self.progressBar.setValue(0)
        self.progressBar.setTextVisible(False)
        self.progressLabel = QtWidgets.QLabel("Not trained yet")
        self.progressLabel.setObjectName("progressLabel")
        self.progressLabel.setWordWrap(True)
        self.progressLabel.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.progressBar)
        layout.addWidget(self.progressLabel)
        return box

    def _install_wheel_guard(self) -> None:
        for widget in self.findChildren(QtWidgets.QAbstractSpinBox) + self.findChildren(QtWidgets.QComboBox):
            widget.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
            widget.installEventFilter(self)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802 (Qt override)
        # A wheel over an unfocused field scrolls the surrounding scroll area
        # instead of silently changing a setting.
        if event.type() == QtCore.QEvent.Type.Wheel and isinstance(obj, QtWidgets.QWidget) and not obj.hasFocus():
            event.ignore()
            return True
        return super().eventFilter(obj, event)

    # -------------------------------------------------------------- behaviour

    def _on_dataset_index(self, _index: int) -> None:
        self._update_dependent_widgets()
        self._reload_timer.stop()  # the new choice loads with the settings shown
        if not self._suppress:
            self.datasetChanged.emit(self.current_dataset_key())

    def _on_shapes_count(self, _value: int) -> None:
        if self.current_dataset_key() == "shapes":
            self._schedule_reload()

    def _schedule_reload(self, *_args: Any) -> None:
        """The user changed a setting of the data: load the dataset shown again once the values rest."""
        if self._suppress or self.signalsBlocked() or not self.current_dataset_key():
            return
        self._reload_timer.start()

    def _emit_reload(self) -> None:
        key = self.current_dataset_key()
        if key and not self._suppress:
            self.datasetChanged.emit(key)

    def flush_dataset_change(self) -> None:
        """Ask for the reload a recent change of a data setting is waiting for, now rather than later."""
        if self._reload_timer.isActive():
            self._reload_timer.stop()
            self._emit_reload()

    def _on_train_clicked(self) -> None:
        # The data the user just set up loads first; the owner trains once it is there.
        self.flush_dataset_change()
        self.trainRequested.emit()

    def _on_stop_clicked(self) -> None:
        self._reload_timer.stop()  # Stop drops what would load as well as what loads
        self.stopRequested.emit()

    def _on_arch_changed(self, _index: int) -> None:
        arch = self.archCombo.currentData()
        other = "mlp" if arch == "conv" else "conv"
        # Swap in sensible defaults only if the user has not typed their own.
        if not self._suppress and self.hiddenEdit.text().replace(" ", "") == DEFAULT_HIDDEN[other]:
            self.hiddenEdit.setText(DEFAULT_HIDDEN[arch])
        self._update_hidden_feedback()
        self._update_precision()

    def _update_hidden_feedback(self, *_args: Any) -> None:
        valid = self.hidden_valid()
        self.hiddenEdit.setStyleSheet("" if valid else _INVALID_STYLE)
        if valid:
            tip = self._hidden_tip
        elif self.archCombo.currentData() == "conv" and not self.hiddenEdit.text().strip():
            tip = "The convolutional architecture needs at least one channel count, e.g. 32,64"
        else:
            tip = "Enter positive whole numbers separated by commas, e.g. 512,256"
        self._tips[self.hiddenEdit] = tip
        self.hiddenEdit.setToolTip(f"{tip}\n\n{LOCKED_TIP}" if self._locked else tip)
        self._update_train_button()

    def _update_dependent_widgets(self, *_args: Any) -> None:
        self.shapesCountSpin.setEnabled(self.current_dataset_key() == "shapes")
        gaussian = self.likelihoodCombo.currentData() == "gaussian"
        self.sigmaSpin.setEnabled(gaussian)
        self.learnSigmaCheck.setEnabled(gaussian)
        self.warmupEpochsSpin.setEnabled(self.warmupCombo.currentData() != "none")

    def _precision_usable(self) -> bool:
        """bf16 applies: a convolutional model on a GPU."""
        return self.archCombo.currentData() == "conv" and str(self.deviceCombo.currentData()).startswith("cuda")

    def _update_precision(self, *_args: Any) -> None:
        """Offer bf16 only for a convolutional model on a GPU, and neither choice once a model exists."""
        usable = self._precision_usable()
        if not usable:
            self._select(self.precisionCombo, "fp32")
        new_model = self._state in ("idle", "loading")
        self.deviceCombo.setEnabled(new_model)
        self.precisionCombo.setEnabled(usable and new_model)
        tip = PRECISION_TIP if usable else f"{PRECISION_TIP}\n\n{PRECISION_NEEDS}"
        self.precisionCombo.setToolTip(tip)
        self.precisionLabel.setToolTip(tip)

    def _update_train_button(self) -> None:
        self.trainButton.setEnabled(self._state in ("idle", "loading", "trained") and self.hidden_valid())

    def _live_values(self) -> dict[str, Any]:
        return {
            "beta": float(self.betaSpin.value()),
            "lr": float(self.lrSpin.value()),
            "warmup": str(self.warmupCombo.currentData()),
            "warmup_epochs": int(self.warmupEpochsSpin.value()),
            "free_bits": float(self.freeBitsSpin.value()),
        }

    def _commit_live(self, name: str) -> None:
        value = self._live_values()[name]
        if self._committed.get(name) == value:
            return
        self._committed[name] = value
        if not self._suppress:
            self.liveSettingChanged.emit(name, value)

    def _on_lr_clamped(self, typed: float, bound: float) -> None:
        where = "above the maximum" if typed > bound else "below the minimum"
        self.notice.emit("warning", f"Learning rate {plain_number(typed)} is {where}, {plain_number(bound)}: "
                                    f"set to {plain_number(bound)}.")

    def _ask_folder(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a folder of images", self._last_dir)
        if path:
            self._last_dir = path
            self.openPathRequested.emit(path)

    def _ask_file(self) -> None:
        path, _filter = QtWidgets.QFileDialog.getOpenFileName(self, "Open an image array file", self._last_dir, FILE_FILTER)
        if path:
            self._last_dir = os.path.dirname(path)
            self.openPathRequested.emit(path)

    # -------------------------------------------------------------------- API

    def current_dataset_key(self) -> str:
        key = self.datasetCombo.currentData()
        return "" if key is None else str(key)

    def add_dataset_entry(self, label: str, key: str) -> None:
        """Add a user dataset (key = its path) if new, and select it."""
        index = self.datasetCombo.findData(key)
        if index < 0:
            self.datasetCombo.addItem(label, key)
            index = self.datasetCombo.count() - 1
            self.datasetCombo.setItemData(index, key, QtCore.Qt.ItemDataRole.ToolTipRole)
        self.datasetCombo.setCurrentIndex(index)

    def hidden_valid(self) -> bool:
        text = self.hiddenEdit.text()
        allow_empty = self.archCombo.currentData() != "conv"
        return HiddenSizesValidator.check(text, allow_empty) == QtGui.QValidator.State.Acceptable

    def dataset_settings(self) -> dict[str, Any]:
        size = int(self.sizeSpin.value())
        return {
            "source": self.current_dataset_key(),
            "size": size if size > 0 else None,
            "binarize": str(self.binarizeCombo.currentData()),
            "n": int(self.shapesCountSpin.value()),
        }

    def model_settings(self) -> dict[str, Any]:
        """The model settings shown; raises ValueError when the hidden sizes do not parse."""
        return {
            "latent_dim": int(self.latentDimSpin.value()),
            "architecture": str(self.archCombo.currentData()),
            "hidden_dims": self._parse_hidden(self.hiddenEdit.text()),
            "likelihood": str(self.likelihoodCombo.currentData()),
            "sigma": float(self.sigmaSpin.value()),
            "learn_sigma": bool(self.learnSigmaCheck.isChecked()),
        }

    def train_settings(self) -> dict[str, Any]:
        """The training settings shown; ``device`` is "auto" (CUDA when present) until ``set_devices`` was called."""
        return {
            "epochs": int(self.epochsSpin.value()),
            "batch_size": int(self.batchSizeSpin.value()),
            **self._live_values(),
            "device": self.device_key(),
            "precision": str(self.precisionCombo.currentData()) if self._precision_usable() else "fp32",
        }

    def device_key(self) -> str:
        """"cpu" or "cuda:N" as chosen; "auto" while the GPUs there are have not been told."""
        return "auto" if self._devices is None else str(self.deviceCombo.currentData())

    def set_devices(self, names: Sequence[str]) -> None:
        """The names of the CUDA GPUs there are, "cuda:0" first (empty: none).

        With at least one, the Device choice (the CPU and each GPU; the first
        GPU selected unless another device was chosen or applied) and the
        Precision choice are shown; without, both stay hidden and training
        runs on the CPU in float32.
        """
        wanted, self._wanted = self._wanted, {}
        keep = wanted.get("device") or (str(self.deviceCombo.currentData()) if self._devices else None)
        precision = wanted.get("precision") or str(self.precisionCombo.currentData())
        self._devices = [str(n) for n in names]
        combo = self.deviceCombo
        combo.blockSignals(True)
        try:
            combo.clear()
            combo.addItem("CPU", "cpu")
            for i, name in enumerate(self._devices):
                combo.addItem(f"GPU {i}: {name}", f"cuda:{i}")
                combo.setItemData(i + 1, f"cuda:{i}: {name}", QtCore.Qt.ItemDataRole.ToolTipRole)
            index = combo.findData(keep) if keep else -1
            combo.setCurrentIndex(index if index >= 0 else (1 if self._devices else 0))
        finally:
            combo.blockSignals(False)
        shown = bool(self._devices)
        self._training_form.setRowVisible(self.deviceCombo, shown)
        self._training_form.setRowVisible(self.precisionCombo, shown)
        self._select(self.precisionCombo, precision)
        self._update_precision()

    def devices(self) -> list[str] | None:
        """The GPUs' names as last told (None: not told yet)."""
        return None if self._devices is None else list(self._devices)

    @staticmethod
    def _select(combo: QtWidgets.QComboBox, key: Any) -> None:
        index = combo.findData(key)
        if index >= 0:
            combo.setCurrentIndex(index)

    def apply_settings(
        self,
        model: dict[str, Any] | None = None,
        train: dict[str, Any] | None = None,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        """Fill the widgets from settings dicts (e.g. a loaded checkpoint).

        Unknown keys are ignored and values are clamped to the widgets'
        ranges.  No panel signal (liveSettingChanged, datasetChanged) is
        emitted: the caller already knows what it applied.
        """
        self._suppress = True
        self._reload_timer.stop()  # the applied settings replace a change still waiting to load
        try:
            if dataset:
                source = dataset.get("source")
                if source:
                    if self.datasetCombo.findData(source) < 0:
                        self.add_dataset_entry(os.path.basename(str(source).rstrip("/\\")) or str(source), str(source))
                    self._select(self.datasetCombo, source)
                if "size" in dataset:
                    self.sizeSpin.setValue(int(dataset["size"] or 0))
                if "binarize" in dataset:
                    self._select(self.binarizeCombo, dataset["binarize"])
                if dataset.get("n") is not None:
                    self.shapesCountSpin.setValue(int(dataset["n"]))
            if model:
                if "architecture" in model:
                    self._select(self.archCombo, model["architecture"])
                if "latent_dim" in model:
                    self.latentDimSpin.setValue(int(model["latent_dim"]))
                if "hidden_dims" in model:
                    self.hiddenEdit.setText(",".join(str(int(h)) for h in model["hidden_dims"]))
                if "likelihood" in model:
                    self._select(self.likelihoodCombo, model["likelihood"])
                if "sigma" in model:
                    self.sigmaSpin.setValue(float(model["sigma"]))
                if "learn_sigma" in model:
                    self.learnSigmaCheck.setChecked(bool(model["learn_sigma"]))
            if train:
                if "epochs" in train:
                    self.epochsSpin.setValue(int(train["epochs"]))
                if "batch_size" in train:
                    self.batchSizeSpin.setValue(int(train["batch_size"]))
                if "lr" in train:
                    self.lrSpin.setValue(float(train["lr"]))
                if "beta" in train:
                    self.betaSpin.setValue(float(train["beta"]))
                if "warmup" in train:
                    self._select(self.warmupCombo, train["warmup"])
                if "warmup_epochs" in train:
                    self.warmupEpochsSpin.setValue(int(train["warmup_epochs"]))
                if "free_bits" in train:
                    self.freeBitsSpin.setValue(float(train["free_bits"]))
                if train.get("device"):
                    self._apply_device(str(train["device"]))
                if "precision" in train:
                    self._select(self.precisionCombo, train["precision"])
                    if self._devices is None:
                        self._wanted["precision"] = str(train["precision"])
        finally:
            self._committed = self._live_values()
            self._suppress = False
        self._update_dependent_widgets()
        self._update_hidden_feedback()
        self._update_precision()

    def _apply_device(self, device: str) -> None:
        """Select ``device`` ("cuda" is the first GPU; "auto" leaves the choice as it is)."""
        if device == "auto":
            return
        key = "cuda:0" if device == "cuda" else device
        if self._devices is None:
            self._wanted["device"] = key
        else:
            self._select(self.deviceCombo, key)

    def state(self) -> str:
        return self._state

    def set_state(self, state: str) -> None:
        """Enable what makes sense in ``state``: idle, loading, training, paused, trained or busy.

        idle: no model, everything editable.  loading: a dataset loads and no
        model exists: everything stays editable and Train can be pressed (the
        owner starts training when the data is there); Stop drops the load.
        training/paused: only the live settings (beta, lr, warm-up, free bits)
        stay editable.  trained: a model exists, so dataset and model
        settings are locked until Reset (their tooltips say so).  busy:
        everything disabled but Stop, which drops what is loading.
        """
        if state not in STATES:
            raise ValueError(f"unknown panel state {state!r}; expected one of {STATES}")
        was, self._state = self._state, state
        running = state in ("training", "paused")
        has_model = state in ("training", "paused", "trained")
        busy = state == "busy"
        loading = state == "loading"

        self.datasetGroup.setEnabled(state in ("idle", "loading"))
        if state not in ("idle", "loading"):
            self._reload_timer.stop()  # the data settings are locked now: nothing of theirs loads
        self.modelGroup.setEnabled(state in ("idle", "loading"))
        self._set_locked(has_model)
        self.trainingGroup.setEnabled(not busy)
        self.epochsSpin.setEnabled(not running)
        self.batchSizeSpin.setEnabled(not running)
        self._update_precision()

        self.trainButton.setText("Continue training" if has_model else "Train")
        self._update_train_button()
        self.pauseButton.setEnabled(running)
        self.pauseButton.setText("Resume" if state == "paused" else "Pause")
        self.stopButton.setEnabled(running or busy or loading)
        self.stopButton.setToolTip("Stop loading" if busy or loading else "Stop training and keep the model as it is now")
        self.resetButton.setEnabled(state == "trained")
        if state == "idle" and was != "loading":
            self.reset_progress()

    def _set_locked(self, locked: bool) -> None:
        """Say in the tooltips of the dataset and model settings why they are greyed out (or no longer)."""
        if locked == self._locked:
            return
        self._locked = locked
        for group in (self.datasetGroup, self.modelGroup):
            group.setToolTip(LOCKED_TIP if locked else "")
            for w in group.findChildren(QtWidgets.QWidget):
                tip = self._tips.setdefault(w, w.toolTip())
                if locked:
                    w.setToolTip(f"{tip}\n\n{LOCKED_TIP}" if tip else LOCKED_TIP)
                else:
                    w.setToolTip(tip)

    def locked_tip(self) -> str:
        """The explanation the greyed-out settings give (empty while they are editable)."""
        return self.datasetGroup.toolTip()

    def set_progress(
        self,
        epoch: int,
        n_epochs: int,
        batch: int,
        n_batches: int,
        samples_per_s: float | None = None,
        eta_s: float | None = None,
    ) -> None:
        """Show progress; ``epoch`` counts from 1, ``batch`` is the batches done in it."""
        total = max(1, int(n_epochs)) * max(1, int(n_batches))
        done = max(0, int(epoch) - 1) * max(1, int(n_batches)) + max(0, int(batch))
        self.progressBar.setValue(round(self.PROGRESS_STEPS * min(1.0, done / total)))
        self.progressLabel.setText(format_progress(epoch, n_epochs, batch, n_batches, samples_per_s, eta_s))

    def reset_progress(self, text: str = "Not trained yet") -> None:
        self.progressBar.setValue(0)
        self.progressLabel.setText(text)
