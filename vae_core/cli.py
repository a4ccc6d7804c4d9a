"""Headless commands: ``train``, ``evaluate``, ``export`` and ``compare``.

Run as ``python -m vae_core ...`` or ``vae-explorer train|evaluate|export|compare ...``.
Problems a user can fix (a missing dataset, a bad checkpoint, a value out of
range) print ``error: <message>`` and exit with status 2.  Training stops
cleanly on Ctrl+C or SIGTERM: the current batch finishes, a complete
checkpoint is written, and the exit status is 130 (SIGINT) or 143 (SIGTERM).

``train`` runs data-parallel on several processes when ``torchrun`` starts
it (``torchrun --nproc-per-node N -m vae_core train ...``) or with
``--nproc N`` (which starts ``torch.distributed.run`` on this machine):
only rank 0 prints, writes the run folder and saves checkpoints.  With
``--run-dir DIR`` it writes a run folder (``vae_core.runs``) that can be
followed while it grows, and continues it from its latest checkpoint.

``compare A.ckpt B.ckpt ...`` (a run folder stands for its latest.ckpt)
evaluates every checkpoint on the held-out examples of one dataset (the
first checkpoint's unless ``--dataset`` is given) and prints the comparison
table of ``vae_core.compare``, one column per run; ``--json`` prints one
JSON object per run instead, ``--csv PATH`` also writes the table.

Torch is imported only when a command runs, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from .config import (
    ARCHITECTURES,
    LIKELIHOODS,
    LIVE_SETTINGS,
    PRECISIONS,
    WARMUPS,
    ModelConfig,
    TrainConfig,
    parse_hidden_dims,
)
from .errors import CheckpointError, ConfigError, VAEError

EXIT_ERROR = 2
EXIT_DIVERGED = 1

# Defaults of the train options; the parser uses None so that a resumed run can
# tell which options were given on the command line.
TRAIN_DEFAULTS: dict[str, Any] = {
    "dataset": "mnist",
    "latent_dim": 2,
    "arch": "mlp",
    "likelihood": "bernoulli",
    "sigma": 0.1,
    "epochs": 10,
    "batch_size": 128,
    "lr": 1e-3,
    "beta": 1.0,
    "warmup": "none",
    "warmup_epochs": 10,
    "free_bits": 0.0,
    "mc_samples": 1,
    "seed": 0,
    "device": "auto",
    "threads": 0,
    "binarize": "none",
    "test_fraction": 0.1,
    "precision": "fp32",
}
DEFAULT_HIDDEN = {"mlp": (512, 256), "conv": (32, 64)}
# The defaults of ``vae_core.compare`` (kept here so that --help imports neither numpy nor torch;
# a test checks they agree).
COMPARE_IWAE_K = 50
COMPARE_EXAMPLES = 10_000


def _rank() -> int:
    """This process's rank in a run that torchrun started (0 otherwise)."""
    return int(os.environ.get("RANK", "0") or 0)


def _err(message: str) -> None:
    rank = _rank()
    print(f"error{f' (rank {rank})' if rank else ''}: {message}", file=sys.stderr, flush=True)


def _note(message: str) -> None:
    """A message for the user; in a run of several processes only rank 0's are printed."""
    if _rank() == 0:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "vae-explorer",
        description="Train, evaluate and export Variational Autoencoders without the GUI.",
    )
    sub = p.add_subparsers(dest="command", metavar="{train,evaluate,export,compare}")
    sub.required = True

    t = sub.add_parser("train", help="train a VAE and save a checkpoint",
                       description="Train a VAE; all figures are in nats per example.")
    t.add_argument("--dataset", help="mnist, digits, shapes, or a path to a folder or file (default mnist)")
    t.add_argument("--size", type=int, help="resize images to SIZE x SIZE")
    t.add_argument("--binarize", choices=("none", "static", "dynamic"), help="binarise the images (default none)")
    t.add_argument("--test-fraction", type=float, help="fraction of examples held out for testing (default 0.1)")
    t.add_argument("--shapes-count", dest="n", type=int, metavar="N",
                   help="number of images generated for --dataset shapes (default 10000, at most 2000000)")
    t.add_argument("--latent-dim", type=int, help="number of latent dimensions (default 2)")
    t.add_argument("--arch", choices=ARCHITECTURES, help="encoder/decoder architecture (default mlp)")
    t.add_argument("--hidden", help='hidden layer widths (mlp) or channels (conv), e.g. "512,256"; "none" = linear')
    t.add_argument("--likelihood", choices=LIKELIHOODS, help="decoder likelihood p(x|z) (default bernoulli)")
    t.add_argument("--sigma", type=float, help="std of the Gaussian likelihood (default 0.1)")
    t.add_argument("--learn-sigma", action="store_true", default=None, help="learn the Gaussian std")
    t.add_argument("--epochs", type=int, help="train until this many epochs in total (default 10)")
    t.add_argument("--batch-size", type=int, help="examples per batch (default 128)")
    t.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    t.add_argument("--beta", type=float, help="KL weight; 1 = the true ELBO (default 1)")
    t.add_argument("--warmup", choices=WARMUPS, help="KL warm-up schedule (default none)")
    t.add_argument("--warmup-epochs", type=int, help="length of the warm-up ramp or cycle (default 10)")
    t.add_argument("--free-bits", type=float, help="minimum KL in nats charged per latent dim (default 0)")
    t.add_argument("--mc-samples", type=int, help="Monte Carlo samples of z per example (default 1)")
    t.add_argument("--seed", type=int, help="random seed of initialisation and training (default 0)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    t.add_argument("--threads", type=int, help="torch CPU threads; 0 = torch's default")
    t.add_argument("--precision", choices=PRECISIONS,
                   help="bf16 runs the networks in bfloat16 on a CUDA GPU (mixed precision; the loss and every "
                        "figure stay float32); default fp32")
    t.add_argument("--max-steps", type=int, metavar="STEPS",
                   help="stop once the run has taken this many batches in total (before --epochs if sooner); "
                        "the checkpoint continues mid-epoch with --resume")
    t.add_argument("--out", help="checkpoint to write (default run.ckpt, or the --resume file; with --run-dir "
                                 "only DIR/latest.ckpt unless given)")
    t.add_argument("--resume", metavar="CKPT", help="continue training from this checkpoint")
    t.add_argument("--run-dir", metavar="DIR",
                   help="write a run folder that anyone can follow: DIR/config.json, DIR/events.jsonl and "
                        "DIR/latest.ckpt after every epoch and on stop; a run folder with a latest.ckpt is "
                        "continued from it (as after a restart)")
    t.add_argument("--keep", type=int, metavar="K",
                   help="with --run-dir, also keep the last K epochs' checkpoints (DIR/epoch-0007.ckpt); default 0")
    t.add_argument("--nproc", type=int, metavar="N",
                   help="train one model on N processes of this machine (data parallel, through "
                        "torch.distributed.run): one per GPU, or CPU processes; under torchrun leave it out")
    t.add_argument("--max-restarts", type=int, metavar="K",
                   help="with --nproc, start the processes again up to K times when one fails; with --run-dir "
                        "they continue from its latest checkpoint")
    t.add_argument("--json", action="store_true", help="print one JSON object per epoch instead of a progress bar")

    e = sub.add_parser("evaluate", help="test-split ELBO, IWAE log-likelihood, active units",
                       description="Evaluate a checkpoint on the test split of its dataset.")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", help="dataset to evaluate on (default: the checkpoint's)")
    e.add_argument("--size", type=int, help="resize images to SIZE x SIZE")
    e.add_argument("--iwae-k", type=int, default=0,
                   help="importance samples for the IWAE estimate of log p(x); 0 = skip (default 0)")
    e.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: cpu)")
    e.add_argument("--json", action="store_true", help="print a JSON object instead of a table")

    x = sub.add_parser("export", help="write every example's latent code to a CSV file",
                       description="Encode a dataset with a checkpoint's model and write "
                                   "index,label,mu_1..mu_d,sigma_1..sigma_d to CSV (label: the class name, "
                                   "numbers to six significant digits).")
    x.add_argument("checkpoint")
    x.add_argument("--latents", required=True, metavar="CSV", help="output CSV file ('-' = stdout)")
    x.add_argument("--dataset", help="dataset to encode (default: the checkpoint's)")
    x.add_argument("--size", type=int, help="resize images to SIZE x SIZE")
    x.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: cpu)")

    c = sub.add_parser("compare", help="compare checkpoints side by side: ELBO, IWAE, KL, prior mismatch, MIG, SAP",
                       description="Evaluate several checkpoints on the held-out (test split) examples of one "
                                   "dataset and print a table with one column per run: ELBO, IWAE_k, "
                                   "reconstruction and KL in nats per example, active units, the prior mismatch "
                                   "(KL between a Gaussian moment-matched to the mean codes and N(0, I)) and, on "
                                   "datasets with ground-truth factors (shapes), MIG and SAP.")
    c.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="checkpoint files, or run folders (each stands for its latest.ckpt)")
    c.add_argument("--dataset", help="dataset to evaluate on (default: the first checkpoint's); every checkpoint "
                                     "must take its images")
    c.add_argument("--size", type=int, help="resize images to SIZE x SIZE")
    c.add_argument("--iwae-k", type=int, default=COMPARE_IWAE_K,
                   help=f"importance samples for the IWAE estimate of log p(x); 0 = skip (default {COMPARE_IWAE_K})")
    c.add_argument("--examples", type=int, default=COMPARE_EXAMPLES, metavar="N",
                   help=f"held-out examples to use, a fixed subset when the test split is larger; also for MIG and "
                        f"SAP (default {COMPARE_EXAMPLES})")
    c.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: cpu)")
    c.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")
    c.add_argument("--csv", metavar="PATH", help="also write the table to this CSV file (one column per run)")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_ERROR)
    try:
        if args.command == "train":
            return cmd_train(args, argv)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "compare":
            return cmd_compare(args)
        return cmd_export(args)
    except VAEError as exc:
        _err(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _note("interrupted")
        return 130
    except OSError as exc:
        _err(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return EXIT_ERROR


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------


def _dataset_spec(base: dict[str, Any] | None, args: argparse.Namespace, fields: Sequence[str]) -> Any:
    """A DatasetSpec from ``base`` (a checkpoint's spec dict) with the given options applied."""
    from .data import DatasetSpec

    d = dict(base or {})
    if getattr(args, "dataset", None):
        d["source"] = args.dataset
    d.setdefault("source", TRAIN_DEFAULTS["dataset"])
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            d[name] = value
    return DatasetSpec.from_dict(d)


class _ProgressBar:
    """A ``progress(fraction, text)`` callable that shows a percentage bar on stderr once a task takes a while."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, fraction: float, text: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True, leave=False, delay=1.0,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
        self.bar.set_description_str(text, refresh=False)
        self.bar.update(fraction * 100 - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _load(spec: Any, show_progress: bool) -> Any:
    """``load_dataset(spec)``, with a progress bar on stderr when the load takes a while (decoding, drawing)."""
    from .data import load_dataset

    if not show_progress:
        return load_dataset(spec)
    bar = _ProgressBar()
    try:
        return load_dataset(spec, progress=bar)
    finally:
        bar.close()


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


class _SignalStop:
    """Turns SIGINT / SIGTERM into a request to stop after the current batch."""

    def __init__(self, control: Any) -> None:
        self.control = control
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_SignalStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # pragma: no cover - platform without the signal
                    pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        self.control.stop()

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _fmt(x: float, width: int = 10) -> str:
    return f"{x:{width}.3f}" if math.isfinite(x) else f"{'n/a':>{width}}"


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def _check_train_args(args: argparse.Namespace) -> None:
    """The checks of ``train`` options that need neither data nor torch (made before any process starts)."""
    for name in ("epochs", "max_steps", "keep", "max_restarts"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if args.keep and not args.run_dir:
        raise ConfigError("--keep keeps epoch checkpoints in a run folder; give --run-dir DIR too")


def cmd_train(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``train`` in this process, as one rank of the processes torchrun started, or (``--nproc``) by starting them.

    ``argv`` is the whole command line (``train ...``); ``--nproc`` runs it
    again on that many processes, where torchrun's environment makes
    ``--nproc`` and ``--max-restarts`` inert.
    """
    from . import distributed

    _check_train_args(args)
    if not distributed.launched():
        if args.nproc is not None:
            return distributed.launch(list(argv), args.nproc, args.max_restarts or 0)
        if args.max_restarts is not None:
            raise ConfigError("--max-restarts restarts the processes that --nproc starts; give --nproc N too")
    world = distributed.init_world(args.device or TRAIN_DEFAULTS["device"])
    code = _train(args, world)
    distributed.shutdown(world)
    return code


def _resume_checkpoint(args: argparse.Namespace, run_dir: Path | None, world: Any) -> tuple[Any, str | None]:
    """(checkpoint, its path) to continue: ``--resume``, else the run folder's latest.ckpt; (None, None) for a new run.

    In a data-parallel run rank 0 reads the file and sends its bytes to
    every rank, so that the other ranks need not see it (they may be on
    machines that do not share its disk).
    """
    from .checkpoint import checkpoint_from_bytes, load_checkpoint
    from .runs import LATEST

    def choose() -> str | None:
        if args.resume:
            return str(args.resume)
        if run_dir is not None and (run_dir / LATEST).is_file():
            return str(run_dir / LATEST)
        return None

    if world is None:
        path = choose()
        return (None, None) if path is None else (load_checkpoint(path), path)
    payload: tuple[str | None, bytes | None, str | None] | None = None
    if world.is_main:
        path = choose()
        payload = (None, None, None)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    payload = (path, f.read(), None)
            except OSError as exc:
                payload = (path, None, exc.strerror or str(exc))
    path, data, problem = world.broadcast(payload)
    if path is None:
        return None, None
    if data is None:
        raise CheckpointError(f"cannot open checkpoint {path}: {problem}")
    return checkpoint_from_bytes(data, path), path


def _fixed_options_that_differ(args: argparse.Namespace, ckpt: Any) -> list[str]:
    """The options fixed by a checkpoint (model shape, batch size, samples, seed) given with other values than its own.

    A run folder continued after a restart is given its first command line
    again: the options that agree with the checkpoint need no note.
    """
    m, t = ckpt.model_config, ckpt.train_config
    saved = {
        "latent_dim": m.latent_dim, "arch": m.architecture, "hidden": m.hidden_dims, "likelihood": m.likelihood,
        "sigma": m.sigma, "learn_sigma": m.learn_sigma, "batch_size": t.batch_size, "mc_samples": t.mc_samples,
        "seed": t.seed,
    }
    differ = []
    for name, value in saved.items():
        given = getattr(args, name)
        if given is None:
            continue
        if name == "hidden":
            try:
                given = parse_hidden_dims(given)
            except ConfigError:
                pass
        if given != value:
            differ.append(name)
    return differ


def _train(args: argparse.Namespace, world: Any) -> int:
    """Train in this process (one rank of ``world``, or alone when it is None); returns the exit status."""
    from .checkpoint import restore_trainer, save_checkpoint
    from .distributed import process_info, restart_count
    from .runs import LATEST, RunWriter
    from .training import Trainer, TrainControl

    def opt(name: str) -> Any:
        value = getattr(args, name)
        return TRAIN_DEFAULTS.get(name) if value is None else value

    main = world is None or world.is_main
    run_dir = Path(args.run_dir) if args.run_dir else None
    control = TrainControl()
    ckpt, resumed_from = _resume_checkpoint(args, run_dir, world)
    if ckpt is not None:
        if not args.resume:
            _note(f"continuing the run in {run_dir} from its latest checkpoint (epoch {ckpt.epoch}, step {ckpt.step})")
        fixed = _fixed_options_that_differ(args, ckpt)
        if fixed:
            _note("note: ignoring " + ", ".join("--" + n.replace("_", "-") for n in fixed)
                  + " when resuming (they are fixed by the checkpoint)")
        spec = _dataset_spec(ckpt.dataset_spec, args, ("size", "binarize", "test_fraction", "n"))
        dataset = _load(spec, main and not args.json)
        overrides = {}
        if args.device is not None:
            overrides["device"] = args.device
        if args.threads is not None:
            overrides["num_threads"] = args.threads
        if args.precision is not None:
            overrides["precision"] = args.precision
        if overrides:
            ckpt.train_config = ckpt.train_config.replace(**overrides)
        live = {n: getattr(args, n) for n in LIVE_SETTINGS if getattr(args, n) is not None}
        if live:
            control.set(**live)  # applied at the first batch and recorded in the history
        trainer = restore_trainer(ckpt, dataset, control=control, world=world)
        if trainer.train_config.precision != ckpt.train_config.precision:
            _note(f"note: the checkpoint was trained with --precision {ckpt.train_config.precision}, which needs a "
                  f"CUDA GPU; continuing in {trainer.train_config.precision} on {trainer.device.type}")
        target = args.epochs if args.epochs is not None else ckpt.train_config.epochs
        out = args.out if run_dir is not None else (args.out or args.resume)
    else:
        spec = _dataset_spec(None, args, ("size", "binarize", "test_fraction", "n"))
        arch = opt("arch")
        try:
            hidden = parse_hidden_dims(args.hidden) if args.hidden is not None else DEFAULT_HIDDEN[arch]
        except ConfigError as exc:
            raise ConfigError(f"--hidden: {exc}") from None
        tcfg = TrainConfig(
            epochs=opt("epochs"), batch_size=opt("batch_size"), lr=opt("lr"), beta=opt("beta"),
            warmup=opt("warmup"), warmup_epochs=opt("warmup_epochs"), free_bits=opt("free_bits"),
            mc_samples=opt("mc_samples"), seed=opt("seed"), device=opt("device"), num_threads=opt("threads"),
            precision=opt("precision"),
        )
        dataset = _load(spec, main and not args.json)
        mcfg = ModelConfig(
            input_shape=dataset.input_shape, latent_dim=opt("latent_dim"), architecture=arch,
            hidden_dims=hidden, likelihood=opt("likelihood"), sigma=opt("sigma"),
            learn_sigma=bool(args.learn_sigma),
        )
        trainer = Trainer(mcfg, tcfg, dataset, control=control, world=world)
        target = tcfg.epochs
        out = args.out if run_dir is not None else (args.out or "run.ckpt")

    ranks = world.gather(world.describe()) if world is not None else [process_info(0, trainer.device)]
    writer = None
    if main and run_dir is not None:
        writer = RunWriter(run_dir, trainer, keep=args.keep or 0)
        writer.start(ranks, resumed_from=resumed_from, restart=restart_count())
    with _SignalStop(control) as sig:
        # Still inside at the end: a second Ctrl+C must not cut the final save short.
        try:
            outcome = _train_loop(trainer, target, args.json, args.max_steps, show=main, run=writer)
            if main:
                if out:
                    save_checkpoint(trainer, out)
                if writer is not None:
                    writer.finish()
        finally:
            if writer is not None:
                writer.close()
        if world is not None:
            world.barrier()  # no rank leaves before rank 0 has saved
    saved = out or str(Path(args.run_dir) / LATEST)
    again = f"--run-dir {run_dir}" if run_dir is not None else f"--resume {saved}"
    where = f"epoch {trainer.epoch}, step {trainer.step}"
    if sig.signum is not None:
        name = "SIGTERM" if sig.signum == signal.SIGTERM else "SIGINT"
        _note(f"stopped by {name} at {where}; checkpoint saved to {saved} (continue with {again})")
        return 128 + int(sig.signum)
    if outcome.startswith("diverged:"):
        if main:
            _err(outcome[len("diverged:"):].strip() + f" Checkpoint saved to {saved}; continue with {again} --lr <lower>.")
        return EXIT_DIVERGED
    if not args.json:
        _note(f"saved {saved} ({where})")
    return 0


def _epoch_record(ev: Any) -> dict[str, Any]:
    return {
        "epoch": ev.epoch,
        "step": ev.step,
        "train_loss": ev.train_loss,
        "test_elbo": ev.test_elbo,
        "test_recon": ev.test_recon,
        "test_kl": ev.test_kl,
        "active_units": ev.active_units,
        "kl_per_dim": [float(v) for v in ev.kl_per_dim],
        "seconds": round(ev.seconds, 4),
    }


def _train_loop(
    trainer: Any, target: int, as_json: bool, max_steps: int | None = None, show: bool = True, run: Any = None
) -> str:
    """Consume ``trainer.run`` up to ``target`` epochs (or ``max_steps`` steps in all); returns how it ended.

    ``show`` prints progress (a bar, or with ``as_json`` a JSON line per
    epoch); ``run``, a ``runs.RunWriter``, records every event.
    """
    remaining = max(0, target - trainer.epoch)
    if max_steps is not None and trainer.step >= max_steps:
        remaining = 0
    bar = None
    if show and not as_json and remaining:
        from tqdm import tqdm

        total = remaining * trainer.n_batches - trainer.batch_position
        if max_steps is not None:
            total = min(total, max_steps - trainer.step)
        bar = tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True,
                   desc=f"epoch {trainer.epoch + 1}/{target}")
    outcome = "finished"
    d = trainer.model_config.latent_dim
    try:
        for ev in trainer.run(epochs=remaining):
            if run is not None:
                run.record(ev)
            kind = ev.kind
            if kind == "batch":
                if bar is not None:
                    bar.set_postfix_str(f"loss={ev.loss:.2f} recon={ev.recon:.2f} KL={ev.kl:.2f}", refresh=False)
                    bar.update(1)
                if max_steps is not None and ev.step >= max_steps:
                    trainer.control.stop()  # takes effect before the next batch
            elif kind == "epoch":
                if as_json and show:
                    print(json.dumps(_epoch_record(ev)), flush=True)
                elif bar is not None:
                    bar.write(
                        f"epoch {ev.epoch}: test ELBO {ev.test_elbo:.3f} nats (recon {ev.test_recon:.3f}, "
                        f"KL {ev.test_kl:.3f}), active units {ev.active_units}/{d}, train loss {ev.train_loss:.3f}"
                    )
                    if ev.epoch < target:
                        bar.set_description_str(f"epoch {ev.epoch + 1}/{target}", refresh=False)
            elif kind == "change" and show:
                msg = f"{ev.name}: {ev.old} -> {ev.new} at step {ev.step}"
                bar.write(msg) if bar is not None else _note(msg)
            elif kind == "status":
                if ev.status == "diverged":
                    outcome = "diverged: " + ev.message
                    trainer.control.stop()  # nobody is there to resume a headless run
                elif ev.status == "stopped" and not outcome.startswith("diverged"):
                    outcome = "stopped"
    finally:
        if bar is not None:
            bar.close()
    return outcome


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


def _checkpoint_and_dataset(args: argparse.Namespace) -> tuple[Any, Any]:
    from .checkpoint import check_dataset_fits, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    spec = _dataset_spec(ckpt.dataset_spec, args, ("size",))
    dataset = _load(spec, not getattr(args, "json", False))
    check_dataset_fits(ckpt, dataset)
    return ckpt, dataset


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import restore_trainer

    if args.iwae_k < 0:
        raise ConfigError(f"--iwae-k must be >= 0, got {args.iwae_k}")
    ckpt, dataset = _checkpoint_and_dataset(args)
    trainer = restore_trainer(ckpt, dataset, device=args.device or "cpu")
    _set_threads(trainer.train_config.num_threads)
    res = trainer.evaluate("test", iwae_k=args.iwae_k)
    d = ckpt.model_config.latent_dim
    record = {
        "checkpoint": str(args.checkpoint),
        "dataset": dataset.name,
        "split": "test",
        "n": res["n"],
        "epoch": ckpt.epoch,
        "step": ckpt.step,
        "elbo": res["elbo"],
        "recon": res["recon"],
        "kl": res["kl"],
        "iwae": res.get("iwae"),
        "iwae_k": args.iwae_k,
        "active_units": res["active_units"],
        "latent_dim": d,
        "kl_per_dim": [float(v) for v in res["kl_per_dim"]],
    }
    if args.json:
        print(json.dumps(record), flush=True)
        return 0
    rows = [
        ("checkpoint", f"{args.checkpoint} (epoch {ckpt.epoch}, step {ckpt.step})"),
        ("dataset", f"{dataset.name}, test split, {res['n']} examples"),
        ("ELBO", f"{_fmt(res['elbo']).strip()} nats per example (lower bound on log p(x))"),
        ("  recon", f"{_fmt(res['recon']).strip()} nats  (-E_q[log p(x|z)])"),
        ("  KL", f"{_fmt(res['kl']).strip()} nats  (KL(q(z|x) || p(z)))"),
    ]
    if args.iwae_k > 0:
        rows.append((f"IWAE k={args.iwae_k}", f"{_fmt(res['iwae']).strip()} nats per example (estimate of log p(x))"))
    else:
        rows.append(("IWAE", "skipped (use --iwae-k K, e.g. 1000)"))
    rows.append(("active units", f"{res['active_units']} / {d}"))
    rows.append(("KL per dim", " ".join(f"{v:.3f}" for v in res["kl_per_dim"])))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .export import iter_latents_csv, write_latents_csv
    from .model import resolve_device
    from .training import encode_dataset

    ckpt, dataset = _checkpoint_and_dataset(args)
    device = resolve_device(args.device or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {args.device!r} asked for, but CUDA is not available here; use the CPU")
    _set_threads(ckpt.train_config.num_threads)
    model = ckpt.build_model().to(device)
    mu, logvar = encode_dataset(model, dataset.images, ckpt.train_config.eval_batch_size)
    columns = {"logvar": logvar, "labels": dataset.labels, "label_names": dataset.label_names}
    if args.latents == "-":
        for piece in iter_latents_csv(mu, **columns):
            sys.stdout.write(piece)
        sys.stdout.flush()
    else:
        rows = write_latents_csv(args.latents, mu, **columns)
        _note(f"wrote {rows} latent codes ({mu.shape[1]} dims) to {args.latents}")
    return 0


# ---------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------


def _compared_checkpoints(paths: Sequence[str]) -> list[tuple[Any, str]]:
    """(checkpoint, name) of every path given: a run folder stands for its latest.ckpt and goes by its run's name.

    Names that two runs share get their folder's name in front.  Raises
    CheckpointError naming the file that is missing or cannot be read.
    """
    from .checkpoint import load_checkpoint
    from .runs import LATEST, read_run

    found: list[tuple[Any, str, Path]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            latest = path / LATEST
            if not latest.is_file():
                raise CheckpointError(f"{path} is a folder without a {LATEST} (not a run folder with a checkpoint)")
            try:
                name = read_run(path).name
            except OSError:
                name = path.resolve().name
            found.append((load_checkpoint(latest), name, latest))
        else:
            found.append((load_checkpoint(path), path.stem, path))
    names = [name for _, name, _ in found]
    out = []
    for ckpt, name, path in found:
        if names.count(name) > 1:
            name = f"{path.resolve().parent.name}/{name}"
        out.append((ckpt, name))
    return out


def _table_text(figures: Sequence[Any]) -> str:
    """The comparison table as text: a row per figure, a column per run, then each run's notes.

    MIG and SAP rows are left out when no run has them (a dataset without ground-truth factors).
    """
    from .compare import TABLE_ROWS, format_value

    header = ["", *[f.name for f in figures]]
    shown = [row for row in TABLE_ROWS
             if row.key not in ("mig", "sap") or any(getattr(f, row.key) is not None for f in figures)]
    rows = [header] + [[row.label, *[format_value(f, row.key) for f in figures]] for row in shown]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for f in figures:
        for note in f.notes:
            lines.append(f"note ({f.name}): {note}")
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    from .checkpoint import check_dataset_fits
    from .compare import compare_run, write_table_csv

    if args.iwae_k < 0:
        raise ConfigError(f"--iwae-k must be >= 0, got {args.iwae_k}")
    if args.examples < 1:
        raise ConfigError(f"--examples must be at least 1, got {args.examples}")
    runs = _compared_checkpoints(args.checkpoints)
    first = runs[0][0]
    spec = _dataset_spec(first.dataset_spec, args, ("size",))
    dataset = _load(spec, not args.json)
    for ckpt, _ in runs:
        check_dataset_fits(ckpt, dataset)
    if not args.dataset:
        for ckpt, _ in runs[1:]:
            if ckpt.dataset_spec != first.dataset_spec:
                _note(f"note: {ckpt.path} was trained on another dataset or split than {first.path}; "
                      f"every run is evaluated on the held-out examples of {dataset.name!r}")
    _set_threads(first.train_config.num_threads)
    figures = []
    for ckpt, name in runs:
        bar = None if args.json else _ProgressBar()
        try:
            figures.append(compare_run(
                ckpt, dataset, name=name, iwae_k=args.iwae_k, max_examples=args.examples,
                factor_examples=args.examples, device=args.device or "cpu", progress=bar,
            ))
        finally:
            if bar is not None:
                bar.close()
    if args.json:
        for f in figures:
            print(json.dumps(f.to_dict()), flush=True)
    else:
        print(f"dataset {dataset.name}, held-out (test split) examples; figures in nats per example", flush=True)
        print(_table_text(figures), flush=True)
    if args.csv:
        write_table_csv(args.csv, figures)
        _note(f"wrote the table of {len(figures)} run{'s' if len(figures) != 1 else ''} to {args.csv}")
    return 0
