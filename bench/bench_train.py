"""Training speed and quality of ``vae_core.training.Trainer`` against a bare loop.

Both contenders train the same model (MLP 784-512-256-(2x2), 2 latent
dims, Bernoulli likelihood, the same seeded initial weights) on the built-in
MNIST (5,000 images, 4,500 for training) with batch 128, Adam (lr 1e-3) and
the loss computed by ``vae_core.objectives.elbo``, on the CPU with torch
threads fixed (``BENCH_THREADS``, default 1).  The bare loop is what one would
write by hand: a per-epoch permutation, index the batch, loss, zero_grad,
backward, step.  The two alternate epoch by epoch in the same process (the
order flips each round), so machine load hits both alike.

``run()`` returns

* ``train_samples_per_s`` / ``bare_samples_per_s``: the median over rounds of
  the examples per second within an epoch, from the end of its first batch to
  the end of its last (the trainer's end-of-epoch evaluation is not counted;
  its per-batch control checks, history and events are);
* ``train_throughput_ratio``: the median over rounds of the quotient of the
  round's two rates (target >= 0.95);
* ``heldout_elbo_nats``: the test ELBO (nats per example, beta = 1, one
  sample, the same evaluation function and noise for both) of the trainer's
  model after the rounds (10 epochs; 4 with ``BENCH_QUICK=1``);
* ``heldout_elbo_delta_nats``: that minus the bare loop's (target >= 0: the
  trainer must not learn worse than the plain loop).  The bare loop draws its
  permutations and reparameterisation noise from generators seeded like the
  trainer's, so the two runs are the same computation and the delta is
  exactly 0 unless the trainer's arithmetic departs from the plain loop's
  (with independent streams it would be seed noise of about +-0.5 nats).
* ``train_bare_max_weight_diff``: the largest absolute difference between
  the two final models' weights (0 when they are bit-identical).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

TARGETS = {
    "train_throughput_ratio": (">=", 0.95),
    "heldout_elbo_delta_nats": (">=", 0.0),
}


def _bare_epoch(model, opt, x_train, batch_size, perm_gen, noise_gen, elbo, torch):
    """One epoch of the hand-written loop; returns (samples, seconds) from batch 1 to the last."""
    n = x_train.shape[0]
    perm = torch.randperm(n, generator=perm_gen)
    t_first = None
    samples = 0
    for s in range(0, n, batch_size):
        x = x_train.index_select(0, perm[s : s + batch_size])
        loss = elbo(model, x, beta=1.0, generator=noise_gen).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if t_first is None:
            t_first = time.perf_counter()
        else:
            samples += x.shape[0]
    return samples, time.perf_counter() - t_first


def _trainer_epoch(trainer):
    """One epoch of ``trainer.run``; (samples, seconds) from batch 1 to the last, as received."""
    t_first = t_last = None
    samples = 0
    for ev in trainer.run(epochs=1):
        if ev.kind != "batch":
            continue
        now = time.perf_counter()
        if t_first is None:
            t_first = now
        else:
            samples += min(trainer.train_config.batch_size, trainer.n_train - ev.batch * trainer.train_config.batch_size)
            t_last = now
    return samples, t_last - t_first


def run() -> dict[str, float]:
    import torch

    from vae_core import ModelConfig, TrainConfig
    from vae_core.data import load_dataset
    from vae_core.objectives import elbo
    from vae_core.training import build_model, evaluate_model, images_tensor, make_generator
    from vae_core.training.trainer import _STREAM_NOISE, _STREAM_SHUFFLE

    quick = os.environ.get("BENCH_QUICK") == "1"
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    rounds = 4 if quick else 10
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    # The trainer flushes subnormal floats to zero in its thread; the plain loop runs in
    # the same thread, so both do the same arithmetic from the first batch on.
    torch.set_flush_denormal(True)
    try:
        ds = load_dataset("mnist")
        mcfg = ModelConfig(input_shape=ds.input_shape, latent_dim=2)
        tcfg = TrainConfig(epochs=rounds, batch_size=128, lr=1e-3, seed=0, device="cpu", num_threads=threads)
        trainer = _make_trainer(mcfg, tcfg, ds)

        images = images_tensor(ds.images)  # the trainer's conversion (uint8 grey levels / 255)
        x_train = images[torch.from_numpy(ds.train_idx)].contiguous()
        x_test = images[torch.from_numpy(ds.test_idx)].contiguous()
        bare = build_model(mcfg, tcfg.seed)
        bare.train()
        opt = torch.optim.Adam(bare.parameters(), lr=tcfg.lr)
        # The same random streams as the trainer's: if the trainer does exactly
        # the plain loop's math, both end with identical weights.
        cpu = torch.device("cpu")
        perm_gen = make_generator(cpu, tcfg.seed, _STREAM_SHUFFLE)
        noise_gen = make_generator(cpu, tcfg.seed, _STREAM_NOISE)

        ours_rates, bare_rates = [], []
        for r in range(rounds):
            order = ("ours", "bare") if r % 2 == 0 else ("bare", "ours")
            for who in order:
                if who == "ours":
                    samples, seconds = _trainer_epoch(trainer)
                    ours_rates.append(samples / seconds)
                else:
                    samples, seconds = _bare_epoch(bare, opt, x_train, tcfg.batch_size, perm_gen, noise_gen, elbo, torch)
                    bare_rates.append(samples / seconds)
            print(
                f"  round {r + 1}/{rounds}: trainer {ours_rates[-1]:.0f}/s, bare {bare_rates[-1]:.0f}/s",
                file=sys.stderr,
                flush=True,
            )

        def heldout(model):
            g = make_generator(torch.device("cpu"), 0, 99)
            return evaluate_model(model, x_test, 1024, 0, g)["elbo"]

        ours_elbo = heldout(trainer.model)
        bare_elbo = heldout(bare)
        ours = statistics.median(ours_rates)
        plain = statistics.median(bare_rates)
        # Each round's two epochs run back to back, so their quotient cancels the slow drifts
        # of this machine's speed; the median over rounds drops the odd disturbed epoch.
        ratio = statistics.median(o / b for o, b in zip(ours_rates, bare_rates))
        return {
            "train_throughput_ratio": ratio,
            "train_samples_per_s": ours,
            "bare_samples_per_s": plain,
            "heldout_elbo_nats": ours_elbo,
            "heldout_elbo_delta_nats": ours_elbo - bare_elbo,
            "train_bare_max_weight_diff": max(
                float((a - b).abs().max()) for a, b in zip(trainer.model.state_dict().values(), bare.state_dict().values())
            ),
        }
    finally:
        torch.set_num_threads(old_threads)


def _make_trainer(mcfg, tcfg, ds):
    from vae_core.training import Trainer

    return Trainer(mcfg, tcfg, ds)
