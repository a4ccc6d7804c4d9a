"""Real-size datasets: opening, memory, throughput of uint8 data, folder decoding and its cache.

Everything is made in one temporary folder (``df`` must show about 3 GB free
under ``$TMPDIR``), removed at the end; the folder cache points there too.
Peak memory is the peak resident set size of a child process in GiB
(``os.wait4``'s ``ru_maxrss`` of that child alone).  It counts the pages of
a memory-mapped file that the process has touched (on this kernel a page
fault maps a whole large folio of the page cache, up to 2 MB, so a few
thousand random images map most of a file); those pages are clean and the
kernel takes them back under pressure.  The ``*_peak_anon_gb`` figures are
the largest anonymous memory (``RssAnon``, sampled every 50 ms) of the same
children: what they really allocated.

``run()`` returns

* ``load_200k_rgb64_s``: ``load_dataset`` of a 200,000 x 64 x 64 x 3 uint8
  ``.npy`` file (2.46 GB) that the benchmark writes: it is memory-mapped, so
  this is about reading its header (target <= 3);
* ``train_200k_rgb64_peak_rss_gb``: peak memory of ``python -m vae_core
  train`` on that file, conv model (32, 64 channels), 50 batches of 128
  (``--max-steps 50``) and the checkpoint written (target <= 4.5);
* ``uint8_train_throughput_ratio``: trainer examples per second with the
  built-in MNIST held as uint8 (as loaded) against the same images held as
  float32, default MLP, batch 128, ``BENCH_THREADS`` torch threads (default
  1); the two trainers alternate epoch by epoch for 15 rounds (5 with
  ``BENCH_QUICK=1``; an epoch is under a second) and the figure is the
  median of the rounds' quotients, each epoch timed from the end of its
  first batch to its last (target >= 0.95);
* ``folder_20k_load_ratio``: a folder of 20,000 JPEG files of 178 x 218
  colour pixels (the size of CelebA's aligned faces, in ten class
  subfolders) loaded at size 64 by ``load_dataset`` (the pool of decoding
  threads, writing the cache included) against a single-threaded Pillow
  loop (open, RGB, Lanczos resize to 64 x 64, into one uint8 array): the
  loop's seconds over the loader's, the median over rounds (five; one with
  ``BENCH_QUICK=1``) in which the two run back to back, in turns, each
  loader run decoding into an empty cache (target >= 1.5).  Two things make
  the loader faster: the threads, and asking the JPEG decoder for a reduced
  image (``draft``: here 89 x 109, decoded from the DCT at half scale)
  before the Lanczos resize.  ``folder_20k_one_thread_s`` is the loader with
  one thread, so the share of each shows;
* ``folder_20k_cached_load_s``: another ``load_dataset`` of that folder,
  read from the cache the first round wrote (target <= 1);
* ``shapes_737k_peak_rss_gb``: peak memory of a child process that generates
  737,280 shapes at 64 x 64 (the size of dSprites), trains the default MLP on
  them and does what the end of an epoch does (test-split evaluation, codes
  of all 737,280 images).  A whole epoch is 5,184 batches, about 18 minutes
  on this 2-core machine, so the child trains 300 batches (100 with
  ``BENCH_QUICK=1``) before the epoch-end work; ``shapes_737k_seconds`` is
  its wall time.

Also reported: ``folder_20k_loader_s`` and ``folder_20k_plain_loop_s``
(medians over the rounds), ``train_200k_rgb64_seconds``,
``train_200k_rgb64_peak_anon_gb``, ``shapes_737k_peak_anon_gb``,
``uint8_samples_per_s`` and ``float32_samples_per_s``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {
    "load_200k_rgb64_s": ("<=", 3.0),
    "train_200k_rgb64_peak_rss_gb": ("<=", 4.5),
    "uint8_train_throughput_ratio": (">=", 0.95),
    "folder_20k_load_ratio": (">=", 1.5),
    "folder_20k_cached_load_s": ("<=", 1.0),
}

ROOT = Path(__file__).resolve().parent.parent
N_RGB = 200_000
N_FILES = 20_000
N_SHAPES = 737_280


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _anon_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _child(argv: list[str], log: Path, env: dict[str, str]) -> tuple[int, float, float, float]:
    """Run ``python argv`` with output to ``log``: (exit status, peak RSS GiB, peak anonymous GiB, seconds)."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    t0 = time.perf_counter()
    pid = os.posix_spawn(sys.executable, [sys.executable, *argv], env, file_actions=actions)
    anon = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        anon = max(anon, _anon_bytes(pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024 / 2**30, anon / 2**30, seconds


def _write_rgb_npy(path: Path) -> None:
    """200,000 x 64 x 64 x 3 uint8 images with some structure, written in pieces."""
    import numpy as np

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (1000, 64, 64, 3), dtype=np.uint8)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(N_RGB, 64, 64, 3))
    for start in range(0, N_RGB, 1000):
        out[start : start + 1000] = tiles // (1 + (start // 1000) % 4)
    out.flush()
    del out


def _write_jpeg_folder(root: Path) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    files = []
    for i in range(N_FILES):
        sub = root / f"class{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        path = sub / f"{i:05d}.jpg"
        small.resize((178, 218), Image.Resampling.BICUBIC).save(path, quality=90)
        files.append(path)
    return sorted(files)


def _plain_loop(files: list[Path]):
    """What one would write by hand: decode, RGB, resize, one file after another."""
    import numpy as np
    from PIL import Image

    out = np.empty((len(files), 3, 64, 64), dtype=np.uint8)
    for i, path in enumerate(files):
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS))
        out[i] = a.transpose(2, 0, 1)
    return out


def _timed_load(spec, cache: Path, threads: int | None = None) -> tuple[float, object]:
    """(seconds, dataset) of ``load_dataset(spec)`` with ``cache`` as the cache folder and ``threads`` decoding."""
    from vae_core.data import images, load_dataset

    old_env, old_threads = os.environ["LATENT_EXPLORER_CACHE"], images.DECODE_THREADS
    os.environ["LATENT_EXPLORER_CACHE"] = str(cache)
    images.DECODE_THREADS = threads
    try:
        t0 = time.perf_counter()
        ds = load_dataset(spec)
        return time.perf_counter() - t0, ds
    finally:
        images.DECODE_THREADS = old_threads
        os.environ["LATENT_EXPLORER_CACHE"] = old_env


def _folder_figures(spec, files: list[Path], tmp: Path, rounds: int) -> dict[str, float]:
    """The loader against the plain loop, alternating over ``rounds`` (each loader run decodes into a new cache).

    The ratio is the median of each round's quotient: the two runs of a round
    are back to back, which cancels most of the drift in this machine's speed.
    """
    loader, plain, ratios = [], [], []
    for r in range(rounds):
        for who in ("loader", "plain") if r % 2 == 0 else ("plain", "loader"):
            if who == "loader":
                seconds, ds = _timed_load(spec, tmp / f"cache-{r}")
                assert ds.images.shape == (len(files), 3, 64, 64) and not any("cache in" in n for n in ds.notes)
                loader.append(seconds)
            else:
                t0 = time.perf_counter()
                _plain_loop(files)
                plain.append(time.perf_counter() - t0)
        ratios.append(plain[-1] / loader[-1])
        _log(f"folder round {r + 1}/{rounds}: loader {loader[-1]:.1f} s, plain loop {plain[-1]:.1f} s")
    cached_s, ds = _timed_load(spec, tmp / "cache-0")
    assert any("read from the cache" in n for n in ds.notes)
    one_thread_s, _ = _timed_load(spec, tmp / "cache-one-thread", threads=1)
    _log(f"folder: cached {cached_s:.2f} s, one thread {one_thread_s:.1f} s")
    return {
        "folder_20k_load_ratio": statistics.median(ratios),
        "folder_20k_cached_load_s": cached_s,
        "folder_20k_loader_s": statistics.median(loader),
        "folder_20k_plain_loop_s": statistics.median(plain),
        "folder_20k_one_thread_s": one_thread_s,
    }


def _epoch_rate(trainer) -> float:
    """Examples per second of one epoch of ``trainer.run``, from the end of its first batch to its last."""
    t_first = t_last = None
    samples = 0
    bs = trainer.train_config.batch_size
    for ev in trainer.run(epochs=1):
        if ev.kind != "batch":
            continue
        now = time.perf_counter()
        if t_first is None:
            t_first = now
        else:
            samples += min(bs, trainer.n_train - ev.batch * bs)
            t_last = now
    return samples / (t_last - t_first)


def _throughput(rounds: int, threads: int) -> dict[str, float]:
    import dataclasses

    import torch

    from vae_core import ModelConfig, TrainConfig
    from vae_core.data import load_dataset
    from vae_core.training import Trainer

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ds = load_dataset("mnist")
        as_float = dataclasses.replace(ds, images=ds.float_images())
        assert ds.images.dtype.name == "uint8" and as_float.images.dtype.name == "float32"
        mcfg = ModelConfig(input_shape=ds.input_shape)
        tcfg = TrainConfig(epochs=rounds, batch_size=128, seed=0, device="cpu", num_threads=threads)
        trainers = {"uint8": Trainer(mcfg, tcfg, ds), "float32": Trainer(mcfg, tcfg, as_float)}
        rates: dict[str, list[float]] = {"uint8": [], "float32": []}
        for r in range(rounds):
            for name in ("uint8", "float32") if r % 2 == 0 else ("float32", "uint8"):
                rates[name].append(_epoch_rate(trainers[name]))
            _log(f"round {r + 1}/{rounds}: uint8 {rates['uint8'][-1]:.0f}/s, float32 {rates['float32'][-1]:.0f}/s")
        return {
            "uint8_train_throughput_ratio": statistics.median(u / f for u, f in zip(rates["uint8"], rates["float32"])),
            "uint8_samples_per_s": statistics.median(rates["uint8"]),
            "float32_samples_per_s": statistics.median(rates["float32"]),
        }
    finally:
        torch.set_num_threads(old)


_SHAPES_CHILD = """
import sys
from vae_core import ModelConfig, TrainConfig
from vae_core.data import DatasetSpec, load_dataset
from vae_core.training import Trainer

steps = int(sys.argv[1])
ds = load_dataset(DatasetSpec("shapes", n={n}, size=64))
trainer = Trainer(ModelConfig(input_shape=ds.input_shape), TrainConfig(epochs=1, device="cpu"), ds)
for ev in trainer.run():
    if ev.kind == "batch" and ev.step >= steps:
        trainer.control.stop()
figures = trainer.evaluate("test")
mu, logvar = trainer.encode_all()
print("images", ds.images.dtype, ds.images.shape, "codes", mu.shape, "test ELBO", figures["elbo"])
""".format(n=N_SHAPES)


def run() -> dict[str, float]:
    quick = os.environ.get("BENCH_QUICK") == "1"
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    results: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_data."))
    env = {**os.environ, "LATENT_EXPLORER_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
    old_cache = os.environ.get("LATENT_EXPLORER_CACHE")
    os.environ["LATENT_EXPLORER_CACHE"] = env["LATENT_EXPLORER_CACHE"]
    try:
        free = shutil.disk_usage(tmp).free
        _log(f"temporary folder {tmp} ({free / 2**30:.0f} GiB free)")
        from vae_core.data import DatasetSpec, load_dataset

        # -- a 200,000 x 64 x 64 x 3 uint8 file ------------------------------------
        npy = tmp / "rgb200k.npy"
        _write_rgb_npy(npy)
        t0 = time.perf_counter()
        ds = load_dataset(str(npy))
        results["load_200k_rgb64_s"] = time.perf_counter() - t0
        _log(f"opened {npy.name}: {ds.images.shape} {ds.images.dtype} in {results['load_200k_rgb64_s']:.3f} s")
        del ds
        rc, peak, anon, seconds = _child(
            ["-m", "vae_core", "train", "--dataset", str(npy), "--arch", "conv", "--epochs", "1",
             "--max-steps", "50", "--out", str(tmp / "rgb.ckpt"), "--json"],
            tmp / "train.log", env,
        )
        if rc != 0:
            raise RuntimeError(f"training on {npy.name} failed ({rc}): {(tmp / 'train.log').read_text()[-2000:]}")
        results["train_200k_rgb64_peak_rss_gb"] = peak
        results["train_200k_rgb64_peak_anon_gb"] = anon
        results["train_200k_rgb64_seconds"] = seconds
        _log(f"trained 50 conv batches on it: peak RSS {peak:.2f} GiB ({anon:.2f} anonymous), {seconds:.0f} s")
        npy.unlink()

        # -- uint8 against float32 ---------------------------------------------------
        results.update(_throughput(5 if quick else 15, threads))

        # -- a folder of 20,000 JPEG files ------------------------------------------
        folder = tmp / "jpegs"
        files = _write_jpeg_folder(folder)
        results.update(_folder_figures(DatasetSpec(str(folder), size=64), files, tmp, 1 if quick else 5))
        shutil.rmtree(folder)

        # -- 737,280 shapes ------------------------------------------------------------
        steps = 100 if quick else 300
        rc, peak, anon, seconds = _child(["-c", _SHAPES_CHILD, str(steps)], tmp / "shapes.log", env)
        if rc != 0:
            raise RuntimeError(f"the shapes run failed ({rc}): {(tmp / 'shapes.log').read_text()[-2000:]}")
        results["shapes_737k_peak_rss_gb"] = peak
        results["shapes_737k_peak_anon_gb"] = anon
        results["shapes_737k_seconds"] = seconds
        _log(f"shapes: {(tmp / 'shapes.log').read_text().strip().splitlines()[-1]}; "
             f"peak RSS {peak:.2f} GiB ({anon:.2f} anonymous), {seconds:.0f} s ({steps} batches)")
        return results
    finally:
        if old_cache is None:
            os.environ.pop("LATENT_EXPLORER_CACHE", None)
        else:
            os.environ["LATENT_EXPLORER_CACHE"] = old_cache
        shutil.rmtree(tmp, ignore_errors=True)
