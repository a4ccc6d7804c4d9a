"""The window on a laptop's screen: every control reachable, no text cut off, at 1024 x 640 and 900 x 600."""

from __future__ import annotations

import pytest
from PySide6 import QtCore, QtWidgets

from app.main_window import MIN_WINDOW_SIZE, MainWindow
from app.session import TRAINED

from helpers import press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZES = [(900, 600), (1024, 640)]


def make_window(qtbot, size) -> MainWindow:
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(50)
    return w


def inside_window(w: MainWindow, widget: QtWidgets.QWidget) -> bool:
    """The whole of ``widget`` is on screen in the window: not scrolled away, not covered by its parents' edges."""
    if not widget.isVisible() or widget.visibleRegion().isEmpty():
        return False
    if widget.visibleRegion().boundingRect().size() != widget.size():
        return False
    top_left = widget.mapTo(w, QtCore.QPoint(0, 0))
    return QtCore.QRect(top_left, widget.size()) == QtCore.QRect(top_left, widget.size()).intersected(w.rect())


def text_fits(button: QtWidgets.QAbstractButton) -> bool:
    return button.fontMetrics().horizontalAdvance(button.text()) + 8 <= button.width()


@pytest.mark.parametrize("size", SIZES)
def test_every_training_button_can_be_reached_and_the_window_fits(qtbot, size):
    w = make_window(qtbot, size)
    assert w.width() <= size[0] and w.height() <= size[1], "no larger than the screen asked for"
    assert MIN_WINDOW_SIZE[0] <= size[0] and MIN_WINDOW_SIZE[1] <= size[1]
    scroll = w.panel_scroll
    buttons = w.panel.findChildren(QtWidgets.QPushButton)
    assert {"trainButton", "pauseButton", "stopButton", "resetButton"} <= {b.objectName() for b in buttons}
    if w.panel.height() > scroll.viewport().height():
        assert scroll.verticalScrollBar().isVisible(), "a panel taller than its dock shows a scroll bar"
    for b in buttons:
        scroll.ensureWidgetVisible(b, 4, 4)
        QtWidgets.QApplication.processEvents()
        assert inside_window(w, b), b.objectName()
        assert text_fits(b), f"{b.objectName()}: {b.text()!r} is cut off at {b.width()} px"
    # The map keeps a usable size and its toolbar is whole.
    assert w.latent_view.width() >= 300 and w.latent_view.height() >= 200
    assert inside_window(w, w.map_toolbar.combo)
    w.session.shutdown(2000)


@pytest.mark.parametrize("size", SIZES)
def test_nothing_is_cut_off_after_training_and_a_click(qtbot, size):
    w = make_window(qtbot, size)
    with qtbot.waitSignal(w.session.datasetLoaded, timeout=60000):
        w.load_initial_dataset("digits")
    w.panel.latentDimSpin.setValue(8)
    w.panel.hiddenEdit.setText("64")
    w.panel.epochsSpin.setValue(1)
    qtbot.mouseClick(w.panel.trainButton, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.state == TRAINED and w.session.xy is not None and not w.session.running,
                    timeout=120000)
    qtbot.waitUntil(lambda: w.latent_view.point_count() == 1797, timeout=10000)
    x, y = w.session.xy[10]
    press(w.latent_view, x, y)
    release(w.latent_view, x, y)
    qtbot.waitUntil(lambda: w.decode_canvas.image() is not None and w.recon_pair.pair() is not None, timeout=5000)
    # The decoded code wraps instead of being cut: "z = (-0.73, +0.33, … 8 dims)".
    canvas = w.decode_canvas
    fm = canvas.fontMetrics()
    flags = int(QtCore.Qt.AlignmentFlag.AlignCenter | QtCore.Qt.TextFlag.TextWordWrap)
    need = fm.boundingRect(QtCore.QRect(0, 0, canvas.width() - 8, 10_000), flags, canvas.caption())
    assert need.width() <= canvas.width() - 8 and need.height() <= canvas._caption_height()
    # The pair's headings fit their columns ("Reconstruction", or a shorter word where it is narrow).
    pair = w.recon_pair
    half = (pair.width() - 16) / 2
    assert all(pair.fontMetrics().horizontalAdvance(h) <= half for h in pair.headings())
    # Every tool dock's tab shows its whole title.
    for name in ("traverseAction", "interpolateAction", "posteriorAction", "elboAction", "priorSamplesAction"):
        w.explore_tools.actions[name].trigger()
    QtWidgets.QApplication.processEvents()
    bars = [b for b in w.findChildren(QtWidgets.QTabBar) if b.parent() is w and b.isVisible()]
    assert bars
    for bar in bars:
        assert bar.elideMode() == QtCore.Qt.ElideNone
        for i in range(bar.count()):
            assert bar.tabRect(i).width() >= bar.fontMetrics().horizontalAdvance(bar.tabText(i)), bar.tabText(i)
    # The traversals' column headers never run together.
    grid = w.explore_tools.traverse_grid
    w.explore_tools.traverse_dock.raise_()
    qtbot.waitUntil(lambda: grid.grid_shape() == (8, 9), timeout=5000)
    grid.repaint()
    shown = grid.shown_column_labels()
    assert shown and shown[0] == 0
    widest = max(grid.fontMetrics().horizontalAdvance(t) for t in grid._col_labels)
    steps = {b - a for a, b in zip(shown, shown[1:])}
    assert len(steps) <= 1 and all(widest + 4 <= k * grid.column_pixels() for k in steps)
    # The UMAP progress text is short (its stage is in the tooltip).
    assert len(w.map_toolbar.progress.format()) <= 10
    w.session.shutdown(2000)
