"""How the user left the map and the curves comes back at the next start; the curves can run on wall time."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from app import main_window as mw
from app.main_window import MainWindow
from app.session import TRAINED
from vae_core.checkpoint import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def ini(tmp_path, monkeypatch):
    """The windows' settings live in a file of the test's own."""
    path = str(tmp_path / "settings.ini")
    monkeypatch.setattr(mw, "settings", lambda: QtCore.QSettings(path, QtCore.QSettings.IniFormat))
    return path


def make_window(qtbot) -> MainWindow:
    w = MainWindow(restore=True)
    qtbot.addWidget(w)
    w.resize(1100, 750)
    w.show()
    qtbot.waitExposed(w)
    return w


def train(qtbot, w, epochs):
    w.findChild(QtWidgets.QSpinBox, "epochsSpin").setValue(epochs)
    qtbot.mouseClick(w.findChild(QtWidgets.QPushButton, "trainButton"), QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and not w.session.running and w.session.xy is not None,
                    timeout=120000)


def test_map_and_curve_options_are_kept_for_the_next_start(qtbot, ini):
    w = make_window(qtbot)
    view, plot = w.latent_view, w.loss_plot
    defaults = view.view_options()
    view.set_point_size(9)
    view.set_point_opacity(0.5)
    view.set_legend_corner("bottom-left")
    view.set_legend_visible(False)
    plot.set_smoothing(0.75)
    plot.set_x_axis("wall")
    w.close()

    w2 = make_window(qtbot)
    assert w2.latent_view.view_options() == {"legend_visible": False, "legend_corner": "bottom-left",
                                             "point_size": 9.0, "point_opacity": 0.5} != defaults
    assert w2.loss_plot.smoothing() == pytest.approx(0.75)
    assert w2.findChild(QtWidgets.QSlider, "smoothingSlider").value() > 0
    # Wall time is wanted; the curves show it once the points carry times (after the first batches).
    assert w2.loss_plot.x_axis() == "step" and not w2.loss_plot.wall_time_available()
    with qtbot.waitSignal(w2.session.datasetLoaded, timeout=60000):
        w2.load_initial_dataset("digits")
    w2.findChild(QtWidgets.QLineEdit, "hiddenEdit").setText("64")
    train(qtbot, w2, 1)
    assert w2.loss_plot.wall_time_available() and w2.loss_plot.x_axis() == "wall"
    assert w2.findChild(QtWidgets.QComboBox, "xAxisCombo").currentData() == "wall"
    w2.close()


def test_wall_time_goes_with_the_steps_into_checkpoints_and_on_across_a_resume(qtbot, ini, tmp_path):
    w = make_window(qtbot)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    w.findChild(QtWidgets.QLineEdit, "hiddenEdit").setText("64")
    train(qtbot, w, 2)
    history = w.session.history
    wall = history.wall_times()
    assert len(wall) == len(history) and np.all(np.isfinite(wall)) and np.all(np.diff(wall) >= 0) and wall[0] > 0
    assert w.loss_plot.wall_time_available()
    path = tmp_path / "run.ckpt"
    w.session.save_checkpoint(str(path))
    ck = load_checkpoint(path)
    np.testing.assert_allclose(ck.history.wall_times(), wall, atol=1e-3)
    assert ck.history == history, "the steps are the same; wall times are not part of equality"

    # Opened again, the curves have their times at once; trained on, the times go on from the last one.
    w.session.reset()
    assert not w.loss_plot.wall_time_available()
    with qtbot.waitSignal(w.session.modelLoaded, timeout=60000):
        w.open_path(str(path))
    assert w.loss_plot.wall_time_available() and w.loss_plot.point_count() == len(wall)
    train(qtbot, w, 1)
    more = w.session.history.wall_times()
    assert len(more) > len(wall) and np.all(np.diff(more) >= 0) and more[len(wall)] > wall[-1]
    w.close()
