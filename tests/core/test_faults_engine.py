"""Engine faults not covered elsewhere: where a rollback lands, the boundary hook, SIGTERM timing.

The basic NaN rollback, bad files, atomic writes and the CLI's signal handling
are tested in test_training.py, test_checkpoint.py, test_data*.py and test_cli.py.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_core import ModelConfig, TrainConfig
from vae_core.checkpoint import load_checkpoint, restore_trainer, save_checkpoint
from vae_core.training import Trainer

ROOT = Path(__file__).resolve().parents[2]


class _Spec:
    def to_dict(self):
        return {"source": "tiny"}


class TinyDataset:
    def __init__(self, n=160, side=6):
        rng = np.random.default_rng(0)
        self.images = rng.random((n, 1, side, side)).astype(np.float32)
        self.images[: n // 2, :, : side // 2] *= 0.2
        self.labels = (np.arange(n) < n // 2).astype(np.int64)
        self.label_names = ["low", "high"]
        self.name = "tiny"
        self.binarize = "none"
        self.spec = _Spec()
        perm = np.random.default_rng(1).permutation(n)
        self.test_idx, self.train_idx = perm[: n // 5].copy(), perm[n // 5:].copy()

    @property
    def n(self):
        return self.images.shape[0]

    @property
    def input_shape(self):
        return tuple(self.images.shape[1:])


MODEL = ModelConfig(input_shape=(1, 6, 6), latent_dim=2, hidden_dims=(16,))
TRAIN = TrainConfig(epochs=3, batch_size=32, seed=3, num_threads=1)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_live_learning_rate_that_diverges_rolls_back_to_the_end_of_the_last_epoch():
    t = Trainer(MODEL, TRAIN.replace(epochs=50), TinyDataset())
    gen = t.run()
    for ev in gen:
        if ev.kind == "epoch":
            break
    good_step, good = t.step, state(t.model)
    t.control.set(lr=1000.0)
    diverged = None
    for ev in gen:
        if ev.kind == "status" and ev.status == "diverged":
            diverged = ev
            break
        if ev.kind == "epoch":  # an epoch whose held-out figures are finite is the new rollback point
            assert math.isfinite(ev.test_elbo)
            good_step, good = t.step, state(t.model)
    assert diverged is not None and f"rolled back to step {good_step}" in diverged.message
    assert "learning rate 1000" in diverged.message
    assert same(state(t.model), good) and finite(t.model)
    assert t.optimizer.param_groups[0]["lr"] == 1000.0, "the rate stays what the user set until they lower it"
    following = next(gen)
    if following.kind == "epoch":  # it showed at the end of an epoch, which ends with the rolled-back model
        assert math.isfinite(following.test_elbo) and np.all(np.isfinite(following.latents))
        following = next(gen)
    assert following.status == "paused"
    t.control.set(lr=1e-3)
    t.control.resume()
    losses = []
    for ev in gen:
        if ev.kind == "batch":
            losses.append(ev.loss)
        elif ev.kind == "epoch":
            break
    t.control.stop()
    assert list(gen)[-1].status == "stopped"
    assert losses and all(math.isfinite(v) for v in losses) and finite(t.model)


def test_a_non_finite_state_never_becomes_the_rollback_point():
    t = Trainer(MODEL, TRAIN, TinyDataset())
    initial = state(t.model)
    with torch.no_grad():
        next(t.model.parameters())[0].fill_(float("nan"))
    assert t._keep_good() is False
    t._roll_back()
    assert same(state(t.model), initial)


def test_a_periodic_copy_becomes_the_rollback_point_only_after_a_finite_loss(monkeypatch):
    import vae_core.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "ROLLBACK_EVERY", 3)
    t = Trainer(MODEL, TRAIN, TinyDataset())
    initial = state(t.model)
    real_step = t.optimizer.step
    calls = [0]

    def step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:  # finite but absurd weights: the next loss overflows
            with torch.no_grad():
                next(t.model.parameters()).fill_(1e30)
        return out

    t.optimizer.step = step
    for ev in t.run():
        if ev.kind == "status":
            break
    assert ev.status == "diverged" and "at step 4" in ev.message and "rolled back to step 0" in ev.message
    assert same(state(t.model), initial)


def test_weights_broken_by_the_last_step_of_an_epoch_are_rolled_back_before_it_is_evaluated():
    t = Trainer(MODEL, TRAIN, TinyDataset())
    real_step = t.optimizer.step
    calls = [0]

    def step_then_break(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls[0] += 1
        if calls[0] == t.n_batches:  # the last step of the first epoch
            with torch.no_grad():
                next(t.model.parameters()).fill_(float("inf"))
        return out

    t.optimizer.step = step_then_break
    events = []
    gen = t.run()
    for ev in gen:
        events.append(ev)
        if ev.kind == "status" and ev.status == "paused":
            break
    kinds = [(e.kind, getattr(e, "status", None)) for e in events if e.kind != "batch"]
    assert kinds == [("status", "diverged"), ("epoch", None), ("status", "paused")]
    diverged, epoch = events[-3], events[-2]
    assert "weights became NaN or infinite" in diverged.message and "rolled back to step 0" in diverged.message
    assert math.isfinite(epoch.test_elbo) and np.all(np.isfinite(epoch.latents))
    t.optimizer.step = real_step
    t.control.resume()
    rest = list(gen)
    assert rest[-1].status == "finished" and finite(t.model)


def test_boundary_hook_runs_in_the_training_thread_where_a_save_resumes_exactly(tmp_path):
    ds = TinyDataset()
    t = Trainer(MODEL, TRAIN, ds)
    seen = []
    path = tmp_path / "mid.ckpt"

    def hook(trainer, epoch_end):
        seen.append((threading.get_ident(), trainer.epoch, trainer.batch_position, epoch_end))
        if trainer.step == t.n_batches + 2:  # mid-way through the second epoch
            save_checkpoint(trainer, path)

    t.boundary_hook = hook
    worker = threading.Thread(target=lambda: list(t.run()))
    worker.start()
    worker.join(60)
    assert {s[0] for s in seen} == {worker.ident}
    assert sum(1 for s in seen if s[3]) == 3 and len(seen) == 3 * (t.n_batches + 1)
    assert all(s[2] == 0 for s in seen if s[3]), "epoch-end calls come after the epoch is complete"

    resumed = restore_trainer(load_checkpoint(path), ds)
    assert (resumed.epoch, resumed.batch_position) == (1, 2)
    list(resumed.run())
    assert same(state(resumed.model), state(t.model)) and resumed.history == t.history


# ---------------------------------------------------------------------------
# vae-explorer train and SIGTERM
# ---------------------------------------------------------------------------


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train(tmp_path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "vae_core", "train", "--dataset", "digits", "--epochs", "100000",
         "--out", str(tmp_path / "run.ckpt"), "--json", "--hidden", "256,128", "--threads", "1", *extra],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _complete_or_none(tmp_path):
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names in ([], ["run.ckpt"]), names
    if names:
        ck = load_checkpoint(tmp_path / "run.ckpt")
        assert ck.step == len(ck.history)
        return ck
    return None


def test_sigterm_mid_training_stops_at_once_with_a_complete_checkpoint(tmp_path):
    proc = _train(tmp_path)
    try:
        assert json.loads(proc.stdout.readline())["epoch"] == 1
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    # It stops after the current batch, not at the end of the run (the time bound is
    # loose: this checks the behaviour, and a loaded CI machine is slow).
    assert elapsed < 15.0, f"exit took {elapsed:.2f} s"
    ck = _complete_or_none(tmp_path)
    assert ck is not None and ck.epoch >= 1


@pytest.mark.parametrize("when", ["starting", "saving"])
def test_sigterm_at_any_moment_leaves_a_complete_checkpoint_or_none(tmp_path, when):
    proc = _train(tmp_path)
    try:
        if when == "starting":
            time.sleep(0.5)  # still importing or loading data
            proc.send_signal(signal.SIGTERM)
        else:
            assert json.loads(proc.stdout.readline())["epoch"] == 1
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.02)  # a second one while the final checkpoint is being written
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (143, -signal.SIGTERM), err
    assert "Traceback" not in err
    ck = _complete_or_none(tmp_path)
    if when == "saving":
        assert ck is not None, "the first signal was handled, so the checkpoint was written in full"
