"""Run folders: the writer's files and a follower polling them (half-written lines, replaced checkpoints)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from vae_core import ModelConfig, TrainConfig
from vae_core.checkpoint import checkpoint_bytes, load_checkpoint
from vae_core.data import DatasetSpec, load_dataset
from vae_core.distributed import process_info
from vae_core.errors import CheckpointError
from vae_core import runs
from vae_core.runs import CONFIG, CONFIG_LOCK, EVENTS, LATEST, RunFollower, RunWriter, config_lock, read_run, set_run_name
from vae_core.training import Trainer

RANKS = [{"rank": 0, "host": "here", "pid": 1, "device": "cpu"}]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = (rng.random((120, 6, 6)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=np.arange(120) % 2)
    return load_dataset(DatasetSpec.from_dict({"source": str(path)}))


def make_trainer(dataset, **train):
    model = ModelConfig(input_shape=dataset.input_shape, latent_dim=2, hidden_dims=(8,))
    config = TrainConfig(epochs=3, batch_size=32, seed=2, device="cpu", **train)
    return Trainer(model, config, dataset)


def append(path, data: bytes):
    with open(path, "ab") as f:
        f.write(data)


def test_a_follower_sees_every_event_and_each_new_checkpoint_as_the_run_writes_them(dataset, tmp_path):
    trainer = make_trainer(dataset)
    writer = RunWriter(tmp_path, trainer, keep=2, batch_interval_s=0.0)
    follower = RunFollower(tmp_path)
    assert follower.poll() == ([], None)
    writer.start(RANKS)
    config = json.loads((tmp_path / CONFIG).read_text())
    assert config["format"] == "latent-explorer-run" and config["world_size"] == 1
    assert config["model_config"] == trainer.model_config.to_dict()
    assert config["dataset"]["n"] == 120 and config["ranks"] == RANKS

    seen, checkpoints = [], []
    trainer.control.set(beta=0.5)
    for ev in trainer.run():
        writer.record(ev)
        events, new = follower.poll()
        seen += events
        if new is not None:
            ckpt = follower.load_latest()
            checkpoints.append((ckpt.epoch, ckpt.step))
            assert ev.kind == "epoch" and ckpt.epoch == ev.epoch
    writer.finish()
    events, new = follower.poll()
    seen += events
    assert new is None, "a finished run's last epoch checkpoint is not written again"

    kinds = [e["kind"] for e in seen]
    assert seen[0]["status"] == "started" and seen[0]["ranks"] == RANKS and seen[0]["resumed_from"] is None
    assert kinds.count("batch") == trainer.step and kinds.count("epoch") == 3
    assert kinds[1] == "change" and seen[1]["name"] == "beta" and seen[1]["new"] == 0.5
    assert seen[-1] == {**seen[-1], "kind": "status", "status": "finished", "step": trainer.step}
    assert all(isinstance(e["time"], float) for e in seen)
    batches = [e for e in seen if e["kind"] == "batch"]
    assert [b["step"] for b in batches] == list(range(1, trainer.step + 1)) and all(b["steps"] == 1 for b in batches)
    assert batches[-1]["loss"] == pytest.approx(trainer.history.table()[-1, 3])
    epochs = [e for e in seen if e["kind"] == "epoch"]
    assert [e["test_elbo"] for e in epochs] == pytest.approx([r["test_elbo"] for r in trainer.history.epochs])
    assert [e["kept"] for e in epochs] == ["epoch-0001.ckpt", "epoch-0002.ckpt", "epoch-0003.ckpt"]
    assert checkpoints == [(e, e * trainer.n_batches) for e in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.glob("epoch-*.ckpt")) == ["epoch-0002.ckpt", "epoch-0003.ckpt"]

    record = read_run(tmp_path)
    assert record.events == seen and record.config == config and record.status == "finished"
    assert record.checkpoint == tmp_path / LATEST and record.updated == seen[-1]["time"]
    assert [p.name for p in record.epoch_checkpoints] == ["epoch-0002.ckpt", "epoch-0003.ckpt"]


def test_batch_lines_summarise_the_batches_between_them_and_a_stop_saves_the_latest_checkpoint(dataset, tmp_path):
    trainer = make_trainer(dataset)
    writer = RunWriter(tmp_path, trainer, batch_interval_s=3600.0)
    writer.start(RANKS)
    for ev in trainer.run():
        writer.record(ev)
        if ev.kind == "batch" and ev.step == trainer.n_batches + 2:
            trainer.control.stop()
    writer.finish()
    events = read_run(tmp_path).events
    batches = [e for e in events if e["kind"] == "batch"]
    # The first batch is written at once; the rest are summed up until the next epoch or status line.
    steps = trainer.history.table()
    assert [(b["step"], b["steps"]) for b in batches] == [(1, 1), (trainer.n_batches, trainer.n_batches - 1),
                                                          (trainer.n_batches + 2, 2)]
    assert batches[1]["loss"] == pytest.approx(steps[1 : trainer.n_batches, 3].mean())
    assert batches[2]["recon"] == pytest.approx(steps[-2:, 1].mean())
    assert [e.get("status") for e in events if e["kind"] == "status"] == ["started", "stopped"]
    ckpt = load_checkpoint(tmp_path / LATEST)
    assert (ckpt.epoch, ckpt.step) == (1, trainer.n_batches + 2)
    assert not list(tmp_path.glob("epoch-*.ckpt"))


def test_non_finite_numbers_are_written_as_null(dataset, tmp_path):
    trainer = make_trainer(dataset)
    writer = RunWriter(tmp_path, trainer)
    writer.record(type("Change", (), {"kind": "change", "step": 3, "name": "beta", "old": math.nan, "new": np.float32(2)})())
    writer.close()
    text = (tmp_path / EVENTS).read_text()
    assert "NaN" not in text
    line = json.loads(text)
    assert line["old"] is None and line["new"] == 2.0


def test_a_half_written_last_line_waits_for_the_rest_and_a_broken_line_is_skipped(tmp_path):
    path = tmp_path / EVENTS
    follower = RunFollower(tmp_path)
    append(path, b'{"kind": "status", "status": "started"}\n{"kind": "batch", "st')
    events, _ = follower.poll()
    assert events == [{"kind": "status", "status": "started"}]
    assert follower.poll() == ([], None)
    append(path, b'ep": 1}\nnot json at all\n[1, 2]\n{"kind": "batch", "step": 2}\n{"kind"')
    events, _ = follower.poll()
    assert events == [{"kind": "batch", "step": 1}, {"kind": "batch", "step": 2}]
    assert follower.skipped_lines == 2
    append(path, b': "epoch"}\n')
    assert follower.poll()[0] == [{"kind": "epoch"}]


def test_reading_starts_again_when_the_events_file_is_replaced_or_shrinks(tmp_path):
    path = tmp_path / EVENTS
    follower = RunFollower(tmp_path)
    append(path, b'{"n": 1}\n{"n": 2}\n')
    assert follower.poll()[0] == [{"n": 1}, {"n": 2}]
    other = tmp_path / "other"
    other.write_bytes(b'{"n": 10}\n{"n": 11}\n{"n": 12}\n')
    os.replace(other, path)
    assert follower.poll()[0] == [{"n": 10}, {"n": 11}, {"n": 12}]
    with open(path, "wb") as f:  # truncated in place
        f.write(b'{"n": 20}\n')
    assert follower.poll()[0] == [{"n": 20}]


def test_a_replaced_checkpoint_is_noticed_once_and_a_missing_one_is_not_an_error(dataset, tmp_path):
    trainer = make_trainer(dataset)
    follower = RunFollower(tmp_path)
    with pytest.raises(CheckpointError, match="cannot open checkpoint"):
        RunFollower(tmp_path, retry_delay_s=0.0).load_latest()
    data = checkpoint_bytes(trainer)
    (tmp_path / LATEST).write_bytes(data)
    assert follower.poll() == ([], tmp_path / LATEST)
    assert follower.poll() == ([], None)
    # The same bytes under a new inode (an atomic rename) are a new checkpoint.
    (tmp_path / "next").write_bytes(data)
    os.replace(tmp_path / "next", tmp_path / LATEST)
    assert follower.poll() == ([], tmp_path / LATEST)
    assert follower.load_latest().step == 0
    assert follower.poll() == ([], None)


def test_a_checkpoint_swapped_while_it_is_read_is_read_again(dataset, tmp_path, monkeypatch):
    import vae_core.runs as runs

    trainer = make_trainer(dataset)
    old = checkpoint_bytes(trainer)
    for ev in trainer.run(epochs=1):
        pass
    new = checkpoint_bytes(trainer)
    latest = tmp_path / LATEST
    latest.write_bytes(old)
    follower = RunFollower(tmp_path, retry_delay_s=0.0)
    assert follower.poll()[1] == latest
    real_read = runs._read_file
    reads = []

    def read_while_replaced(path):
        # A copy that is not an atomic rename: the reader gets the first half of the new
        # file, and the rest has landed by the time it reads again.
        data, sig = real_read(path)
        reads.append(len(data))
        if len(reads) == 1:
            latest.write_bytes(new)
            return new[: len(new) // 2], sig
        return data, sig

    monkeypatch.setattr(runs, "_read_file", read_while_replaced)
    ckpt = follower.load_latest()
    assert len(reads) == 2 and (ckpt.epoch, ckpt.step) == (1, trainer.step)
    assert torch.equal(ckpt.model_state["encoder.0.weight"], trainer.model.state_dict()["encoder.0.weight"])
    assert follower.poll() == ([], None), "the checkpoint loaded is the one on disk"

    def always_half(path):
        data, sig = real_read(path)
        return data[: len(data) // 2], sig

    monkeypatch.setattr(runs, "_read_file", always_half)
    with pytest.raises(CheckpointError, match="truncated"):
        follower.load_latest()


def test_read_run_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        read_run(tmp_path)
    (tmp_path / CONFIG).write_text("{broken")
    record = read_run(tmp_path)
    assert record.config is None and record.events == [] and record.status is None and record.updated is None
    assert record.checkpoint is None


def test_a_rename_while_a_run_starts_is_not_lost(dataset, tmp_path, monkeypatch):
    """set_run_name lands between start's read of config.json and its replace: the new name survives."""
    trainer = make_trainer(dataset)
    with RunWriter(tmp_path, trainer) as w:
        w.start(RANKS)
    set_run_name(tmp_path, "first")
    real_write, real_try = runs.atomic_write_bytes, runs._try_lock
    contended = threading.Event()
    renamer: list[threading.Thread] = []
    errors: list[BaseException] = []

    def rename() -> None:
        try:
            set_run_name(tmp_path, "second")
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    def try_lock(fd):
        locked = real_try(fd)
        if not locked:
            contended.set()
        return locked

    def write(path, data):
        if not renamer:  # start has read config.json ("first") and is about to replace it
            t = threading.Thread(target=rename)
            renamer.append(t)
            t.start()
            # Without the lock the rename completes now, and the replace below would undo it.
            while not contended.is_set() and t.is_alive():
                t.join(0.01)
        real_write(path, data)

    monkeypatch.setattr(runs, "_try_lock", try_lock)
    monkeypatch.setattr(runs, "atomic_write_bytes", write)
    with RunWriter(tmp_path, trainer) as w:
        w.start(RANKS)
    renamer[0].join(10)
    assert not errors and not renamer[0].is_alive()
    assert contended.is_set(), "the rename waited for the start's write"
    config = json.loads((tmp_path / CONFIG).read_text())
    assert config["name"] == "second" and config["format"] == "latent-explorer-run"
    assert not (tmp_path / CONFIG_LOCK).exists(), "the lock file goes with the lock"


def test_concurrent_renames_and_starts_leave_a_valid_config_with_the_last_name(dataset, tmp_path):
    trainer = make_trainer(dataset)
    with RunWriter(tmp_path, trainer) as w:
        w.start(RANKS)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def renames(k: int) -> None:
        try:
            barrier.wait()
            for i in range(15):
                set_run_name(tmp_path, f"name {k}-{i}")
        except BaseException as exc:
            errors.append(exc)

    def starts() -> None:
        try:
            barrier.wait()
            for _ in range(10):
                with RunWriter(tmp_path, trainer) as w:
                    w.start(RANKS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=renames, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=starts) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    set_run_name(tmp_path, "last")
    with RunWriter(tmp_path, trainer) as w:
        w.start(RANKS)
    config = json.loads((tmp_path / CONFIG).read_text())
    assert config["name"] == "last" and config["format"] == "latent-explorer-run"
    assert config["model_config"] == trainer.model_config.to_dict()
    assert sorted(os.listdir(tmp_path)) == [CONFIG, EVENTS], "no lock or temporary file is left"


def test_a_lock_left_by_a_crashed_holder_is_taken_over_and_a_held_one_times_out(tmp_path, monkeypatch):
    (tmp_path / CONFIG).write_text(json.dumps({"format": "latent-explorer-run", "format_version": 1}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vae_core.runs import config_lock\n"
         "with config_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()  # dies holding the lock, leaving its file
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (tmp_path / CONFIG_LOCK).exists()
    set_run_name(tmp_path, "after a crash")
    assert read_run(tmp_path).name == "after a crash" and not (tmp_path / CONFIG_LOCK).exists()

    monkeypatch.setattr(runs, "LOCK_TIMEOUT_S", 0.2)
    with config_lock(tmp_path):  # another writer holds it
        with pytest.raises(OSError, match=r"\.config\.json\.lock.*0\.2 s"):
            set_run_name(tmp_path, "blocked")
    assert read_run(tmp_path).name == "after a crash"
    set_run_name(tmp_path, "free again")
    assert read_run(tmp_path).name == "free again"


def test_process_info_names_this_process():
    info = process_info(3, torch.device("cpu"))
    assert info["rank"] == 3 and info["pid"] == os.getpid() and info["device"] == "cpu" and info["host"]
