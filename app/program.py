"""The ``vae-explorer`` command, the program's one entry point.

``vae-explorer train|evaluate|export|compare ...`` runs the headless engine
(``vae_core.cli``) and imports no Qt; anything else opens the desktop
program: arguments, QApplication, the window, screenshot mode.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

#: Milliseconds after the window shows before UMAP is warmed up in the background.
WARMUP_DELAY_MS = 1500
#: First arguments that run the engine without a window.
HEADLESS = ("train", "evaluate", "export", "compare")

USAGE = """vae-explorer [PATH] [options]
       vae-explorer train|evaluate|export|compare ...   (headless; see vae-explorer train --help)"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vae-explorer", usage=USAGE,
                                description="Train a VAE live and walk through its latent space.")
    p.add_argument("path", nargs="?", help="a checkpoint (.ckpt) to open, or a dataset folder or file")
    p.add_argument("--dataset", default=None, help="built-in dataset to start with: mnist, digits or shapes (default mnist)")
    p.add_argument("--latent-dim", type=int, default=None, help="latent size to preset in the panel")
    p.add_argument("--epochs", type=int, default=None, help="epochs to preset in the panel")
    p.add_argument("--train", action="store_true", help="start training as soon as the data is loaded")
    p.add_argument("--theme", choices=("system", "light", "dark"), default=None)
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="train headless, render the whole window to this PNG and exit")
    p.add_argument("--size", default="1400x900", help="window size for --screenshot (WxH)")
    p.add_argument("--follow", metavar="DIR", default=None,
                   help="follow a run folder as it is written (vae-explorer train --run-dir DIR, here or on a shared drive)")
    return p.parse_args(argv)


def prepare_qt_environment() -> None:
    """Settings Qt reads once, so they must be made before the QApplication exists.

    Qt's raster engine hands every fill taller than about 96 rows to a helper
    thread pool and waits for it.  While training keeps the other cores busy
    those helpers start late, and each such paint then stalls the window for
    tens of milliseconds; painting on the GUI thread alone is faster for
    widgets of this size.  A value already in the environment wins.
    """
    os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")


def main(argv: list[str] | None = None) -> int:
    """Run ``vae-explorer`` with ``argv`` (default: the process's arguments); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in HEADLESS:
        from vae_core.cli import main as cli_main

        return cli_main(argv)
    return run_window(argv)


def run_window(argv: list[str]) -> int:
    """Open the desktop program with ``argv`` (no subcommand); returns the exit code."""
    t0 = time.perf_counter()
    args = parse_args(argv)
    if args.screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    prepare_qt_environment()
    from PySide6 import QtCore, QtWidgets

    QtCore.QCoreApplication.setOrganizationName("LatentExplorer")
    QtCore.QCoreApplication.setApplicationName("Latent Explorer")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    _set_icon(app)
    from .main_window import MainWindow, ask_about_unsaved_work, settings

    if not args.screenshot:
        from . import recovery

        recovery.use_user_data_dir()  # autosave while training; offer what a crash left behind
        ask_about_unsaved_work()  # Reset, Open, closing and Quit ask before unsaved training goes
    win = MainWindow(restore=not args.screenshot)
    win.set_theme(args.theme or (str(settings().value("theme", "system")) if not args.screenshot else "light"))
    if args.latent_dim is not None or args.epochs is not None:
        train = {"epochs": args.epochs} if args.epochs is not None else None
        model = {"latent_dim": args.latent_dim} if args.latent_dim is not None else None
        win.panel.apply_settings(model=model, train=train)

    if args.screenshot:
        from .screenshot import ScreenshotDriver

        w, h = (int(v) for v in args.size.lower().split("x"))
        win.resize(w, h)
        driver = ScreenshotDriver(win, args.screenshot, dataset=args.dataset or "mnist",
                                  epochs=args.epochs or 3, checkpoint=args.path)
        win.show()
        driver.start()
        app.exec()
        return driver.exit_code

    if os.environ.get("LATENT_EXPLORER_REPORT_LAUNCH"):
        # Used by the launch benchmark: say when the window's first paint is done.
        reporter = _first_paint_reporter(t0, app)
        win.installEventFilter(reporter)
    win.show()

    if args.follow:
        folder = args.follow
        _after_first_paint(win, lambda: win.follow_run(folder))
    elif args.path:
        path = args.path
        _after_first_paint(win, lambda: win.open_path(path))
    else:
        key = args.dataset or "mnist"
        _after_first_paint(win, lambda: win.load_initial_dataset(key))
    if args.train:
        win.session.datasetLoaded.connect(win.start_training, QtCore.Qt.SingleShotConnection)
    if not os.environ.get("LATENT_EXPLORER_NO_WARMUP"):
        # Import umap and compile its layout code in the background once the
        # window is up, so the first UMAP map the user asks for comes quickly.
        QtCore.QTimer.singleShot(WARMUP_DELAY_MS, win.session.map.warm_umap)
    stopper = _close_on_signals(app, win)
    code = app.exec()
    return 128 + stopper.signum if stopper.signum else code


def _close_on_signals(app, win):
    """Ctrl+C (SIGINT) and SIGTERM close the window as its close button does, without asking about unsaved work.

    Closing stops training within a batch and lets a save in progress finish,
    so no partial file is left behind; unsaved training stays as a recovery
    copy, offered at the next start.  Further signals while closing are
    ignored.  Python runs signal handlers only when it gets control, and Qt's
    event loop is C++, so a timer wakes the interpreter a few times a second.
    """
    import signal

    from PySide6 import QtCore

    class Stopper(QtCore.QObject):
        signum = 0

        @QtCore.Slot()
        def wake(self) -> None:
            pass

        @QtCore.Slot()
        def close(self) -> None:
            win.close_without_asking()  # no dialog: unsaved training is kept as a recovery copy
            app.quit()

    stopper = Stopper(app)
    timer = QtCore.QTimer(stopper)
    timer.timeout.connect(stopper.wake)
    timer.start(200)

    def handle(signum, frame):
        if not stopper.signum:
            stopper.signum = int(signum)
            QtCore.QTimer.singleShot(0, stopper.close)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handle)
        except (ValueError, OSError):  # not the main thread, or no such signal here
            pass
    return stopper


def _after_first_paint(win, fn, fallback_ms: int = 1000) -> None:
    """Call ``fn`` once the window has painted for the first time, or after ``fallback_ms``.

    Loading data starts background threads (importing torch, reading files)
    that compete with the GUI thread for the interpreter; started before the
    first paint they hold the window back by about half a second on two cores.
    The fallback covers a window that is not painted (started minimised).
    """
    from PySide6 import QtCore

    class Starter(QtCore.QObject):
        done = False

        def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
            if not self.done and event.type() == QtCore.QEvent.Paint:
                QtCore.QTimer.singleShot(0, self.start)
            return False

        @QtCore.Slot()
        def start(self) -> None:
            if self.done:
                return
            self.done = True
            win.removeEventFilter(self)
            fn()

    starter = Starter(win)
    win.installEventFilter(starter)
    QtCore.QTimer.singleShot(fallback_ms, starter.start)


def _set_icon(app) -> None:
    """The window icon from the package's resources (an SVG next to the code)."""
    from importlib import resources

    from PySide6 import QtGui

    try:
        data = resources.files("resources").joinpath("icon.svg").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return
    pix = QtGui.QPixmap()
    if pix.loadFromData(data, "SVG"):
        app.setWindowIcon(QtGui.QIcon(pix))


def _first_paint_reporter(t0: float, parent):
    """An event filter that prints "painted <seconds> umap=<0|1>" after the window's first paint.

    The second field says whether ``umap`` had been imported by then: it is slow
    to import and must only load in the background when a UMAP map is asked for.
    """
    from PySide6 import QtCore

    class Reporter(QtCore.QObject):
        done = False

        def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
            if not self.done and event.type() == QtCore.QEvent.Paint:
                self.done = True
                QtCore.QTimer.singleShot(0, self.report)
            return False

        @QtCore.Slot()
        def report(self) -> None:
            umap = int("umap" in sys.modules)
            print(f"painted {time.perf_counter() - t0:.3f} umap={umap}", flush=True)

    return Reporter(parent)
