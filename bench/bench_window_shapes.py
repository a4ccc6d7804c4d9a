"""The desktop program on dSprites-sized data: 737,280 shapes at 64 x 64, loaded and trained in the window.

A child process opens the real ``MainWindow`` offscreen (window settings,
recovery files and run folders in a temporary folder, as the program keeps
them in the user's folders) and does what a user does: sets the panel's
Shapes count to 737,280 and Image size to 64, chooses Shapes (the panel's
``datasetChanged``: the window's own load through the session), presses
Train with the panel's default model and settings (MLP 512,256, 2 latent
dims, batch 64), presses Stop after ``BATCHES`` batches (a whole epoch is
10,368 batches, about half an hour on this 2-core machine) and waits until
the map of all 737,280 codes is shown.  Meanwhile a precise 10 ms timer
records how late the event loop answers.

``run()`` returns

* ``window_shapes_737k_peak_rss_gb``: the child's peak resident set size
  (``os.wait4``'s ``ru_maxrss`` of that process alone), in GiB; it must fit
  on this machine with room to spare (``machine_memory_gb`` for reference);
* ``window_shapes_737k_peak_anon_gb``: its largest anonymous memory
  (``RssAnon``, sampled every 50 ms): what it really allocated;
* ``window_shapes_737k_load_s``: from choosing Shapes to the dataset loaded;
* ``window_shapes_737k_first_batch_s``: from Train to the first progress shown;
* ``window_shapes_737k_samples_per_s``: examples per second over the batches
  after the first;
* ``window_shapes_737k_stop_to_map_s``: from Stop to the map of every code shown;
* ``window_shapes_737k_event_loop_p99_ms`` and ``..._max_ms``: lateness of
  the timer's ticks while the model trains;
* ``window_shapes_737k_seconds``: the child's wall time.

``BENCH_QUICK=1`` trains 50 batches instead of 200.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.bench_data import _child

ROOT = Path(__file__).resolve().parent.parent
N_SHAPES = 737_280
SIZE = 64
BATCHES = 200

_WINDOW_CHILD = r"""
import json, os, statistics, sys, time
n, size, batches, tmp = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from app.program import prepare_qt_environment
prepare_qt_environment()
from PySide6 import QtCore, QtWidgets
QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, tmp)
app = QtWidgets.QApplication([sys.argv[0]])
from app.main_window import MainWindow
from app.session import IDLE, TRAINED
from bench.bench_gui import TickRecorder, spin

t_start = time.perf_counter()
win = MainWindow(restore=False)
win.resize(1360, 860)
win.show()
s, panel = win.session, win.panel
messages = []
s.message.connect(lambda level, text: messages.append((level, text)))
progress = []  # (time, batch) of every progress read-out
s.trainProgress.connect(lambda p: progress.append((time.perf_counter(), p["batch"])))

def fail(what):
    print("messages:", messages, file=sys.stderr)
    raise SystemExit(f"{what} (state {s.state!r})")

panel.shapesCountSpin.setValue(n)
panel.sizeSpin.setValue(size)
t0 = time.perf_counter()
panel.datasetCombo.setCurrentIndex(panel.datasetCombo.findData("shapes"))
if not spin(lambda: s.dataset is not None and s.dataset.n == n and s.state == IDLE, 900):
    fail("the shapes did not load")
load_s = time.perf_counter() - t0
print(f"loaded {s.dataset.name}: {s.dataset.images.shape} {s.dataset.images.dtype} in {load_s:.1f} s", flush=True)

ticks = TickRecorder()
t_train = time.perf_counter()
panel.trainButton.click()
if not spin(lambda: bool(progress), 600):
    fail("training did not start")
first_batch_s = progress[0][0] - t_train
ticks.start()
if not spin(lambda: progress[-1][1] >= batches or not s.running, 1800):
    fail("training did not reach its batches")
ticks.stop()
t_stop = time.perf_counter()
done = progress[-1][1]
panel.stopButton.click()
if not spin(lambda: s.state == TRAINED and s.latents is not None and len(s.latents) == n and s.xy is not None
            and not s.map.pending and not s.map.fitting, 900):
    fail("the map of every code did not come")
stop_to_map_s = time.perf_counter() - t_stop
(t_a, b_a), (t_b, b_b) = progress[0], [p for p in progress if p[1] <= done][-1]
rate = (b_b - b_a) * panel.train_settings()["batch_size"] / (t_b - t_a) if t_b > t_a else float("nan")
late = sorted(ticks.late_ms)
errors = [t for level, t in messages if level == "error"]
figures = {
    "load_s": load_s, "first_batch_s": first_batch_s, "samples_per_s": rate, "stop_to_map_s": stop_to_map_s,
    "event_loop_p99_ms": late[min(len(late) - 1, int(0.99 * len(late)))] if late else float("nan"),
    "event_loop_max_ms": late[-1] if late else float("nan"),
    "batches": float(done), "errors": float(len(errors)),
}
print(f"trained {done} batches, map of {len(s.xy)} points; errors: {errors}", flush=True)
s.shutdown(5000)
win.hide()
print("figures " + json.dumps(figures), flush=True)
"""


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _total_memory_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 2**30
    return float("nan")


def run() -> dict[str, float]:
    batches = 50 if os.environ.get("BENCH_QUICK") == "1" else BATCHES
    tmp = Path(tempfile.mkdtemp(prefix="bench_window_shapes."))
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "LATENT_EXPLORER_DATA_DIR": str(tmp / "data"),
        "LATENT_EXPLORER_CACHE": str(tmp / "cache"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    log = tmp / "window.log"
    try:
        rc, peak, anon, seconds = _child(["-c", _WINDOW_CHILD, str(N_SHAPES), str(SIZE), str(batches), str(tmp)],
                                         log, env)
        text = log.read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("figures ")]
        if rc != 0 or not lines:
            raise RuntimeError(f"the window run failed ({rc}): {text[-3000:]}")
        for line in text.splitlines():
            if line.startswith(("loaded ", "trained ")):
                _log(line)
        figures = json.loads(lines[-1][len("figures "):])
        if figures.pop("errors"):
            raise RuntimeError(f"the window showed errors: {text[-3000:]}")
        results = {f"window_shapes_737k_{k}": float(v) for k, v in figures.items()}
        results["window_shapes_737k_peak_rss_gb"] = peak
        results["window_shapes_737k_peak_anon_gb"] = anon
        results["window_shapes_737k_seconds"] = seconds
        results["machine_memory_gb"] = _total_memory_gb()
        _log(f"peak RSS {peak:.2f} GiB ({anon:.2f} anonymous) of {results['machine_memory_gb']:.1f} GiB, "
             f"{seconds:.0f} s in all")
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
