"""The training loop: events, history, control from another thread, NaN rollback, reproducibility."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from vae_core import ConfigError, ModelConfig, TrainConfig
from vae_core.config import kl_weight
from vae_core.training import (
    BatchEvent,
    ChangeEvent,
    EpochEvent,
    History,
    ModelSnapshot,
    StatusEvent,
    Trainer,
    TrainControl,
)


class _Spec:
    def to_dict(self):
        return {"source": "tiny"}


@dataclass
class TinyDataset:
    """Just what the trainer reads from a ``vae_core.data.Dataset``."""

    images: np.ndarray
    labels: np.ndarray | None = None
    label_names: list | None = None
    name: str = "tiny"
    binarize: str = "none"
    spec: object = field(default_factory=_Spec)

    def __post_init__(self):
        n = self.images.shape[0]
        perm = np.random.default_rng(1).permutation(n).astype(np.int64)
        n_test = max(1, n // 5)
        self.test_idx, self.train_idx = perm[:n_test].copy(), perm[n_test:].copy()

    @property
    def n(self):
        return self.images.shape[0]

    @property
    def input_shape(self):
        return tuple(self.images.shape[1:])


def tiny_dataset(n=200, side=6, binarize="none", seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, side, side)).astype(np.float32)
    images[: n // 2, :, : side // 2] *= 0.2  # two kinds of image, so latents carry information
    return TinyDataset(images, labels=(np.arange(n) < n // 2).astype(np.int64), label_names=["a", "b"],
                       binarize=binarize)


MODEL = ModelConfig(input_shape=(1, 6, 6), latent_dim=2, hidden_dims=(16,))
TRAIN = TrainConfig(epochs=2, batch_size=32, seed=3)


def params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def same_params(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_events_history_and_latents():
    ds = tiny_dataset()
    t = Trainer(MODEL, TRAIN, ds)
    events = list(t.run())
    batches = [e for e in events if e.kind == "batch"]
    epochs = [e for e in events if e.kind == "epoch"]
    assert isinstance(events[-1], StatusEvent) and events[-1].status == "finished"
    n_batches = math.ceil(len(ds.train_idx) / 32)
    assert len(batches) == 2 * n_batches == t.step
    assert [b.step for b in batches] == list(range(1, t.step + 1))
    assert [b.batch for b in batches[:n_batches]] == list(range(n_batches))
    for b in batches:
        assert isinstance(b, BatchEvent) and b.kind == "batch" and b.n_batches == n_batches
        for name in ("recon", "kl", "loss", "beta", "lr", "samples_per_s"):
            assert type(getattr(b, name)) is float
        assert b.loss == pytest.approx(b.recon + b.kl, rel=1e-5)  # beta = 1, no free bits
    with pytest.raises(dataclasses.FrozenInstanceError):
        batches[0].loss = 0.0

    assert [e.epoch for e in epochs] == [1, 2]
    last = epochs[-1]
    assert isinstance(last, EpochEvent) and last.kind == "epoch"
    assert last.latents.shape == (ds.n, 2) and last.latents.dtype == np.float32
    assert last.latent_logvar.shape == (ds.n, 2)
    assert last.test_elbo == pytest.approx(-(last.test_recon + last.test_kl))
    assert last.kl_per_dim.shape == (2,) and last.kl_per_dim.sum() == pytest.approx(last.test_kl, rel=1e-6)
    # Latents are mu of every example, in dataset order, and the event owns its arrays.
    with torch.no_grad():
        mu, logvar = t.model.encode(torch.from_numpy(ds.images))
    np.testing.assert_allclose(last.latents, mu.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last.latent_logvar, logvar.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.shares_memory(last.latents, t.latents)

    arr = t.history.arrays()
    assert set(arr) == {"step", "recon", "kl", "loss", "beta", "lr"}
    assert np.array_equal(arr["step"], np.arange(1, t.step + 1))
    assert np.array_equal(arr["loss"], [b.loss for b in batches])
    assert [e["epoch"] for e in t.history.epochs] == [1, 2]
    assert t.history.epochs[-1]["test_elbo"] == last.test_elbo
    # The test-split figures match a fresh evaluation (evaluation is deterministic).
    ev = t.evaluate("test")
    assert ev["elbo"] == last.test_elbo and ev["active_units"] == last.active_units


def test_active_units_follow_burda():
    ds = tiny_dataset()
    t = Trainer(MODEL, TRAIN.replace(epochs=3), ds)
    list(t.run())
    ev = t.evaluate("test")
    with torch.no_grad():
        mu, _ = t.model.encode(torch.from_numpy(ds.images[ds.test_idx]))
    expected = int((mu.double().var(0, unbiased=False) > 0.01).sum())
    assert ev["active_units"] == expected
    ev2 = t.evaluate("test", iwae_k=20)
    assert math.isfinite(ev2["iwae"]) and ev2["iwae"] >= ev2["elbo"] - 0.5


def test_reproducible_and_independent_of_global_rng():
    ds = tiny_dataset()
    state = torch.random.get_rng_state()
    a = Trainer(MODEL, TRAIN, ds)
    assert torch.equal(state, torch.random.get_rng_state()), "building the model must not touch the global RNG"
    list(a.run())

    torch.manual_seed(12345)
    b = Trainer(MODEL, TRAIN, ds)
    for ev in b.run():
        torch.rand(7)  # other code drawing from the global generator between batches
    assert same_params(params(a.model), params(b.model))
    assert a.history == b.history

    c = Trainer(MODEL, TRAIN.replace(seed=4), ds)
    list(c.run())
    assert not same_params(params(a.model), params(c.model))


def test_dynamic_binarisation_is_reproducible_and_used():
    ds_dyn = tiny_dataset(binarize="dynamic")
    a, b = Trainer(MODEL, TRAIN, ds_dyn), Trainer(MODEL, TRAIN, ds_dyn)
    list(a.run())
    list(b.run())
    assert same_params(params(a.model), params(b.model))
    grey = Trainer(MODEL, TRAIN, tiny_dataset())
    list(grey.run())
    assert not same_params(params(a.model), params(grey.model))
    # Evaluation sees one fixed binary draw of the test images.
    assert set(np.unique(a._x_test_eval[:].numpy())) <= {0.0, 1.0}
    assert a.evaluate()["elbo"] == a.evaluate()["elbo"]


def test_stop_takes_effect_within_one_batch_and_run_continues_after_reset():
    t = Trainer(MODEL, TRAIN, tiny_dataset())
    seen = []
    for ev in t.run():
        seen.append(ev)
        if ev.kind == "batch" and ev.step == 3:
            t.control.stop()
    assert seen[-1].kind == "status" and seen[-1].status == "stopped"
    assert seen[-2].kind == "batch" and seen[-2].step == 3 and t.step == 3
    assert t.control.stopped
    assert [e.status for e in t.run() if e.kind == "status"] == ["stopped"]  # stop stays until reset
    t.control.reset()
    rest = list(t.run())
    assert rest[-1].status == "finished" and t.epoch == 2


def test_live_changes_are_applied_at_batch_boundary_and_recorded():
    t = Trainer(MODEL, TRAIN.replace(epochs=1), tiny_dataset())
    gen = t.run()
    events = []
    for ev in gen:
        events.append(ev)
        if ev.kind == "batch" and ev.step == 2:
            t.control.set(beta=4.0, lr=5e-4)
    changes = [e for e in events if e.kind == "change"]
    assert [(c.name, c.old, c.new, c.step) for c in changes] == [("beta", 1.0, 4.0, 2), ("lr", 1e-3, 5e-4, 2)]
    assert all(isinstance(c, ChangeEvent) for c in changes)
    after = [e for e in events if e.kind == "batch" and e.step > 2]
    assert all(e.beta == 4.0 and e.lr == 5e-4 for e in after)
    assert t.optimizer.param_groups[0]["lr"] == 5e-4
    assert t.train_config.beta == 4.0 and t.settings["lr"] == 5e-4
    assert t.history.changes == [
        {"step": 2, "name": "beta", "old": 1.0, "new": 4.0},
        {"step": 2, "name": "lr", "old": 1e-3, "new": 5e-4},
    ]
    assert t.history.arrays()["beta"][-1] == 4.0


@pytest.mark.parametrize(
    "bad", [{"beta": -1}, {"lr": 0}, {"lr": float("nan")}, {"warmup": "cosine"}, {"warmup_epochs": 0},
            {"free_bits": -0.5}, {"batch_size": 64}, {"beta": "x"}],
)
def test_control_rejects_bad_values(bad):
    c = TrainControl()
    with pytest.raises(ConfigError):
        c.set(**bad)
    assert c.pending_changes() == {}


def test_warmup_sets_the_kl_weight_of_every_batch():
    cfg = TRAIN.replace(epochs=2, warmup="linear", warmup_epochs=2, beta=2.0)
    t = Trainer(MODEL, cfg, tiny_dataset())
    batches = [e for e in t.run() if e.kind == "batch"]
    nb = batches[0].n_batches
    for e in batches:
        assert e.beta == kl_weight(2.0, "linear", 2, e.epoch + e.batch / nb)
    assert batches[0].beta == 0.0 and batches[-1].beta > 1.5


def test_pause_resume_and_stop_from_another_thread():
    control = TrainControl()
    t = Trainer(MODEL, TRAIN.replace(epochs=50), tiny_dataset(), control=control)
    statuses = []
    steps_at_pause = []

    def consume():
        for ev in t.run():
            if ev.kind == "status":
                statuses.append(ev.status)
                if ev.status == "paused":
                    steps_at_pause.append(t.step)

    worker = threading.Thread(target=consume)
    worker.start()
    while t.step < 3:
        time.sleep(0.005)
    control.pause()
    deadline = time.monotonic() + 10
    while "paused" not in statuses and time.monotonic() < deadline:
        time.sleep(0.005)
    assert control.paused and statuses == ["paused"]
    step = t.step
    time.sleep(0.3)
    assert t.step == step, "a paused trainer must not step"
    control.set(beta=0.5)
    control.resume()
    while t.step < step + 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert statuses == ["paused", "resumed"]
    control.pause()
    while statuses.count("paused") < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    control.stop()  # wakes the paused trainer
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert statuses == ["paused", "resumed", "paused", "stopped"]
    assert t.epoch < 50
    assert {"step": step, "name": "beta", "old": 1.0, "new": 0.5} in t.history.changes


def test_nan_loss_rolls_back_pauses_and_resumes():
    t = Trainer(MODEL, TRAIN.replace(lr=10.0, epochs=2), tiny_dataset())
    gen = t.run()
    diverged = None
    for ev in gen:
        if ev.kind == "status" and ev.status == "diverged":
            diverged = ev
            break
        assert ev.kind == "batch" and math.isfinite(ev.loss)
    assert diverged is not None
    assert "NaN" in diverged.message or "infinite" in diverged.message
    assert "rolled back to step 0" in diverged.message and "learning rate" in diverged.message
    assert t.control.paused
    # Rolled back to the initial weights (the last good copy), all finite.
    fresh = Trainer(MODEL, TRAIN.replace(lr=10.0, epochs=2), tiny_dataset())
    assert same_params(params(t.model), params(fresh.model))
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert t.history.changes[-1]["name"] == "rollback" and t.history.changes[-1]["new"] == 0

    assert next(gen).status == "paused"
    t.control.set(lr=1e-3)
    t.control.resume()
    rest = list(gen)
    assert [e.status for e in rest if e.kind == "status"] == ["resumed", "finished"]
    assert all(math.isfinite(e.loss) for e in rest if e.kind == "batch")
    assert t.epoch == 2 and all(torch.isfinite(p).all() for p in t.model.parameters())


def test_snapshot_is_an_independent_cpu_copy():
    t = Trainer(MODEL, TRAIN.replace(epochs=1), tiny_dataset())
    list(t.run())
    snap = t.snapshot()
    assert isinstance(snap, ModelSnapshot) and snap.step == t.step and snap.epoch == 1
    before = {k: v.clone() for k, v in snap.state.items()}
    list(t.run(epochs=1))
    assert all(torch.equal(before[k], v) for k, v in snap.state.items())
    model = snap.build_model()
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_run_epochs_argument_counts_more_epochs():
    t = Trainer(MODEL, TRAIN.replace(epochs=1), tiny_dataset())
    list(t.run())
    assert t.epoch == 1
    assert [e.status for e in t.run() if e.kind == "status"] == ["finished"]  # target already reached
    list(t.run(epochs=2))
    assert t.epoch == 3 and len(t.history.epochs) == 3


def test_num_threads_is_set_in_the_running_thread():
    before = torch.get_num_threads()
    seen = []

    def work():
        t = Trainer(MODEL, TRAIN.replace(epochs=1, num_threads=1), tiny_dataset())
        for _ in t.run():
            seen.append(torch.get_num_threads())
            break

    th = threading.Thread(target=work)
    th.start()
    th.join()
    torch.set_num_threads(before)
    assert seen == [1]


def test_wrong_input_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="6x6"):
        Trainer(ModelConfig(input_shape=(1, 8, 8), hidden_dims=(8,)), TRAIN, tiny_dataset())


def test_history_growth_and_round_trip():
    h = History()
    for i in range(5000):
        h.append_step(i + 1, float(i), 0.5, i + 0.5, 1.0, 1e-3)
    h.add_epoch({"epoch": 1, "step": 5000, "train_loss": 1.0, "test_elbo": -2.0, "test_recon": 1.5,
                 "test_kl": 0.5, "active_units": 1, "kl_per_dim": [0.5, 0.0]})
    h.add_change(10, "beta", 1.0, 2.0)
    arr = h.arrays()
    assert len(h) == 5000 and arr["step"][-1] == 5000 and arr["recon"][4999] == 4999.0
    assert np.array_equal(h.arrays(start=4990)["step"], np.arange(4991, 5001))
    assert History.from_dict(h.to_dict()) == h
    assert History.from_dict(h.to_dict(include_arrays=False), h.table()) == h
    assert History.from_dict(h.to_dict(include_arrays=False)) != h


def test_training_thread_flushes_subnormal_floats():
    # Subnormals halve CPU throughput once they appear in the weights; the trainer's thread flushes them.
    seen = {}

    def work():
        seen["supported"] = torch.set_flush_denormal(False)  # start from the CPU's default
        tiny = torch.tensor([1e-39], dtype=torch.float32)
        seen["before"] = float((tiny * 1.0).item())
        trainer = Trainer(MODEL, TRAIN, tiny_dataset())
        for _ in trainer.run(1):
            pass
        seen["after"] = float((tiny * 1.0).item())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if not seen["supported"]:  # pragma: no cover - CPUs without the flag
        pytest.skip("this CPU cannot flush subnormals")
    assert seen["before"] != 0.0
    assert seen["after"] == 0.0


def test_state_moves_a_run_to_another_trainer_and_is_a_private_copy():
    ds = tiny_dataset()
    straight = Trainer(MODEL, TRAIN, ds)
    list(straight.run())
    t = Trainer(MODEL, TRAIN, ds)
    for ev in t.run():
        if ev.kind == "batch" and ev.step == 7:  # mid-way through the second epoch
            t.control.stop()
    state = t.get_state()
    before = {k: v.clone() for k, v in state.model.items()}
    list(t.run())  # the original goes on; the state must not follow it
    assert all(torch.equal(before[k], v) for k, v in state.model.items())
    assert len(state.history) == 7 and state.step == 7 and state.perm is not None
    for _ in range(2):  # a state can be used again: the trainers it went to share none of its tensors
        other = Trainer(MODEL, TRAIN, ds)
        other.set_state(state)
        assert (other.epoch, other.step, other.batch_position) == (1, 7, state.batch)
        list(other.run())
        assert same_params(params(other.model), params(straight.model))
        assert other.history == straight.history


def test_training_modules_never_import_checkpoint():
    """checkpoint builds on training (it owns the file format); training never reaches back."""
    import ast
    from pathlib import Path

    import vae_core.training

    for path in Path(vae_core.training.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert not any(n.split(".")[-1] == "checkpoint" for n in names), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("vae_core.checkpoint") for a in node.names), path


def test_every_live_setting_can_be_set_and_nothing_else():
    from vae_core.config import LIVE_SETTINGS

    values = {"beta": 0.5, "lr": 2e-3, "warmup": "linear", "warmup_epochs": 3, "free_bits": 0.1}
    assert set(values) == set(LIVE_SETTINGS)
    c = TrainControl()
    c.set(**values)
    assert c.pending_changes() == values
    assert tuple(Trainer(MODEL, TRAIN, tiny_dataset()).settings) == LIVE_SETTINGS
    with pytest.raises(ConfigError, match="settable: " + ", ".join(LIVE_SETTINGS)):
        c.set(epochs=3)
