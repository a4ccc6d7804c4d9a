"""Data-parallel training on two CPU processes (Gloo): the one-process run, stops, restarts and resumes on any number.

The runs start as a user starts them, ``python -m vae_core train --nproc 2
...`` (torch.distributed.run on this machine), except the engine-level test,
which spawns two processes that build trainers on a process group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vae_core.checkpoint import load_checkpoint, restore_trainer, save_checkpoint
from vae_core.cli import main
from vae_core.data import DatasetSpec, load_dataset
from vae_core.distributed import init_world, shard_bounds, shutdown
from vae_core.runs import LATEST, RunFollower, read_run
from vae_core.training import Trainer

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def start_two(args, log: Path) -> subprocess.Popen:
    """``python -m vae_core train --nproc 2 <args>`` in a session of its own, its output in ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vae_core", "train", "--nproc", "2", *map(str, args)],
            stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=str(log.parent), start_new_session=True,
        )


def finish(proc: subprocess.Popen, log: Path, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """Wait for a started run (killing its whole session when it overruns); (exit status, its output)."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the run took over {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")
    return rc, log.read_text(errors="replace")


def follow_until(proc, follower: RunFollower, seen: list, done, log: Path, timeout: float = TIMEOUT_S) -> None:
    """Poll a run folder into ``seen`` until ``done(seen)``; fails when the run ends first or overruns."""
    deadline = time.monotonic() + timeout
    while not done(seen):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run ended or overran before the moment looked for:\n{log.read_text(errors='replace')[-4000:]}")
        seen += follower.poll()[0]
        time.sleep(0.05)


def max_weight_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def dataset_of(ckpt):
    return load_dataset(DatasetSpec.from_dict(ckpt.dataset_spec))


def one_process_trainer(ckpt):
    """The one-process trainer of the run that wrote ``ckpt``, from its first step."""
    return Trainer(ckpt.model_config, ckpt.train_config.replace(device="cpu", num_threads=1), dataset_of(ckpt))


def run_until(trainer, step: int) -> list:
    """Run ``trainer`` (continuing after any earlier stop) until it has made ``step`` steps; its events."""
    trainer.control.reset()
    events = []
    for ev in trainer.run():
        events.append(ev)
        if ev.kind == "batch" and ev.step >= step:
            trainer.control.stop()
    assert trainer.step == step
    return events


def test_the_slices_of_a_batch_partition_it_in_rank_order():
    for size in range(1, 6):
        for n in range(0, 40):
            bounds = [shard_bounds(n, r, size) for r in range(size)]
            assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("args, message", [
    (["--keep", "2"], "give --run-dir"),
    (["--max-restarts", "1"], "give --nproc"),
    (["--nproc", "0"], "--nproc must be at least 1"),
    (["--nproc", "2", "--max-restarts", "-1"], "--max-restarts must be >= 0"),
])
def test_launch_options_are_checked_before_any_process_starts(args, message, capsys):
    assert main(["train", "--dataset", "digits", *args]) == 2
    assert message in capsys.readouterr().err


def test_two_processes_train_the_one_process_model_and_their_checkpoint_continues_on_one(tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    args = ["--run-dir", run, "--keep", "2", "--dataset", "digits", "--binarize", "dynamic", "--hidden", "32",
            "--batch-size", "101", "--mc-samples", "2", "--free-bits", "0.05", "--seed", "5", "--epochs", "2",
            "--max-steps", "20", "--threads", "1", "--json"]
    rc, out = finish(start_two(args, log), log)
    assert rc == 0, out
    two = load_checkpoint(run / LATEST)
    assert (two.epoch, two.step) == (1, 20)

    one = one_process_trainer(two)
    # 1617 training examples in batches of 101: the last batch of an epoch holds one
    # example, so one rank's slice of it is empty.
    assert one.n_batches == 17 and one.n_train % 101 == 1
    events = run_until(one, 20)
    assert max_weight_diff(two.model_state, one.model.state_dict()) <= 1e-4
    np.testing.assert_allclose(two.history.table(), one.history.table(), rtol=1e-5, atol=1e-5)
    # Only rank 0 prints: one JSON line for the one epoch done.
    assert [json.loads(line)["epoch"] for line in out.splitlines() if line.startswith("{")] == [1]

    record = read_run(run)
    epoch_lines = [e for e in record.events if e["kind"] == "epoch"]
    epoch_one = [e for e in events if e.kind == "epoch"]
    assert len(epoch_lines) == len(epoch_one) == 1
    assert abs(epoch_lines[0]["test_elbo"] - epoch_one[0].test_elbo) <= 0.05
    assert record.config["world_size"] == 2 and len({r["pid"] for r in record.config["ranks"]}) == 2
    assert [e["status"] for e in record.events if e["kind"] == "status"] == ["started", "stopped"]
    assert [p.name for p in record.epoch_checkpoints] == ["epoch-0001.ckpt"]
    assert load_checkpoint(record.epoch_checkpoints[0]).step == 17

    # Written by two processes, continued on one: the run goes on as the one-process run does.
    cont = restore_trainer(two, dataset_of(two))
    run_until(cont, 34)
    run_until(one, 34)
    assert cont.epoch == one.epoch == 2
    assert max_weight_diff(cont.model.state_dict(), one.model.state_dict()) <= 1e-4


def test_a_one_process_checkpoint_continues_on_two_and_sigterm_stops_both_with_a_checkpoint(tmp_path):
    dataset = load_dataset(DatasetSpec.from_dict({"source": "digits"}))
    from vae_core import ModelConfig, TrainConfig

    one = Trainer(ModelConfig(input_shape=dataset.input_shape, latent_dim=2, hidden_dims=(32,)),
                  TrainConfig(epochs=400, batch_size=64, seed=1, device="cpu", num_threads=1), dataset)
    run_until(one, 10)
    start = tmp_path / "start.ckpt"
    save_checkpoint(one, start)

    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    proc = start_two(["--resume", start, "--run-dir", run, "--threads", "1"], log)
    follower, seen = RunFollower(run), []
    follow_until(proc, follower, seen, lambda s: sum(e["kind"] == "batch" for e in s) >= 2, log)
    proc.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler or `kill` does
    rc, out = finish(proc, log)
    assert rc == 143, out
    assert "Traceback" not in out, "every rank stopped before the same batch"
    seen += follower.poll()[0]
    assert seen[0]["status"] == "started" and seen[0]["step"] == 10 and seen[0]["resumed_from"] == str(start)
    assert seen[-1]["kind"] == "status" and seen[-1]["status"] == "stopped"
    stopped = load_checkpoint(run / LATEST)
    assert stopped.step == seen[-1]["step"] > 10

    run_until(one, stopped.step)
    assert max_weight_diff(stopped.model_state, one.model.state_dict()) <= 1e-4
    np.testing.assert_allclose(stopped.history.table(), one.history.table(), rtol=1e-5, atol=1e-5)


def test_a_killed_process_restarts_the_group_which_continues_from_the_latest_checkpoint(tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    args = ["--max-restarts", "1", "--run-dir", run, "--dataset", "mnist", "--hidden", "128,64",
            "--batch-size", "64", "--epochs", "2", "--threads", "1", "--json"]
    proc = start_two(args, log)
    follower, seen = RunFollower(run), []

    def mid_second_epoch(events):
        ends = [e["step"] for e in events if e["kind"] == "epoch"]
        return bool(ends) and any(e["kind"] == "batch" and e["step"] > ends[0] for e in events)

    follow_until(proc, follower, seen, mid_second_epoch, log)
    first_epoch_end = next(e["step"] for e in seen if e["kind"] == "epoch")
    os.kill(seen[0]["ranks"][1]["pid"], signal.SIGKILL)
    seen += follower.poll()[0]
    lost_from = max(e["step"] for e in seen if e["kind"] == "batch")
    rc, out = finish(proc, log)
    assert rc == 0, out
    seen += follower.poll()[0]

    starts = [e for e in seen if e.get("status") == "started"]
    assert [s["restart"] for s in starts] == [0, 1]
    again = starts[1]
    assert again["resumed_from"] == str(run / LATEST)
    # The new group continued from the epoch's checkpoint: only the steps after it were lost.
    assert again["step"] == first_epoch_end < lost_from
    assert [s["pid"] for s in again["ranks"]] != [s["pid"] for s in starts[0]["ranks"]]
    final = load_checkpoint(run / LATEST)
    assert (final.epoch, final.step) == (2, 2 * first_epoch_end)
    assert seen[-1]["status"] == "finished"
    assert [e["epoch"] for e in seen if e["kind"] == "epoch"] == [1, 2]

    one = one_process_trainer(final)
    run_until(one, final.step)
    assert max_weight_diff(final.model_state, one.model.state_dict()) <= 1e-4


# ---------------------------------------------------------------------------
# Engine level: two processes building trainers on a process group
# ---------------------------------------------------------------------------


def _engine_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from vae_core import ModelConfig, TrainConfig

    world = init_world("cpu")
    dataset = load_dataset(DatasetSpec.from_dict({"source": "digits"}))
    model = ModelConfig(input_shape=dataset.input_shape, latent_dim=2, hidden_dims=(16,))
    config = TrainConfig(epochs=3, batch_size=64, seed=4, device="cpu", num_threads=1)
    results = {}

    trainer = Trainer(model, config, dataset, world=world)
    statuses = []
    for ev in trainer.run():
        if ev.kind == "batch" and rank == 1 and ev.step == 7:
            trainer.control.stop()  # asked of one rank only
        elif ev.kind == "status":
            statuses.append(ev.status)
    results["stop"] = {"step": trainer.step, "statuses": statuses}

    trainer = Trainer(model, config.replace(lr=1000.0), dataset, world=world)
    statuses, messages = [], []
    for ev in trainer.run():
        if ev.kind == "status":
            statuses.append(ev.status)
            messages.append(ev.message)
            if ev.status == "diverged":
                trainer.control.stop()
    results["diverge"] = {
        "step": trainer.step, "statuses": statuses, "messages": messages,
        "finite": all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters()),
        "weights": sum(float(p.detach().double().sum()) for p in trainer.model.parameters()),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    world.barrier()
    shutdown(world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_stop_together_when_one_is_asked_and_roll_back_together_after_a_nan(tmp_path):
    mp.start_processes(_engine_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    stop = ranks[0]["stop"]
    assert stop == {"step": 7, "statuses": ["stopped"]}
    diverge = ranks[0]["diverge"]
    assert diverge["statuses"] == ["diverged", "stopped"] and diverge["finite"]
    assert "rolled back to step 0" in diverge["messages"][0]
