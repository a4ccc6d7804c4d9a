"""A long run inside the program: memory, responsiveness and history after 300 epochs.

Offscreen, the program trains the built-in ``digits`` (1,797 images of 8x8,
1,617 for training) for 300 epochs with the training panel's default model
and settings (MLP 512,256, 2 latent dims, batch 64: 26 steps per epoch) while
a left-button drag runs on the latent map the whole time: a press, then a
real ``QMouseEvent`` MouseMove every 16 ms posted to the map's viewport from
another thread, along a slow curve over the middle of the map.  A recovery
autosave runs as in the program (every 10 epochs or 120 s), into a temporary
folder, as do the window settings.

``run()`` returns

* ``soak_rss_growth_pct``: resident memory (``/proc/self/statm``) when epoch
  300 arrives in the GUI thread, relative to when epoch 10 did, in percent
  (target <= 5: nothing may pile up per epoch, per batch or per mouse move);
  ``soak_rss_epoch10_mb`` and ``soak_rss_end_mb`` for context;
* ``soak_p99_start_ms`` / ``soak_p99_end_ms``: how late a precise 10 ms
  repeating QTimer fires (interval minus 10 ms, floored at 0), 99th
  percentile over the ticks of the first 20 and of the last 20 epochs: the
  window must stay as responsive at the end of a long run as at its start;
* ``soak_history_steps`` / ``soak_steps``: the per-step rows in the history of
  a checkpoint saved at the end, and the optimizer steps taken (equal: the
  history is complete); ``soak_history_complete`` is 1 when they are;
* ``soak_curve_points``: points drawn for the reconstruction curve
  (``LossPlot.curve_data("recon")``), which is decimated for drawing
  (at most about 4,000 however long the run);
* ``soak_moves_handled``: mouse moves the map received during the run.

``BENCH_QUICK=1`` trains 60 epochs (growth measured from epoch 10, the
windows are the first and last 10 epochs).
"""

from __future__ import annotations

import math
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from .bench_gui import MOVE_MS, TickRecorder, spin

TARGETS = {"soak_rss_growth_pct": ("<=", 5)}

EPOCHS = 300
WINDOW = 20  # epochs at each end for the lateness figures
RSS_FROM_EPOCH = 10


def _log(text: str) -> None:
    print(f"[bench_soak] {text}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    """Resident memory of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _p99(values: list[float]) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), 99)) if values else float("nan")


def run() -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    quick = os.environ.get("BENCH_QUICK") == "1"
    epochs = 60 if quick else EPOCHS
    window = 10 if quick else WINDOW
    results: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        os.environ["LATENT_EXPLORER_DATA_DIR"] = str(Path(tmp) / "data")
        from app.program import prepare_qt_environment

        prepare_qt_environment()
        from PySide6 import QtCore, QtGui, QtWidgets

        QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, tmp)
        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])

        from app.main_window import MainWindow
        from app.session import LOADING, TRAINED

        win = MainWindow(restore=False)
        win.resize(1360, 860)
        win.show()
        s = win.session
        try:
            win.load_initial_dataset("digits")
            if not spin(lambda: s.dataset is not None and s.state != LOADING, 120):
                raise RuntimeError("digits did not load")

            # --- recorders, all in the GUI thread
            rss: dict[int, int] = {}

            class Probe(QtCore.QObject):
                @QtCore.Slot(object)
                def on_epoch(self, ev) -> None:
                    if ev.epoch in (RSS_FROM_EPOCH, epochs):
                        rss[ev.epoch] = rss_bytes()

            probe = Probe()
            s.epochArrived.connect(probe.on_epoch)
            # Each tick's lateness with the epochs done when it fired.
            ticks = TickRecorder(tag=lambda: s.last_epoch.epoch if s.last_epoch is not None else 0)

            # --- a drag that lasts the whole run, in viewport pixels
            vp = win.latent_view.viewport()
            moves = [0]

            class MoveCounter(QtCore.QObject):
                def eventFilter(self, obj, ev):  # noqa: N802 - Qt's name
                    if ev.type() == QtCore.QEvent.MouseMove:
                        moves[0] += 1
                    return False

            counter = MoveCounter()
            vp.installEventFilter(counter)

            def mouse(etype, x, y, button, buttons):
                pos = QtCore.QPointF(x, y)
                gpos = QtCore.QPointF(vp.mapToGlobal(pos.toPoint()))
                return QtGui.QMouseEvent(etype, pos, gpos, button, buttons, QtCore.Qt.NoModifier)

            w, h = vp.width(), vp.height()
            left, none = QtCore.Qt.LeftButton, QtCore.Qt.NoButton
            stop_drag = threading.Event()

            def path(k: int) -> tuple[float, float]:
                t = k * MOVE_MS / 1000.0
                return (w * (0.5 + 0.3 * math.sin(0.7 * t)),
                        h * (0.5 + 0.3 * math.sin(0.9 * t + 0.5)))

            def poster() -> None:
                k, t_next = 1, time.perf_counter()
                while not stop_drag.is_set():
                    x, y = path(k)
                    QtCore.QCoreApplication.postEvent(vp, mouse(QtCore.QEvent.MouseMove, x, y, none, left))
                    k += 1
                    t_next += MOVE_MS / 1000.0
                    delay = t_next - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)

            win.panel.epochsSpin.setValue(epochs)
            t0 = time.perf_counter()
            win.panel.trainButton.click()
            if not spin(lambda: s.xy is not None, 120):
                raise RuntimeError("training did not start")
            x0, y0 = path(0)
            QtCore.QCoreApplication.postEvent(vp, mouse(QtCore.QEvent.MouseButtonPress, x0, y0, left, left))
            dragger = threading.Thread(target=poster, name="bench-soak-mouse", daemon=True)
            dragger.start()
            ticks.start()
            if not spin(lambda: s.state == TRAINED and not s.running, 3600, poll_ms=50):
                raise RuntimeError("training did not finish")
            ticks.stop()
            stop_drag.set()
            dragger.join()
            QtCore.QCoreApplication.postEvent(vp, mouse(QtCore.QEvent.MouseButtonRelease, *path(0), left, none))
            spin(lambda: False, 0.3)
            elapsed = time.perf_counter() - t0
            vp.removeEventFilter(counter)

            if RSS_FROM_EPOCH not in rss or epochs not in rss:
                raise RuntimeError(f"memory was not sampled at epochs {RSS_FROM_EPOCH} and {epochs}: {sorted(rss)}")
            results["soak_rss_epoch10_mb"] = rss[RSS_FROM_EPOCH] / 2**20
            results["soak_rss_end_mb"] = rss[epochs] / 2**20
            results["soak_rss_growth_pct"] = 100.0 * (rss[epochs] - rss[RSS_FROM_EPOCH]) / rss[RSS_FROM_EPOCH]
            tagged = list(zip(ticks.tags, ticks.late_ms))
            results["soak_p99_start_ms"] = _p99([v for e, v in tagged if e < window])
            results["soak_p99_end_ms"] = _p99([v for e, v in tagged if e >= epochs - window])
            results["soak_moves_handled"] = float(moves[0])

            ckpt_path = Path(tmp) / "soak.ckpt"
            s.save_checkpoint(str(ckpt_path))
            from vae_core.checkpoint import load_checkpoint

            ck = load_checkpoint(ckpt_path)
            steps = int(s.trainer.step)
            results["soak_steps"] = float(steps)
            results["soak_history_steps"] = float(len(ck.history))
            results["soak_history_complete"] = float(len(ck.history) == steps == ck.step)
            results["soak_curve_points"] = float(len(win.loss_plot.curve_data("recon")[0]))
            _log(f"{epochs} epochs, {steps} steps in {elapsed:.0f} s; {moves[0]} mouse moves; "
                 f"RSS {results['soak_rss_epoch10_mb']:.1f} -> {results['soak_rss_end_mb']:.1f} MB "
                 f"({results['soak_rss_growth_pct']:+.2f}%); tick p99 {results['soak_p99_start_ms']:.2f} -> "
                 f"{results['soak_p99_end_ms']:.2f} ms; curve points {results['soak_curve_points']:.0f}")
        finally:
            s.shutdown(5000)
            win.close()
            win.deleteLater()
            spin(lambda: False, 0.05)
            os.environ.pop("LATENT_EXPLORER_DATA_DIR", None)
    return results
