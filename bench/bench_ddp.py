"""Data-parallel training on two CPU processes (Gloo, ``DistributedDataParallel``) against one process.

Both train the same run: the default MLP (784-512-256-(2x2), 2 latent dims,
Bernoulli likelihood) on the built-in MNIST (5,000 images, 4,500 for
training), batch 128 (the global batch: each process of two takes 64 of
its examples), Adam at lr 1e-3, seed 0, on the CPU.  The one-process run
uses every core as torch threads; each of the two processes gets half of
them.  The two processes are spawned here and join a process group on a
free localhost port, as ``torchrun`` would start them.

``run()`` returns

* ``ddp_2proc_weight_max_diff``: the largest absolute difference between
  the weights of the two-process model and the one-process model after 20
  steps (target <= 1e-4: the two runs are the same computation up to the
  order of float sums);
* ``ddp_1proc_samples_per_s`` / ``ddp_2proc_samples_per_s``: examples per
  second of the global batch over the next 140 steps (60 with
  ``BENCH_QUICK=1``), counted between consecutive batches of one epoch
  (the end-of-epoch evaluation is left out), from the events of rank 0;
* ``ddp_2proc_throughput_ratio``: the second over the first (reported; on a
  small CPU the all-reduce of every step's gradients may cost more than the
  second process gains).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

TARGETS = {"ddp_2proc_weight_max_diff": ("<=", 1e-4)}

COMPARE_STEPS = 20
BATCH_SIZE = 128


def _configs(dataset):
    from vae_core import ModelConfig, TrainConfig

    return (
        ModelConfig(input_shape=dataset.input_shape, latent_dim=2),
        TrainConfig(epochs=100, batch_size=BATCH_SIZE, lr=1e-3, seed=0, device="cpu"),
    )


def _train(trainer, timed_steps: int, weights_path: Path | None) -> tuple[int, float]:
    """Run ``COMPARE_STEPS`` steps (saving the weights there), then ``timed_steps`` more; (samples, seconds) of those."""
    import time

    import torch

    samples, seconds = 0, 0.0
    last: tuple[int, float] | None = None  # (epoch, time) of the previous batch
    end = COMPARE_STEPS + timed_steps
    for ev in trainer.run():
        if ev.kind != "batch":
            last = None
            continue
        now = time.perf_counter()
        if ev.step == COMPARE_STEPS and weights_path is not None:
            torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, weights_path)
        if ev.step > COMPARE_STEPS and last is not None and last[0] == ev.epoch:
            samples += min(BATCH_SIZE, trainer.n_train - ev.batch * BATCH_SIZE)
            seconds += now - last[1]
        last = (ev.epoch, time.perf_counter())
        if ev.step >= end:
            trainer.control.stop()
    return samples, seconds


def _worker(rank: int, size: int, port: int, threads: int, timed_steps: int, out_dir: str) -> None:
    """One rank of the two-process run; rank 0 writes the weights at step 20 and its rate."""
    import json

    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    from vae_core.data import load_dataset
    from vae_core.distributed import init_world, shutdown
    from vae_core.training import Trainer

    world = init_world("cpu")
    dataset = load_dataset("mnist")
    model_config, train_config = _configs(dataset)
    trainer = Trainer(model_config, train_config.replace(num_threads=threads), dataset, world=world)
    out = Path(out_dir)
    samples, seconds = _train(trainer, timed_steps, out / "weights.pt" if rank == 0 else None)
    if rank == 0:
        (out / "rate.json").write_text(json.dumps({"samples": samples, "seconds": seconds}))
    world.barrier()
    shutdown(world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run() -> dict[str, float]:
    import json

    import torch
    import torch.multiprocessing as mp

    from vae_core.data import load_dataset
    from vae_core.training import Trainer

    quick = os.environ.get("BENCH_QUICK") == "1"
    timed_steps = 60 if quick else 140
    cores = os.cpu_count() or 1
    per_process = max(1, cores // 2)
    old_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        out = Path(tmp)
        torch.set_num_threads(cores)
        try:
            dataset = load_dataset("mnist")
            model_config, train_config = _configs(dataset)
            one = Trainer(model_config, train_config.replace(num_threads=cores), dataset)
            samples1, seconds1 = _train(one, timed_steps, out / "weights-1.pt")
        finally:
            torch.set_num_threads(old_threads)
        print(f"  one process ({cores} threads): {samples1 / seconds1:.0f} samples/s", file=sys.stderr, flush=True)
        mp.start_processes(_worker, args=(2, _free_port(), per_process, timed_steps, tmp), nprocs=2,
                           start_method="spawn")
        rate = json.loads((out / "rate.json").read_text())
        samples2, seconds2 = rate["samples"], rate["seconds"]
        print(f"  two processes ({per_process} thread each): {samples2 / seconds2:.0f} samples/s",
              file=sys.stderr, flush=True)
        w1 = torch.load(out / "weights-1.pt", weights_only=True)
        w2 = torch.load(out / "weights.pt", weights_only=True)
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    r1, r2 = samples1 / seconds1, samples2 / seconds2
    return {
        "ddp_2proc_weight_max_diff": diff,
        "ddp_1proc_samples_per_s": r1,
        "ddp_2proc_samples_per_s": r2,
        "ddp_2proc_throughput_ratio": r2 / r1,
    }
