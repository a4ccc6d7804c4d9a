"""How soon a window that follows a run folder shows a new epoch's map.

A window (offscreen, as the program makes it) follows a run folder
(``MainWindow.follow_run``, polled every 0.5 s on its worker thread).  An
epoch counts as shown when the session's map is ready with the codes of
that epoch's checkpoint (the first ``Session.mapReady`` once the checkpoint
of that epoch is the model on screen): the checkpoint was noticed, read,
its models built, installed, and the map laid out.

* ``follow_latency_s`` (target <= 2): the median, over ``EPOCHS`` epochs,
  of the seconds from the epoch's checkpoint being renamed into place
  (``os.replace`` to ``latest.ckpt``) to the window showing that epoch's
  map.  The folder is written by a thread of this process that replays a
  real run of ``digits`` (2 latent dims, the default MLP) recorded
  beforehand with ``vae_core.runs.RunWriter``: each epoch's batch events,
  then its checkpoint renamed into place, then its epoch event, one epoch
  every ``GAP_S`` seconds and a sixth of the poll interval (so that the
  renames fall at six moments of the poll cycle: on average a quarter of
  a second goes to waiting for the next poll).  The first epoch is opened
  as File ▸ Open opens a checkpoint (its dataset is read); the others come
  in as training epochs do.  ``follow_latency_max_s`` is the slowest
  epoch, ``follow_latency_first_s`` the first.
* ``follow_latency_train_s``: the median latency while a
  ``python -m vae_core train --dataset digits --run-dir DIR`` process
  trains on the same machine (the window and the trainer share the cores).
  The rename's time there is that of the epoch's event, which the trainer
  writes right after the rename.  Epochs that come faster than the window
  shows them are superseded by newer ones and not counted;
  ``follow_train_epochs_shown`` says how many were shown.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGETS = {"follow_latency_s": ("<=", 2.0)}

EPOCHS = 6
#: Seconds between two replayed epochs (each latency is measured on its own), plus a sixth of the poll
#: interval: the renames land at six different moments of the window's poll cycle.
GAP_S = 2.5
TRAIN_EPOCHS = 8


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _record_run(folder: Path, epochs: int) -> None:
    """Train digits for ``epochs`` epochs into the run folder ``folder``, keeping every epoch's checkpoint."""
    from vae_core import ModelConfig, TrainConfig
    from vae_core.data import load_dataset
    from vae_core.distributed import process_info
    from vae_core.runs import RunWriter
    from vae_core.training import Trainer

    dataset = load_dataset({"source": "digits"})
    trainer = Trainer(ModelConfig(input_shape=dataset.input_shape, latent_dim=2),
                      TrainConfig(epochs=epochs, batch_size=128, seed=0, device="cpu"), dataset)
    writer = RunWriter(folder, trainer, keep=epochs, batch_interval_s=0.0)
    writer.start([process_info(0, trainer.device)])
    for ev in trainer.run():
        writer.record(ev)
    writer.finish()


class Replay(threading.Thread):
    """Writes a recorded run into another folder epoch by epoch, noting when each checkpoint is renamed into place."""

    def __init__(self, source: Path, target: Path, epochs: int) -> None:
        super().__init__(daemon=True)
        self.source, self.target, self.epochs = source, target, epochs
        self.renamed: dict[int, float] = {}  # epoch -> time.perf_counter() right after the rename
        self.start_epochs = threading.Event()
        lines = (source / "events.jsonl").read_bytes().splitlines(keepends=True)
        self._head: list[bytes] = []  # up to the "started" status
        self._epochs: list[tuple[list[bytes], bytes]] = []  # (the epoch's other lines, its epoch line)
        pending: list[bytes] = []
        for line in lines:
            ev = json.loads(line)
            if ev["kind"] == "epoch":
                self._epochs.append((pending, line))
                pending = []
            elif not self._epochs and ev["kind"] == "status" and ev["status"] == "started":
                self._head.append(line)
            else:
                pending.append(line)

    def begin(self) -> None:
        """The folder as the run starts: its config and its "started" event, no checkpoint yet."""
        self.target.mkdir(parents=True)
        shutil.copy(self.source / "config.json", self.target / "config.json")
        with open(self.target / "events.jsonl", "ab") as f:
            f.writelines(self._head)

    def run(self) -> None:
        from app.session.follow import POLL_INTERVAL_MS

        self.start_epochs.wait()
        for epoch in range(1, self.epochs + 1):
            others, epoch_line = self._epochs[epoch - 1]
            with open(self.target / "events.jsonl", "ab") as f:
                f.writelines(others)
            data = (self.source / f"epoch-{epoch:04d}.ckpt").read_bytes()
            tmp = self.target / ".latest.ckpt.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.target / "latest.ckpt")
            self.renamed[epoch] = time.perf_counter()
            with open(self.target / "events.jsonl", "ab") as f:
                f.write(epoch_line)
            time.sleep(GAP_S + POLL_INTERVAL_MS / 1000 / self.epochs)


class ShownEpochs:
    """When each epoch's map was first ready in the window (``time.perf_counter()`` and ``time.time()``)."""

    def __init__(self, session) -> None:
        self.session = session
        self.perf: dict[int, float] = {}
        self.wall: dict[int, float] = {}
        session.mapReady.connect(self.on_map)

    def on_map(self, _view) -> None:
        ckpt = self.session.checkpoint
        if ckpt is not None and ckpt.epoch not in self.perf:
            self.perf[ckpt.epoch] = time.perf_counter()
            self.wall[ckpt.epoch] = time.time()


def _replayed(win, spin, tmp: Path) -> dict[str, float]:
    source = tmp / "recorded"
    _record_run(source, EPOCHS)
    replay = Replay(source, tmp / "followed", EPOCHS)
    replay.begin()
    shown = ShownEpochs(win.session)
    if not win.follow_run(str(replay.target)):
        raise RuntimeError("the window did not follow the run folder")
    if not spin(lambda: win.runs.follower.status is not None, 10.0):
        raise RuntimeError("the window never read the run folder")
    replay.start()
    replay.start_epochs.set()
    spin(lambda: len(shown.perf) == EPOCHS, EPOCHS * GAP_S + 30.0)
    replay.join(timeout=GAP_S + 5)
    win.runs.stop()
    latencies = [shown.perf[e] - replay.renamed[e] for e in sorted(shown.perf) if e in replay.renamed]
    if len(latencies) < EPOCHS:
        raise RuntimeError(f"only {len(latencies)} of {EPOCHS} epochs were shown")
    _log("replayed run, seconds from rename to map per epoch: " + ", ".join(f"{v:.3f}" for v in latencies))
    return {
        "follow_latency_s": statistics.median(latencies),
        "follow_latency_max_s": max(latencies),
        "follow_latency_first_s": latencies[0],
    }


def _trained(win, spin, tmp: Path) -> dict[str, float]:
    folder = tmp / "trained"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "vae_core", "train", "--dataset", "digits", "--epochs", str(TRAIN_EPOCHS),
           "--run-dir", str(folder), "--threads", "1", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=str(Path(__file__).resolve().parent.parent))
    try:
        if not spin(lambda: (folder / "events.jsonl").is_file() or proc.poll() is not None, 120.0) \
                or proc.poll() not in (None, 0):
            raise RuntimeError(f"the training process did not start its run folder: {proc.stderr.read().decode()[-500:]}")
        shown = ShownEpochs(win.session)
        if not win.follow_run(str(folder)):
            raise RuntimeError("the window did not follow the run folder")
        spin(lambda: proc.poll() is not None, 300.0)
        # The last epoch is shown after the process ended.
        last = TRAIN_EPOCHS
        spin(lambda: last in shown.perf, 10.0)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        win.runs.stop()
    event_time = {}
    for line in (folder / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev["kind"] == "epoch":
            event_time[int(ev["epoch"])] = float(ev["time"])
    latencies = [shown.wall[e] - event_time[e] for e in sorted(shown.wall) if e in event_time]
    _log(f"training process: epochs shown {sorted(shown.wall)} of {TRAIN_EPOCHS}, seconds from rename to map: "
         + ", ".join(f"{v:.3f}" for v in latencies))
    return {
        "follow_latency_train_s": statistics.median(latencies) if latencies else float("nan"),
        "follow_train_epochs_shown": float(len(latencies)),
    }


def run() -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("LATENT_EXPLORER_NO_WARMUP", "1")
    from app.program import prepare_qt_environment

    prepare_qt_environment()
    from PySide6 import QtCore, QtWidgets

    from bench.bench_gui import spin

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-follow-") as tmp:
        QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, tmp)
        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
        from app.main_window import MainWindow

        win = MainWindow(restore=False)
        win.resize(1360, 860)
        win.show()
        app.processEvents()
        try:
            results.update(_replayed(win, spin, Path(tmp)))
            results.update(_trained(win, spin, Path(tmp)))
        finally:
            win.runs.close()
            win.session.shutdown(3000)
            win.close()
            win.deleteLater()
            app.processEvents()
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:.4g}")
