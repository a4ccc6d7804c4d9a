"""The Runs panel (``runsPanel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6 import QtCore

if TYPE_CHECKING:
    from ..main_window import MainWindow


class RunsPanelTool(QtCore.QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.w = window

    def close(self) -> bool:
        return True


def install(window: "MainWindow") -> RunsPanelTool:
    return RunsPanelTool(window)
