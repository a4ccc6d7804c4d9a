"""How the desktop program feels while it trains: throughput, responsiveness, start-up.

Everything runs offscreen (``QT_QPA_PLATFORM=offscreen``) on the built-in
MNIST (5,000 images, 4,500 for training) with the training panel's default
model and settings (MLP 512,256, 2 latent dims, batch 64), torch threads as
the program sets them (``Session.num_threads``).  Window settings live in a
temporary folder so the user's layout is neither read nor written.

``run()`` returns

* ``gui_train_samples_per_s``: examples per second while the program trains
  (main window shown, curves, progress and map updating as usual), counted in
  the training thread from batch 20 of the first epoch to the last batch of
  the run, less the end-of-epoch evaluations (the same work in both
  contenders; the program's thread also takes the weights' snapshot and
  builds its encoder and decoder there); the GUI thread's per-epoch work
  (map redraw) overlaps the following batches and is counted;
* ``engine_train_samples_per_s``: the same figure for
  ``vae_core.training.Trainer`` with the same configs, run in a plain thread
  while the GUI is idle;
* ``gui_train_throughput_ratio``: the median over rounds of their quotient.
  Rounds of 4 epochs alternate between the two (the order flips each round)
  so machine load hits both alike;
* ``event_loop_p99_ms``: while the program trains, a precise 10 ms repeating
  QTimer records how late each tick fires (interval minus 10 ms, floored at
  0); the 99th percentile over about 10 s;
* ``event_loop_p99_digits_ms``: the same while the program trains ``digits``
  (1,797 images of 8x8, the panel's defaults: latent 2, MLP 512,256, batch
  64), whose epochs are short (several a second): the map, KL bars and tools
  must be redrawn coalesced, not once per epoch;
* ``gui_thread_cpu_share`` and ``gui_thread_cpu_share_digits``: for context,
  the GUI thread's CPU time over those windows as a share of their length
  (its own work: painting, signals, the timer; waits for the CPU or the
  interpreter lock are not in it).  The lateness also counts those waits, so
  it rises with the machine's load (the load average is logged with each
  figure); this share does not;
* ``drag_decode_p95_ms``: while the program trains, a left-button drag on the
  latent map: a press, then a real ``QMouseEvent`` MouseMove every 16 ms
  along a path over the data, posted to the map's viewport from another
  thread (``QCoreApplication.postEvent``: each waits in the queue like a real
  one).  For each move whose image the decode canvas painted, the time from
  posting it to the end of that paint; the 95th percentile
  (``drag_decode_p50_ms`` and ``drag_moves_painted`` for context);
* ``launch_to_paint_s``: median over 3 fresh ``python -m app --dataset
  mnist`` processes of the wall-clock time from just before starting the
  process to its report of the main window's first paint
  (``LATENT_EXPLORER_REPORT_LAUNCH=1``); ``launch_umap_imported`` is the
  number of those processes that had imported ``umap`` by then (must be 0).

``BENCH_QUICK=1`` runs one throughput round and shorter windows.

``spin`` and ``TickRecorder`` (running the event loop until a condition
holds, and the lateness of a precise timer) are shared with ``bench_soak``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGETS = {
    "gui_train_throughput_ratio": (">=", 0.9),
    "event_loop_p99_ms": ("<=", 15),
    "event_loop_p99_digits_ms": ("<=", 15),
    "drag_decode_p95_ms": ("<=", 16),
    "launch_to_paint_s": ("<=", 2.5),
}

ROOT = Path(__file__).resolve().parent.parent
WARMUP_BATCHES = 20
EPOCHS_PER_ROUND = 4
TICK_MS = 10
MOVE_MS = 16


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def spin(pred, timeout_s: float, poll_ms: int = 20) -> bool:
    """Run the Qt event loop until ``pred()`` holds or ``timeout_s`` passed; True when it held.

    A ``QEventLoop`` with a polling timer: the GUI thread sleeps in Qt (the
    interpreter lock released) between polls, as in the program itself.
    """
    from PySide6 import QtCore

    if pred():
        return True
    loop = QtCore.QEventLoop()
    deadline = time.perf_counter() + timeout_s
    ok = [False]

    def check() -> None:
        if pred():
            ok[0] = True
            loop.quit()
        elif time.perf_counter() >= deadline:
            loop.quit()

    poll = QtCore.QTimer()
    poll.timeout.connect(check)
    poll.start(poll_ms)
    loop.exec()
    poll.stop()
    return ok[0]


class TickRecorder:
    """How late each tick of a precise ``TICK_MS`` repeating timer fires (ms past the interval, floored at 0)."""

    def __init__(self, tag=None):
        #: Called at each tick; its value is stored with the lateness (e.g. the epochs done so far).
        self._tag = tag
        self.last: float | None = None
        self.late_ms: list[float] = []
        self.tags: list = []
        self.timer = None

    def start(self) -> None:
        from PySide6 import QtCore

        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.tick)
        self.last = None
        self.timer.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.stop()

    def tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.late_ms.append(max(0.0, 1000.0 * (now - self.last) - TICK_MS))
            if self._tag is not None:
                self.tags.append(self._tag())
        self.last = now


# ----------------------------------------------------------------- launch
def _launch_once(env: dict[str, str], timeout_s: float = 60.0) -> tuple[float, bool]:
    """Start the program, wait for "painted", kill it; (seconds, umap imported)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--dataset", "mnist"],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("painted"):
                elapsed = time.perf_counter() - t0
                return elapsed, "umap=1" in line.split()
        raise RuntimeError(f"the program exited (code {proc.poll()}) without reporting its first paint")
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _launch(n: int, config_home: str) -> dict[str, float]:
    env = dict(os.environ)
    env.update({
        "QT_QPA_PLATFORM": "offscreen",
        "LATENT_EXPLORER_REPORT_LAUNCH": "1",
        "XDG_CONFIG_HOME": config_home,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    })
    times, umap = [], 0
    for i in range(n):
        seconds, imported = _launch_once(env)
        times.append(seconds)
        umap += int(imported)
        _log(f"launch {i + 1}/{n}: painted after {seconds:.2f} s{' (umap imported!)' if imported else ''}")
    return {"launch_to_paint_s": statistics.median(times), "launch_umap_imported": float(umap)}


# ------------------------------------------------------------- throughput
class _Recorder:
    """Batch and epoch arrival times, recorded in the training thread.

    ``marks`` holds (time, [(epoch, batch, samples), ...]) for each group of
    batches (one per batch for the engine, one per coalesced signal for the
    program: the program flushes right after a batch, so each time is the end
    of that group's last batch) and ``epochs`` the time of each epoch event.
    """

    def __init__(self, batch_size: int, n_train: int):
        self.bs = batch_size
        self.n_train = n_train
        self.marks: list[tuple[float, list[tuple[int, int, int]]]] = []
        self.epochs: list[float] = []

    def _samples(self, b: int) -> int:
        return min(self.bs, self.n_train - b * self.bs)

    def on_batches(self, events) -> None:
        now = time.perf_counter()
        self.marks.append((now, [(e.epoch, e.batch, self._samples(e.batch)) for e in events]))

    def on_epoch(self, *_args) -> None:
        self.epochs.append(time.perf_counter())

    def rate(self) -> float:
        """Training samples per second from the first mark past the warm-up to the last batch,
        less the gaps between the last batch of an epoch and its epoch event."""
        if not self.marks:
            raise RuntimeError("no batches were recorded")
        first_epoch = self.marks[0][1][0][0]
        start = None
        samples = 0
        t_end = None
        for t, group in self.marks:
            if start is None:
                e, b, _ = group[-1]
                if e == first_epoch and b >= WARMUP_BATCHES - 1:
                    start = t
                continue
            samples += sum(s for _, _, s in group)
            t_end = t
        if start is None or t_end is None or samples == 0:
            raise RuntimeError("too few batches to measure throughput")
        # Each epoch event follows the epoch's last batch; that gap is the evaluation.
        eval_s = 0.0
        ends = [t for t, g in self.marks]
        for te in self.epochs:
            before = [t for t in ends if t <= te]
            if before and start <= before[-1] < t_end:
                eval_s += te - before[-1]
        return samples / (t_end - start - eval_s)


def _engine_round(mcfg, tcfg, dataset, trainer_box: list) -> float:
    """EPOCHS_PER_ROUND epochs of the bare Trainer in a plain thread (the GUI thread just waits)."""
    from vae_core.training import Trainer

    rec = _Recorder(tcfg.batch_size, int(len(dataset.train_idx)))
    error: list[BaseException] = []

    def work() -> None:
        try:
            from vae_core.inference import configure_thread

            configure_thread(tcfg.num_threads)  # as the program's training thread does
            if not trainer_box:
                trainer_box.append(Trainer(mcfg, tcfg, dataset))
            trainer = trainer_box[0]
            for ev in trainer.run(EPOCHS_PER_ROUND):
                if ev.kind == "batch":
                    rec.on_batches((ev,))
                elif ev.kind == "epoch":
                    rec.on_epoch()
        except BaseException as exc:  # reported in the calling thread
            error.append(exc)

    th = threading.Thread(target=work, name="bench-engine")
    th.start()
    th.join()
    if error:
        raise error[0]
    return rec.rate()


def _gui_round(win) -> float:
    from PySide6 import QtCore

    from app.session import TRAINED

    s = win.session
    rec = _Recorder(int(win.panel.train_settings()["batch_size"]), int(len(s.dataset.train_idx)))
    win.panel.epochsSpin.setValue(EPOCHS_PER_ROUND)
    win.panel.trainButton.click()
    th = s.thread
    if th is None:
        raise RuntimeError("the Train button did not start training")
    # Direct connections: the recorder runs in the training thread, at the moment of emission.
    th.batches.connect(rec.on_batches, QtCore.Qt.DirectConnection)
    th.epochEnded.connect(rec.on_epoch, QtCore.Qt.DirectConnection)
    if not spin(lambda: s.state == TRAINED and not s.running, 300):
        raise RuntimeError("training in the program did not finish")
    # Let the last map redraw happen before the next round starts.
    spin(lambda: not s.map.pending and not s.map.fitting, 5)
    return rec.rate()


# ------------------------------------------------- responsiveness while training
def _event_loop_lateness(seconds: float) -> tuple[list[float], float]:
    """Ticks' lateness (ms) over ``seconds`` of the event loop, and the GUI thread's CPU share meanwhile."""
    rec = TickRecorder()
    cpu0, t0 = time.thread_time(), time.perf_counter()
    rec.start()
    spin(lambda: False, seconds)
    rec.stop()
    return rec.late_ms, (time.thread_time() - cpu0) / (time.perf_counter() - t0)


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unknown"


def _train_and_measure_lateness(win, key: str, seconds: float) -> tuple[list[float], float]:
    """Load ``key`` in the window, train it with the panel's defaults and time the event loop meanwhile."""
    from app.session import IDLE

    s = win.session
    if s.has_model:
        s.reset()
    win.load_initial_dataset(key)
    if not spin(lambda: s.dataset is not None and s.dataset.name == key and s.state == IDLE, 120):
        raise RuntimeError(f"{key} did not load")
    win.panel.epochsSpin.setValue(100000)
    win.panel.trainButton.click()
    if not spin(lambda: s.running and s.xy is not None, 60):
        raise RuntimeError("training did not start")
    spin(lambda: False, 1.0)
    measured = _event_loop_lateness(seconds)
    s.stop()
    spin(lambda: not s.running, 30)
    return measured


def _drag(win, seconds: float) -> list[float]:
    """Post a press, then a move every MOVE_MS, then a release; post-to-paint latencies in ms."""
    import numpy as np
    from PySide6 import QtCore, QtGui

    view, canvas, s = win.latent_view, win.decode_canvas, win.session
    vp = view.viewport()
    xy = s.xy
    lo, hi = np.percentile(xy, 15, axis=0), np.percentile(xy, 85, axis=0)
    n = max(10, int(seconds * 1000 / MOVE_MS))
    # A slow Lissajous curve inside the bulk of the data, in viewport pixels;
    # a tiny per-move offset makes every position unique so each processed
    # event can be matched to the move that posted it.
    t = np.linspace(0.0, 1.0, n)
    px = []
    for i, ti in enumerate(t):
        dx = lo[0] + (hi[0] - lo[0]) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * ti))
        dy = lo[1] + (hi[1] - lo[1]) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * ti + 0.7))
        p = view.map_from_data(float(dx), float(dy))
        px.append((p.x() + 1e-3 * (i % 997) / 997.0, p.y()))
    start = view.map_from_data(float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2)

    posted: dict[tuple[float, float], list] = {}  # position -> [post time, counted]
    state = {"current": None, "painted_version": canvas.image_version()}
    latencies: list[float] = []

    class Watcher(QtCore.QObject):
        def eventFilter(self, obj, ev):  # noqa: N802 - Qt's name
            if ev.type() == QtCore.QEvent.MouseMove:
                p = ev.position()
                rec = posted.get((p.x(), p.y()))
                if rec is not None:
                    state["current"] = rec
            return False

    watcher = Watcher()
    vp.installEventFilter(watcher)  # installed last, so it sees each event before the map does
    original_paint = canvas.paintEvent

    def paint(ev):
        original_paint(ev)
        v = canvas.image_version()
        cur = state["current"]
        if v != state["painted_version"] and cur is not None and not cur[1]:
            cur[1] = True
            latencies.append(1000.0 * (time.perf_counter() - cur[0]))
        state["painted_version"] = v

    canvas.paintEvent = paint

    def mouse(etype, x, y, button, buttons):
        pos = QtCore.QPointF(x, y)
        gpos = QtCore.QPointF(vp.mapToGlobal(pos.toPoint()))
        return QtGui.QMouseEvent(etype, pos, gpos, button, buttons, QtCore.Qt.NoModifier)

    left, none = QtCore.Qt.LeftButton, QtCore.Qt.NoButton
    QtCore.QCoreApplication.postEvent(vp, mouse(QtCore.QEvent.MouseButtonPress, start.x(), start.y(), left, left))
    spin(lambda: False, 0.2)
    events = [mouse(QtCore.QEvent.MouseMove, x, y, none, left) for x, y in px]
    done = threading.Event()

    def poster() -> None:
        t_next = time.perf_counter()
        for (x, y), ev in zip(px, events):
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            posted[(x, y)] = [time.perf_counter(), False]
            QtCore.QCoreApplication.postEvent(vp, ev)
            t_next += MOVE_MS / 1000.0
        done.set()

    th = threading.Thread(target=poster, name="bench-mouse")
    th.start()
    spin(done.is_set, seconds * 3 + 10)
    th.join()
    spin(lambda: False, 0.3)  # the last moves get painted
    x, y = px[-1]
    QtCore.QCoreApplication.postEvent(vp, mouse(QtCore.QEvent.MouseButtonRelease, x, y, left, none))
    spin(lambda: False, 0.1)
    vp.removeEventFilter(watcher)
    del canvas.paintEvent
    _log(f"drag: {len(px)} moves posted, {len(latencies)} painted")
    return latencies


# -------------------------------------------------------------------- run
def run() -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    quick = os.environ.get("BENCH_QUICK") == "1"
    rounds = 1 if quick else 5
    loop_s = 4.0 if quick else 10.0
    drag_s = 3.0 if quick else 6.0
    results: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="bench-gui-") as tmp:
        results.update(_launch(3, tmp))

        # The same process settings as the program makes before its QApplication.
        from app.program import prepare_qt_environment

        prepare_qt_environment()
        from PySide6 import QtCore, QtWidgets

        QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, tmp)
        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])

        from app.main_window import MainWindow
        from app.session import LOADING
        from vae_core.config import ModelConfig, TrainConfig

        win = MainWindow(restore=False)
        win.resize(1360, 860)
        win.show()
        try:
            s = win.session
            win.load_initial_dataset("mnist")
            if not spin(lambda: s.dataset is not None and s.state != LOADING, 120):
                raise RuntimeError("MNIST did not load")
            mcfg = ModelConfig(input_shape=tuple(s.dataset.input_shape), **win.panel.model_settings())
            tcfg = TrainConfig(**{**win.panel.train_settings(), "epochs": EPOCHS_PER_ROUND, "num_threads": s.num_threads})
            _log(f"model {mcfg.architecture} {mcfg.hidden_dims}, latent {mcfg.latent_dim}, batch {tcfg.batch_size}, "
                 f"torch threads {tcfg.num_threads}")

            engine_box: list = []
            gui_rates, engine_rates, ratios = [], [], []
            for r in range(rounds):
                order = ("gui", "engine") if r % 2 == 0 else ("engine", "gui")
                got = {}
                for who in order:
                    if who == "gui":
                        got[who] = _gui_round(win)
                    else:
                        got[who] = _engine_round(mcfg, tcfg, s.dataset, engine_box)
                gui_rates.append(got["gui"])
                engine_rates.append(got["engine"])
                ratios.append(got["gui"] / got["engine"])
                _log(f"round {r + 1}/{rounds}: program {got['gui']:.0f}/s, engine {got['engine']:.0f}/s, "
                     f"ratio {ratios[-1]:.3f}; {_load()}")
            results["gui_train_samples_per_s"] = statistics.median(gui_rates)
            results["engine_train_samples_per_s"] = statistics.median(engine_rates)
            results["gui_train_throughput_ratio"] = statistics.median(ratios)
            engine_box.clear()

            # Responsiveness: train for long enough to cover both measurements.
            win.panel.epochsSpin.setValue(1000)
            win.panel.trainButton.click()
            if not spin(lambda: s.running and s.xy is not None, 30):
                raise RuntimeError("training did not start")
            spin(lambda: False, 1.0)
            late, share = _event_loop_lateness(loop_s)
            results["event_loop_p99_ms"] = _percentile(late, 99)
            results["event_loop_max_ms"] = max(late) if late else float("nan")
            results["gui_thread_cpu_share"] = share
            _log(f"event loop: {len(late)} ticks, p50 {_percentile(late, 50):.2f} ms, "
                 f"p99 {results['event_loop_p99_ms']:.2f} ms, max {results['event_loop_max_ms']:.1f} ms, "
                 f"GUI thread on the CPU {100 * share:.0f}% of the time; {_load()}")
            lat = _drag(win, drag_s)
            results["drag_decode_p95_ms"] = _percentile(lat, 95)
            results["drag_decode_p50_ms"] = _percentile(lat, 50)
            results["drag_moves_painted"] = float(len(lat))
            _log(f"drag: p50 {results['drag_decode_p50_ms']:.1f} ms, p95 {results['drag_decode_p95_ms']:.1f} ms; "
                 f"{_load()}")
            s.stop()
            spin(lambda: not s.running, 30)

            # Short epochs: digits trains several a second.
            late, share = _train_and_measure_lateness(win, "digits", loop_s)
            results["event_loop_p99_digits_ms"] = _percentile(late, 99)
            results["event_loop_max_digits_ms"] = max(late) if late else float("nan")
            results["gui_thread_cpu_share_digits"] = share
            _log(f"event loop (digits): {len(late)} ticks, p50 {_percentile(late, 50):.2f} ms, "
                 f"p99 {results['event_loop_p99_digits_ms']:.2f} ms, max {results['event_loop_max_digits_ms']:.1f} ms, "
                 f"GUI thread on the CPU {100 * share:.0f}% of the time; {_load()}")
        finally:
            win.session.shutdown(5000)
            win.hide()
            win.deleteLater()
            spin(lambda: False, 0.05)
    return results
