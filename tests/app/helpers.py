"""Real mouse events for the latent map, shared by the program's tests."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets


def _send(widget: QtWidgets.QWidget, etype, pos: QtCore.QPointF, button, buttons) -> None:
    gpos = QtCore.QPointF(widget.mapToGlobal(pos.toPoint()))
    ev = QtGui.QMouseEvent(etype, pos, gpos, button, buttons, QtCore.Qt.NoModifier)
    QtWidgets.QApplication.sendEvent(widget, ev)


def press(view, x: float, y: float) -> None:
    vp = view.viewport()
    _send(vp, QtCore.QEvent.MouseButtonPress, view.map_from_data(x, y), QtCore.Qt.LeftButton, QtCore.Qt.LeftButton)


def move(view, x: float, y: float, held: bool = True) -> None:
    vp = view.viewport()
    buttons = QtCore.Qt.LeftButton if held else QtCore.Qt.NoButton
    _send(vp, QtCore.QEvent.MouseMove, view.map_from_data(x, y), QtCore.Qt.NoButton, buttons)


def release(view, x: float, y: float) -> None:
    vp = view.viewport()
    _send(vp, QtCore.QEvent.MouseButtonRelease, view.map_from_data(x, y), QtCore.Qt.LeftButton, QtCore.Qt.NoButton)
