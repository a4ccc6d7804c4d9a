"""Comparing runs at real sizes: ``compare_run`` on 70,000 MNIST-sized images and on 737,280 shapes, and the CLI.

Everything is made in one temporary folder, removed at the end.  The
70,000 x 1 x 28 x 28 uint8 ``.npy`` file is the built-in MNIST subset
(5,000 images) tiled fourteen times, each copy shifted by up to two pixels
and with its grey levels jittered, so no two copies are equal.  Four
checkpoints of the default MLP (512, 256 hidden, 2 latent dims) are trained
on it in batches of 128: beta 1 for ``STEPS`` batches, beta 0, 0.5 and 2
for ``STEPS // 3`` each (a short training: the figures are about time, but
the models are real ones).

``run()`` returns

* ``compare_run_mnist70k_s``: ``compare_run`` of the beta = 1 checkpoint on
  that file (its 7,000 held-out examples, under the default cap of 10,000;
  IWAE k = 50, the default), in this process;
* ``evaluate_mnist70k_s``: ``evaluate_model`` (k = 0) of the same model on the
  same examples, read the same way (uint8 rows converted a batch at a time),
  the reference; ``compare_run_vs_evaluate_ratio`` is the first over it.
  Most of the quotient is the IWAE estimate: k = 50 samples of z, each
  decoded, per example.  ``evaluate_iwae50_mnist70k_s`` is ``evaluate_model``
  with k = 50 on those examples, and ``compare_run_vs_evaluate_iwae_ratio``
  the quotient of ``compare_run`` over it: what ``compare_run`` adds to the
  evaluation itself (the mean codes, the prior mismatch, batching)
  (target <= 1.2);
* ``compare_cli_4runs_s``: wall time of ``python -m vae_core compare`` of the
  four checkpoints on the file (``--json``), a child process, from its
  start (imports, loading the file) to its exit;
* ``compare_run_shapes737k_s``: ``compare_run`` on 737,280 shapes at 64 x 64
  (the size of dSprites) of a small MLP (256 hidden units, 2 latent dims)
  trained for ``STEPS // 3`` batches on 5,000 shapes of that size: 10,000 of the
  73,728 held-out examples, IWAE k = 50, and MIG and SAP on the same
  examples, timed inside a child process that generates the shapes first
  (``shapes737k_generate_s``);
* ``compare_shapes737k_peak_rss_gb``: that child's peak resident set size in
  GiB (``os.wait4``'s ``ru_maxrss``); the uint8 images alone are 3.02 GB
  (``shapes737k_images_gb``), a float32 copy of them would be 12.1 GB more
  (target <= 4; the IWAE chunks of one batch of 1,024 examples at 4,096
  pixels take a few hundred MB).  ``compare_shapes737k_peak_anon_gb`` is its largest
  anonymous memory (``RssAnon``, sampled every 50 ms), and
  ``compare_shapes737k_added_rss_gb`` the growth of its resident set during
  ``compare_run`` alone (its ``ru_maxrss`` after minus before).

``BENCH_QUICK=1`` trains a third as many batches.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_data import _child

TARGETS = {
    "compare_run_vs_evaluate_iwae_ratio": ("<=", 1.2),
    "compare_shapes737k_peak_rss_gb": ("<=", 4.0),
}

ROOT = Path(__file__).resolve().parent.parent
N_MNIST = 70_000
N_SHAPES = 737_280
STEPS = 300
BETAS = (1.0, 0.0, 0.5, 2.0)


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _write_mnist70k(path: Path) -> None:
    """70,000 x 1 x 28 x 28 uint8: the built-in 5,000 MNIST images tiled, each copy shifted and jittered."""
    import numpy as np

    from vae_core.data import load_dataset

    base = load_dataset("mnist").images
    assert base.dtype == np.uint8 and base.shape[1:] == (1, 28, 28), base.shape
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(N_MNIST, 1, 28, 28))
    per = base.shape[0]
    for start in range(0, N_MNIST, per):
        block = base[: min(per, N_MNIST - start)].astype(np.int16)
        if start:
            dy, dx = rng.integers(-2, 3, size=2)
            block = np.roll(block, (int(dy), int(dx)), axis=(2, 3))
            block = block + rng.integers(-12, 13, size=block.shape, dtype=np.int16)
        out[start : start + block.shape[0]] = np.clip(block, 0, 255).astype(np.uint8)
    out.flush()
    del out


def _train(dataset, path: Path, *, beta: float, steps: int, hidden: tuple[int, ...] | None = None) -> Path:
    from vae_core import ModelConfig, TrainConfig
    from vae_core.checkpoint import save_checkpoint
    from vae_core.training import Trainer

    mcfg = ModelConfig(input_shape=dataset.input_shape) if hidden is None else ModelConfig(
        input_shape=dataset.input_shape, hidden_dims=hidden)
    trainer = Trainer(mcfg, TrainConfig(epochs=1000, batch_size=128, beta=beta, seed=0, device="cpu"), dataset)
    for ev in trainer.run():
        if ev.kind == "batch" and ev.step >= steps:
            trainer.control.stop()
    return save_checkpoint(trainer, path)


def _mnist_figures(npy: Path, ckpts: list[Path]) -> dict[str, float]:
    import numpy as np
    import torch

    from vae_core.checkpoint import load_checkpoint
    from vae_core.compare import DEFAULT_EXAMPLES, DEFAULT_IWAE_K, _subset, compare_run
    from vae_core.data import load_dataset
    from vae_core.training import evaluate_model
    from vae_core.training.batches import DeviceImages, ImageSplit
    from vae_core.training.trainer import _STREAM_EVAL, make_generator

    ds = load_dataset(str(npy))
    ckpt = load_checkpoint(ckpts[0])
    t0 = time.perf_counter()
    figures = compare_run(ckpt, ds)
    compare_s = time.perf_counter() - t0
    _log(f"compare_run on {figures.n:,} held-out examples (k = {figures.iwae_k}): {compare_s:.1f} s, "
         f"ELBO {figures.elbo:.1f}, IWAE {figures.iwae:.1f} nats")

    rows = _subset(np.asarray(ds.test_idx, dtype=np.int64), DEFAULT_EXAMPLES, 0)
    model = ckpt.build_model()
    model.eval()
    dev = torch.device("cpu")
    x = ImageSplit(DeviceImages(ds.images, dev), torch.as_tensor(rows))
    bs = ckpt.train_config.eval_batch_size
    times = {}
    for k in (0, DEFAULT_IWAE_K):
        t0 = time.perf_counter()
        res = evaluate_model(model, x, bs, k, make_generator(dev, ckpt.train_config.seed, _STREAM_EVAL))
        times[k] = time.perf_counter() - t0
        _log(f"evaluate_model (k = {k}) on the same examples: {times[k]:.2f} s, ELBO {res['elbo']:.1f}")
    return {
        "compare_run_mnist70k_s": compare_s,
        "evaluate_mnist70k_s": times[0],
        "compare_run_vs_evaluate_ratio": compare_s / times[0],
        "evaluate_iwae50_mnist70k_s": times[DEFAULT_IWAE_K],
        "compare_run_vs_evaluate_iwae_ratio": compare_s / times[DEFAULT_IWAE_K],
        "compare_mnist70k_examples": figures.n,
    }


_SHAPES_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from vae_core.compare import compare_run
from vae_core.data import DatasetSpec, load_dataset
ds = load_dataset(DatasetSpec("shapes", n={n}, size=64))
generate_s = time.perf_counter() - t0
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
figures = compare_run(sys.argv[1], ds)
seconds = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"generate_s": generate_s, "compare_s": seconds, "rss_before_kb": before, "rss_after_kb": after,
                  "images_bytes": int(ds.images.nbytes), "dtype": str(ds.images.dtype), "figures": figures.to_dict()}}))
""".format(n=N_SHAPES)


def _shapes_figures(tmp: Path, steps: int, env: dict[str, str]) -> dict[str, float]:
    from vae_core.data import DatasetSpec, load_dataset

    small = load_dataset(DatasetSpec("shapes", n=5000, size=64))
    ckpt = _train(small, tmp / "shapes.ckpt", beta=1.0, steps=steps, hidden=(256,))
    del small
    log = tmp / "shapes.log"
    rc, peak, anon, wall = _child(["-c", _SHAPES_CHILD, str(ckpt)], log, env)
    text = log.read_text()
    if rc != 0:
        raise RuntimeError(f"the shapes comparison failed ({rc}): {text[-2000:]}")
    out = json.loads(text.strip().splitlines()[-1])
    f = out["figures"]
    _log(f"shapes: generated in {out['generate_s']:.0f} s, compare_run {out['compare_s']:.1f} s on {f['n']:,} "
         f"examples (MIG {f['mig']:.3f}, SAP {f['sap']:.3f} on {f['factor_examples']:,}); "
         f"peak RSS {peak:.2f} GiB ({anon:.2f} anonymous), images {out['images_bytes'] / 2**30:.2f} GiB "
         f"{out['dtype']}; child {wall:.0f} s")
    return {
        "compare_run_shapes737k_s": out["compare_s"],
        "shapes737k_generate_s": out["generate_s"],
        "compare_shapes737k_peak_rss_gb": peak,
        "compare_shapes737k_peak_anon_gb": anon,
        "compare_shapes737k_added_rss_gb": (out["rss_after_kb"] - out["rss_before_kb"]) / 2**20,
        "shapes737k_images_gb": out["images_bytes"] / 2**30,
    }


def run() -> dict[str, float]:
    quick = os.environ.get("BENCH_QUICK") == "1"
    steps = 100 if quick else STEPS
    results: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_compare."))
    env = {**os.environ, "LATENT_EXPLORER_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
    try:
        from vae_core.data import load_dataset

        npy = tmp / "mnist70k.npy"
        _write_mnist70k(npy)
        ds = load_dataset(str(npy))
        t0 = time.perf_counter()
        ckpts = [_train(ds, tmp / f"beta{beta:g}.ckpt", beta=beta, steps=steps if i == 0 else steps // 3)
                 for i, beta in enumerate(BETAS)]
        _log(f"trained {len(ckpts)} checkpoints on {npy.name} in {time.perf_counter() - t0:.0f} s")
        del ds

        results.update(_mnist_figures(npy, ckpts))

        log = tmp / "cli.log"
        rc, peak, _, wall = _child(["-m", "vae_core", "compare", *map(str, ckpts), "--dataset", str(npy), "--json"],
                                   log, env)
        if rc != 0:
            raise RuntimeError(f"vae-explorer compare failed ({rc}): {log.read_text()[-2000:]}")
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        assert len(lines) == len(ckpts), log.read_text()[-2000:]
        results["compare_cli_4runs_s"] = wall
        results["compare_cli_4runs_peak_rss_gb"] = peak
        _log(f"vae-explorer compare of {len(ckpts)} checkpoints: {wall:.1f} s, peak RSS {peak:.2f} GiB")
        npy.unlink()

        results.update(_shapes_figures(tmp, steps // 3, env))
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
