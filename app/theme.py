"""Light and dark palettes (Fusion style), or the platform's own."""

from __future__ import annotations

from PySide6 import QtGui, QtWidgets

_original: dict = {}


def _dark() -> QtGui.QPalette:
    p = QtGui.QPalette()
    C = QtGui.QColor
    R = QtGui.QPalette.ColorRole
    p.setColor(R.Window, C(37, 39, 43))
    p.setColor(R.WindowText, C(230, 230, 230))
    p.setColor(R.Base, C(27, 29, 32))
    p.setColor(R.AlternateBase, C(45, 47, 52))
    p.setColor(R.ToolTipBase, C(50, 52, 58))
    p.setColor(R.ToolTipText, C(235, 235, 235))
    p.setColor(R.Text, C(230, 230, 230))
    p.setColor(R.Button, C(48, 50, 56))
    p.setColor(R.ButtonText, C(230, 230, 230))
    p.setColor(R.BrightText, C(255, 90, 90))
    p.setColor(R.Link, C(110, 170, 255))
    p.setColor(R.Highlight, C(64, 128, 220))
    p.setColor(R.HighlightedText, C(255, 255, 255))
    p.setColor(R.PlaceholderText, C(140, 140, 140))
    for role in (R.WindowText, R.Text, R.ButtonText):
        p.setColor(QtGui.QPalette.Disabled, role, C(120, 120, 120))
    return p


def _light() -> QtGui.QPalette:
    p = QtGui.QPalette()
    C = QtGui.QColor
    R = QtGui.QPalette.ColorRole
    p.setColor(R.Window, C(242, 242, 244))
    p.setColor(R.WindowText, C(25, 25, 28))
    p.setColor(R.Base, C(255, 255, 255))
    p.setColor(R.AlternateBase, C(235, 236, 240))
    p.setColor(R.ToolTipBase, C(255, 255, 225))
    p.setColor(R.ToolTipText, C(20, 20, 20))
    p.setColor(R.Text, C(25, 25, 28))
    p.setColor(R.Button, C(232, 233, 237))
    p.setColor(R.ButtonText, C(25, 25, 28))
    p.setColor(R.Link, C(20, 90, 200))
    p.setColor(R.Highlight, C(48, 110, 210))
    p.setColor(R.HighlightedText, C(255, 255, 255))
    p.setColor(R.PlaceholderText, C(130, 130, 130))
    for role in (R.WindowText, R.Text, R.ButtonText):
        p.setColor(QtGui.QPalette.Disabled, role, C(150, 150, 150))
    return p


def apply(app: QtWidgets.QApplication, key: str) -> None:
    """"light", "dark" or "system" (whatever the platform gave us at start)."""
    if not _original:
        _original["style"] = app.style().name()
        _original["palette"] = QtGui.QPalette(app.palette())
    if key == "dark":
        app.setStyle("Fusion")
        app.setPalette(_dark())
    elif key == "light":
        app.setStyle("Fusion")
        app.setPalette(_light())
    else:
        app.setStyle(_original["style"])
        app.setPalette(_original["palette"])
