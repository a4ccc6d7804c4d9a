"""``vae-explorer --screenshot out.png``: train headless, show a decoded point, save the window."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6 import QtCore, QtWidgets

from .session import TRAINED

if TYPE_CHECKING:
    from .main_window import MainWindow


class ScreenshotDriver(QtCore.QObject):
    """Loads a dataset and trains (or opens a checkpoint), poses the map, saves the window as a PNG, quits."""

    def __init__(self, win: "MainWindow", path: str, dataset: str = "digits", epochs: int = 3, checkpoint: str | None = None,
                 timeout_s: float = 600.0):
        super().__init__(win)
        self.win = win
        self.path = path
        self.dataset = dataset
        self.epochs = epochs
        self.checkpoint = checkpoint
        self.exit_code = 1
        self._done = False
        self._timeout = QtCore.QTimer(self)
        self._timeout.setSingleShot(True)
        self._timeout.timeout.connect(self._on_timeout)
        self._timeout_ms = int(timeout_s * 1000)

    def start(self) -> None:
        s = self.win.session
        s.stateChanged.connect(self._on_state)
        s.message.connect(self._on_message)
        self._timeout.start(self._timeout_ms)
        if self.checkpoint:
            self.win.open_path(self.checkpoint)
        else:
            self.win.panel.apply_settings(train={"epochs": self.epochs})
            s.datasetLoaded.connect(self._on_dataset, QtCore.Qt.SingleShotConnection)
            self.win.load_initial_dataset(self.dataset)

    @QtCore.Slot(object)
    def _on_dataset(self, _ds) -> None:
        self.win.start_training()

    @QtCore.Slot(str, str)
    def _on_message(self, level: str, text: str) -> None:
        if level == "error":
            print(f"error: {text}", flush=True)

    @QtCore.Slot(str)
    def _on_state(self, state: str) -> None:
        if state == TRAINED and not self._done and self.win.session.latents is not None:
            self._done = True
            QtCore.QTimer.singleShot(700, self._pose)

    @QtCore.Slot()
    def _pose(self) -> None:
        s = self.win.session
        if s.xy is None:
            QtCore.QTimer.singleShot(300, self._pose)
            return
        xy = s.xy
        # Select a typical example and decode a point between two class centres.
        centre = np.median(xy, axis=0)
        i = int(np.argmin(((xy - centre) ** 2).sum(1)))
        s.select_example(i)
        if s.labels is not None and len(np.unique(s.labels)) > 1:
            labs = np.unique(s.labels)
            a = xy[s.labels == labs[0]].mean(0)
            b = xy[s.labels == labs[len(labs) // 2]].mean(0)
            p = 0.5 * (a + b)
        else:
            p = np.percentile(xy, 70, axis=0)
        s.decode_at(float(p[0]), float(p[1]))
        QtCore.QTimer.singleShot(900, self._grab)

    @QtCore.Slot()
    def _grab(self) -> None:
        self.win.loss_plot.flush()
        QtWidgets.QApplication.processEvents()
        pix = self.win.grab()
        ok = pix.save(self.path, "PNG")
        print(f"{'saved' if ok else 'could not save'} {self.path}", flush=True)
        self.exit_code = 0 if ok else 1
        self.win.close()
        QtWidgets.QApplication.quit()

    @QtCore.Slot()
    def _on_timeout(self) -> None:
        print("error: timed out before the window was ready", flush=True)
        self.exit_code = 1
        self.win.close()
        QtWidgets.QApplication.quit()
