"""Light and dark palettes (Fusion style) with their style sheets, or the platform's own look.

The palettes fill the disabled colour group too: a disabled field takes the
window's colour instead of the field colour, its text and its slider groove
turn grey, so it reads as disabled at a glance.  The style sheets
(``resources/<theme>.qss``) hold what a palette cannot say: the check box and
radio indicators of the dark theme (Fusion outlines them with a darker shade of
the window colour, invisible on a dark window) and the colour of the ELBO
panel's footnote, a disabled label that the disabled grey made too pale to read.
"""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtGui, QtWidgets

__all__ = ["apply", "resource_dir", "style_sheet", "THEMES"]

THEMES = ("system", "light", "dark")

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
    D = QtGui.QPalette.ColorGroup.Disabled
    for role in (R.WindowText, R.Text, R.ButtonText):
        p.setColor(D, role, C(112, 114, 119))
    p.setColor(D, R.Base, C(37, 39, 43))  # the window's colour: the field sinks into the panel
    p.setColor(D, R.Button, C(41, 43, 47))
    p.setColor(D, R.Highlight, C(78, 81, 88))
    p.setColor(D, R.HighlightedText, C(160, 160, 160))
    p.setColor(D, R.PlaceholderText, C(90, 92, 96))
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
    D = QtGui.QPalette.ColorGroup.Disabled
    for role in (R.WindowText, R.Text, R.ButtonText):
        p.setColor(D, role, C(150, 150, 150))
    p.setColor(D, R.Base, C(242, 242, 244))
    p.setColor(D, R.Button, C(238, 238, 241))
    p.setColor(D, R.Highlight, C(190, 192, 198))
    p.setColor(D, R.HighlightedText, C(250, 250, 250))
    return p


def resource_dir() -> Path | None:
    """The folder of the ``resources`` package (style sheets, icons), or None if it is missing.

    ``resources`` is a namespace package; an editable install adds a path hook
    to its search path that ``importlib.resources.files`` cannot read, so the
    first entry that is a real folder is taken.
    """
    try:
        import resources as package
    except ImportError:
        return None
    for entry in getattr(package, "__path__", ()):
        folder = Path(entry)
        if folder.is_dir():
            return folder
    return None


def style_sheet(key: str) -> str:
    """The application style sheet of theme ``key`` ("system", "light" or "dark"); "" if it is missing."""
    if key not in THEMES:
        key = "system"
    folder = resource_dir()
    if folder is None:
        return ""
    try:
        text = (folder / f"{key}.qss").read_text(encoding="utf-8")
    except OSError:
        return ""
    return text.replace("@ICONS@", (folder / "icons").as_posix())


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
        key = "system"
        app.setStyle(_original["style"])
        app.setPalette(_original["palette"])
    app.setStyleSheet(style_sheet(key))
