"""The ``Trainer``: the training loop as a generator, its snapshots, NaN rollback and checkpoint state.

Reproducibility: the model is initialised from ``train_config.seed`` without
touching torch's global RNG, and the trainer owns the generators it draws from
(shuffling, reparameterisation noise, dynamic binarisation, evaluation noise),
so a run is the same whatever other threads do with torch's global RNG, and a
checkpoint taken anywhere (even mid-epoch) continues bit for bit.

Given a ``World`` of several processes the trainer is one rank of a
data-parallel run (see ``vae_core.distributed``): every rank holds the same
generators and draws for the global batch, trains its slice of it through
``DistributedDataParallel``, and all-reduces the figures, so the run follows
the one-process run and its checkpoints are the same whatever the number of
processes.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import LIVE_SETTINGS, ModelConfig, TrainConfig, kl_weight
from ..distributed import World, data_parallel
from ..errors import ConfigError
from ..model import VAE, resolve_device, vae_from_state
from ..objectives import elbo
from .batches import DeviceImages, ImageSplit
from .control import TrainControl
from .evaluate import encode_dataset, evaluate_model
from .events import BatchEvent, ChangeEvent, EpochEvent, StatusEvent
from .history import History
from .precision import AutocastVAE

#: Steps between the in-memory copies the trainer rolls back to after a NaN.
ROLLBACK_EVERY = 200

# Stream numbers for the generators derived from the seed.
_STREAM_SHUFFLE, _STREAM_NOISE, _STREAM_BINARIZE, _STREAM_EVAL, _STREAM_TEST_BINARIZE = range(1, 6)


def derive_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def make_generator(device: torch.device, seed: int, stream: int) -> torch.Generator:
    """A generator on ``device`` seeded for one stream of the run seeded ``seed`` (see ``derive_seed``)."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream))
    return g


def build_model(model_config: ModelConfig, seed: int) -> VAE:
    """A freshly initialised VAE on the CPU, seeded without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return VAE(model_config)


@dataclass(frozen=True)
class ModelSnapshot:
    """The model's weights at one step, as CPU tensor clones that nobody else changes."""

    model_config: ModelConfig
    state: dict[str, torch.Tensor] = field(repr=False)
    step: int
    epoch: int

    def build_model(self, share: bool = False) -> VAE:
        """An eval-mode VAE on the CPU with these weights: its own copy, or with ``share`` the snapshot's tensors.

        Sharing is safe because nobody changes a snapshot; the model must
        then not be trained either (see ``model.vae_from_state``).
        """
        return vae_from_state(self.model_config, self.state, share=share)


@dataclass(frozen=True)
class TrainerState:
    """Everything that restores a trainer exactly, as CPU copies nobody else holds (``Trainer.get_state``).

    ``model`` is the model's state dict; ``optimizer`` the optimizer's, in
    torch's form (``{"state": {param: {key: value}}, "param_groups": [...]}``);
    ``rng`` the states of the "shuffle", "noise" and "binarize" generators, as
    uint8 tensors, drawn on a ``rng_device`` device.  ``batch`` is the next
    batch of the current epoch and ``perm`` that epoch's order of the
    ``n_train`` training examples (None between epochs), with the running loss
    sum and example count of the epoch.  ``settings`` are the live settings,
    ``history`` a copy of the run's history, ``latents`` / ``latent_logvar``
    the last codes of every example (None before the first epoch ends).
    """

    model: dict[str, torch.Tensor] = field(repr=False)
    optimizer: dict[str, Any] = field(repr=False)
    rng: dict[str, torch.Tensor] = field(repr=False)
    rng_device: str
    epoch: int
    step: int
    batch: int
    perm: torch.Tensor | None = field(repr=False)
    n_train: int
    epoch_loss_sum: float
    epoch_count: int
    settings: dict[str, Any]
    history: History = field(repr=False)
    latents: np.ndarray | None = field(repr=False)
    latent_logvar: np.ndarray | None = field(repr=False)


def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    """Deep copy of a (nested) state dict, cloning every tensor."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _clone_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_clone_state(v) for v in state]
    if isinstance(state, tuple):
        return tuple(_clone_state(v) for v in state)
    return state


class Trainer:
    """Trains a VAE on a dataset; ``run()`` is a generator of events.

    ``train_config`` always holds the current settings: a change made through
    the control replaces it (and is recorded in ``history.changes``).

    With ``world`` (a ``vae_core.distributed.World`` of more than one process)
    the trainer is one rank of a data-parallel run on the world's device;
    every rank must be built with the same configs, dataset and state.  The
    ranks stop together: a stop asked of any rank's control takes effect on
    all of them before the same batch.  Pauses and setting changes act on the
    rank they are given to, so give them to every rank (the command line
    does).  Held-out figures are computed on rank 0 and sent to the others;
    only rank 0 encodes the dataset at the end of an epoch (the other ranks'
    epoch events carry empty latents).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        dataset: Any,
        control: TrainControl | None = None,
        device: str | torch.device | None = None,
        world: World | None = None,
    ) -> None:
        shape = tuple(int(s) for s in dataset.input_shape)
        if shape != tuple(model_config.input_shape):
            raise ConfigError(
                f"the model expects {'x'.join(map(str, model_config.input_shape))} images, "
                f"dataset {getattr(dataset, 'name', '?')!r} has {'x'.join(map(str, shape))}"
            )
        self.model_config = model_config
        self.train_config = train_config
        self.dataset = dataset
        self.control = control if control is not None else TrainControl()
        #: The process group of a data-parallel run; None on one process.
        self.world: World | None = world if world is not None and world.size > 1 else None
        if self.world is not None:
            device = self.world.device
        dev = device if device is not None else train_config.device
        self.device = dev if isinstance(dev, torch.device) else resolve_device(str(dev))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {str(dev)!r} asked for, but CUDA is not available here; use the CPU")
        seed = train_config.seed
        if train_config.precision == "bf16":
            if self.device.type != "cuda":
                raise ConfigError(
                    "precision 'bf16' (mixed precision) runs on a CUDA GPU only, and this run is on the CPU; "
                    "use precision 'fp32'"
                )
            if not torch.cuda.is_bf16_supported():
                raise ConfigError(
                    f"this GPU ({torch.cuda.get_device_name(self.device)}) does not compute in bfloat16; "
                    "use precision 'fp32'"
                )

        self.model = build_model(model_config, seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.lr)
        #: What the objective runs: the model itself, or the model under autocast for "bf16".
        self._objective_model: VAE | AutocastVAE = (
            AutocastVAE(self.model, self.device.type) if train_config.precision == "bf16" else self.model
        )
        #: This rank's objective under DistributedDataParallel (a data-parallel run only).
        self._shards: torch.nn.Module | None = (
            None if self.world is None else data_parallel(self.model, self._objective_model, self.world)
        )

        self._shuffle_gen = make_generator(torch.device("cpu"), seed, _STREAM_SHUFFLE)
        self._noise_gen = make_generator(self.device, seed, _STREAM_NOISE)
        self._binarize_gen = make_generator(self.device, seed, _STREAM_BINARIZE)

        images = dataset.images
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise ConfigError(f"dataset images must be shaped (N, {', '.join(map(str, shape))}), got {tuple(images.shape)}")
        # The images stay as the dataset stores them (uint8 or float32, possibly
        # memory-mapped); batches are converted to float on the device.
        self._images = DeviceImages(images, self.device)
        self._train_rows = torch.as_tensor(np.asarray(dataset.train_idx, dtype=np.int64))
        self._test_rows = torch.as_tensor(np.asarray(dataset.test_idx, dtype=np.int64))
        self._dynamic = getattr(dataset, "binarize", "none") == "dynamic"
        self._x_train = ImageSplit(self._images, self._train_rows)
        self._x_test_eval = self._eval_split(self._test_rows)
        self.n_train = len(self._x_train)
        if self.n_train == 0:
            raise ConfigError(f"dataset {getattr(dataset, 'name', '?')!r} has no training examples")

        self.history = History()
        self.epoch = 0
        self.step = 0
        self._batch_pos = 0  # next batch of the current epoch
        self._perm: torch.Tensor | None = None
        self._epoch_loss_sum = 0.0
        self._epoch_count = 0
        self.latents: np.ndarray | None = None
        self.latent_logvar: np.ndarray | None = None
        self._state_lock = threading.Lock()
        self._good: tuple[int, dict, dict] | None = None
        # A copy taken every ROLLBACK_EVERY steps becomes the rollback point only
        # once the next batch's loss, computed with those weights, is finite.
        self._candidate: tuple[int, dict, dict] | None = None
        self._keep_good()
        #: Called as ``boundary_hook(trainer, epoch_end)`` by the thread running
        #: ``run()`` after each batch event (``epoch_end`` False) and each epoch
        #: event (True) has been consumed.  The trainer is idle and consistent
        #: then, so the hook may save a checkpoint; it should return quickly
        #: when it has nothing to do.
        self.boundary_hook: Callable[["Trainer", bool], None] | None = None

    # -- small accessors ---------------------------------------------------
    @property
    def n_batches(self) -> int:
        return -(-self.n_train // self.train_config.batch_size)

    @property
    def batch_position(self) -> int:
        """Index of the next batch within the current epoch."""
        return self._batch_pos

    @property
    def settings(self) -> dict[str, Any]:
        c = self.train_config
        return {name: getattr(c, name) for name in LIVE_SETTINGS}

    @property
    def n_examples(self) -> int:
        """Number of examples in the dataset (both splits): the rows of ``latents``."""
        return int(self._images.shape[0])

    @property
    def labels(self) -> np.ndarray | None:
        labels = getattr(self.dataset, "labels", None)
        return None if labels is None else np.asarray(labels, dtype=np.int64)

    # -- snapshots and evaluation -------------------------------------------
    def snapshot(self) -> ModelSnapshot:
        """CPU copies of the weights; safe to call from any thread while training runs."""
        with self._state_lock:
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            return ModelSnapshot(self.model_config, state, self.step, self.epoch)

    def _eval_generator(self) -> torch.Generator:
        # Reseeded for every evaluation, so that evaluating a model twice gives
        # the same figures and evaluation does not disturb the training streams.
        return make_generator(self.device, self.train_config.seed, _STREAM_EVAL)

    def _eval_split(self, rows: torch.Tensor | None) -> ImageSplit:
        """The examples at ``rows`` (None: all, in dataset order) as evaluation reads them.

        With dynamic binarisation each evaluation batch is binarised with a
        generator seeded from the run's seed and the batch's first position,
        so every evaluation sees the same binary images.
        """
        if not self._dynamic:
            return ImageSplit(self._images, rows)
        seed = derive_seed(self.train_config.seed, _STREAM_TEST_BINARIZE)
        device = self.device
        return ImageSplit(self._images, rows, binarize=lambda start: make_generator(device, seed, start))

    def _split(self, split: str) -> ImageSplit:
        if split == "test":
            return self._x_test_eval
        if split == "train":
            return self._eval_split(self._train_rows)
        if split == "all":
            return self._eval_split(None)
        raise ConfigError(f"split must be 'test', 'train' or 'all', got {split!r}")

    def evaluate(self, split: str = "test", iwae_k: int = 0) -> dict[str, Any]:
        """Figures for one split (see ``evaluate_model``); call it when ``run`` is not stepping."""
        return evaluate_model(
            self.model, self._split(split), self.train_config.eval_batch_size, iwae_k, self._eval_generator()
        )

    def encode_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) for every example in dataset order (grey levels for dynamic binarisation)."""
        return encode_dataset(self.model, ImageSplit(self._images), self.train_config.eval_batch_size)

    # -- rollback ------------------------------------------------------------
    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _copy_state(self) -> tuple[int, dict, dict] | None:
        """(step, model state, optimizer state) copies, or None when the weights are not finite.

        A step can turn the weights into NaN / inf while the loss it was computed
        from was finite; such a state must never become the rollback point.
        """
        if not self._weights_finite():
            return None
        with self._state_lock:
            return (
                self.step,
                _clone_state(self.model.state_dict()),
                _clone_state(self.optimizer.state_dict()),
            )

    def _keep_good(self) -> bool:
        """Make the current state the rollback point (when its weights are finite)."""
        copy = self._copy_state()
        if copy is None:
            return False
        self._good = copy
        self._candidate = None
        return True

    def _roll_back(self) -> int:
        assert self._good is not None
        self._candidate = None
        step0, model_state, opt_state = self._good
        with self._state_lock:
            self.model.load_state_dict(model_state)
            # load_state_dict may adopt the given tensors: hand it copies so the
            # kept state survives a second rollback.
            self.optimizer.load_state_dict(_clone_state(opt_state))
            for group in self.optimizer.param_groups:
                group["lr"] = self.train_config.lr
        self.optimizer.zero_grad(set_to_none=True)
        return step0

    # -- control -------------------------------------------------------------
    def _apply_changes(self, changes: dict[str, Any]) -> list[ChangeEvent]:
        events = []
        for name, new in changes.items():
            old = getattr(self.train_config, name)
            if new == old:
                continue
            self.train_config = self.train_config.replace(**{name: new})
            if name == "lr":
                with self._state_lock:
                    for group in self.optimizer.param_groups:
                        group["lr"] = new
            self.history.add_change(self.step, name, old, new)
            events.append(ChangeEvent(self.step, name, old, new))
        return events

    def _control_point(self, stop_agreed: bool = True) -> Iterator[Any]:
        """Handle pending control requests, yielding events; sets ``_stop_now`` on a stop.

        While paused it blocks, waking every 0.1 s: changes made meanwhile are
        applied (and reported) at once, a stop or a resume ends the wait.  A
        stop that the ranks of a data-parallel run have not yet agreed on
        (``stop_agreed`` False: it came after they compared their requests)
        only ends a pause; it takes effect before the next batch.
        """
        control = self.control
        changes, paused, stopped = control._take()
        yield from self._apply_changes(changes)
        if stopped:
            self._stop_now = stop_agreed
            return
        if not paused:
            return
        yield StatusEvent("paused", f"paused at step {self.step}", self.step)
        while True:
            control._wait(0.1)
            if not control.pending:
                continue
            changes, paused, stopped = control._take()
            yield from self._apply_changes(changes)
            if stopped:
                self._stop_now = stop_agreed
                return
            if not paused:
                yield StatusEvent("resumed", f"resumed at step {self.step}", self.step)
                return

    # -- the loop ------------------------------------------------------------
    def run(self, epochs: int | None = None) -> Iterator[Any]:
        """Train, yielding events, until ``train_config.epochs`` epochs are done
        (or ``epochs`` more than now).  Ends with StatusEvent "finished" or "stopped"."""
        target = self.train_config.epochs if epochs is None else self.epoch + int(epochs)
        if self.train_config.num_threads > 0:
            torch.set_num_threads(self.train_config.num_threads)
        # Subnormal floats (below ~1e-38) appear in the weights and activations after a few
        # epochs and make x86 CPUs up to twice as slow; they are flushed to zero instead.
        # The flag belongs to the calling thread (and threads it starts later).
        torch.set_flush_denormal(True)
        model = self.model
        world = self.world
        objective_model = self._objective_model
        opt = self.optimizer
        control = self.control
        history = self.history
        cfg = self.train_config
        bs = cfg.batch_size
        mc = cfg.mc_samples
        x_train = self._x_train
        dynamic = self._dynamic
        noise_gen = self._noise_gen
        bin_gen = self._binarize_gen
        n_batches = self.n_batches
        self._stop_now = False
        model.train()

        rate = 0.0
        t_last = time.perf_counter()
        epoch_t0 = t_last
        # Wall times continue from the last recorded step (a resumed run goes on from there).
        run_t0, wall0 = t_last, history.last_wall_time()
        while self.epoch < target:
            if self._perm is None:
                # Kept where the batch's rows are gathered (the GPU when the images are there).
                self._perm = torch.randperm(self.n_train, generator=self._shuffle_gen).to(x_train.rows.device)
                self._batch_pos = 0
                self._epoch_loss_sum = 0.0
                self._epoch_count = 0
                epoch_t0 = time.perf_counter()
            perm = self._perm
            while self._batch_pos < n_batches:
                stop_agreed = True
                if world is not None:
                    # Every rank takes the same decision before the same batch.
                    stop_agreed = world.agree(control.stopped)
                    if stop_agreed and not control.stopped:
                        control.stop()
                if control.pending:
                    yield from self._control_point(stop_agreed)
                    if self._stop_now:
                        yield StatusEvent("stopped", f"stopped at step {self.step}", self.step)
                        return
                    cfg = self.train_config
                    t_last = time.perf_counter()
                b = self._batch_pos
                idx = perm[b * bs : (b + 1) * bs]
                beta = kl_weight(cfg.beta, cfg.warmup, cfg.warmup_epochs, self.epoch + b / n_batches)
                if world is None:
                    x = x_train.gather(idx)
                    if dynamic:
                        x = torch.bernoulli(x, generator=bin_gen)
                    out = elbo(
                        objective_model, x, beta=beta, mc_samples=mc, free_bits=cfg.free_bits, generator=noise_gen
                    )
                    loss = out.loss.mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    loss_v, recon_v, kl_v = torch.stack(
                        (loss.detach(), out.recon.detach().mean(), out.kl.detach().mean())
                    ).tolist()
                else:
                    loss_v, recon_v, kl_v = self._shard_step(idx, beta, cfg)
                n = int(idx.numel())
                if not (math.isfinite(loss_v) and math.isfinite(recon_v) and math.isfinite(kl_v)):
                    yield self._diverge(
                        f"the loss became {'NaN' if math.isnan(loss_v) else 'infinite'} at step {self.step + 1}"
                    )
                    continue
                if self._candidate is not None:
                    self._good, self._candidate = self._candidate, None
                with self._state_lock:
                    opt.step()
                self.step += 1
                self._batch_pos = b + 1
                self._epoch_loss_sum += loss_v * n
                self._epoch_count += n
                now = time.perf_counter()
                wall = wall0 + (now - run_t0)
                history.append_step(self.step, recon_v, kl_v, loss_v, beta, cfg.lr, wall)
                dt = now - t_last
                t_last = now
                if dt > 0:
                    r = n / dt
                    rate = r if rate == 0.0 else 0.9 * rate + 0.1 * r
                if self.step % ROLLBACK_EVERY == 0:
                    self._candidate = self._copy_state()
                yield BatchEvent(self.step, self.epoch, b, n_batches, recon_v, kl_v, loss_v, beta, cfg.lr, rate, wall)
                if self.boundary_hook is not None:
                    self.boundary_hook(self, False)
            # The last steps of the epoch may have broken the model although their
            # losses were finite: roll back before its figures and codes go out.
            # The pause starts at the next batch.
            rolled_back = False
            if not self._weights_finite():
                yield self._diverge(f"the weights became NaN or infinite at step {self.step}")
                rolled_back = True
            figures = self._heldout_figures()
            if figures["n"] and not all(math.isfinite(figures[k]) for k in ("elbo", "recon", "kl")):
                yield self._diverge(f"the held-out loss became NaN or infinite at step {self.step}")
                rolled_back = True
                figures = self._heldout_figures()
            yield self._end_epoch(epoch_t0, figures, keep=not rolled_back)
            if self.boundary_hook is not None:
                self.boundary_hook(self, True)
            cfg = self.train_config
            t_last = time.perf_counter()
        yield StatusEvent("finished", f"finished {self.epoch} epochs at step {self.step}", self.step)

    def _shard_step(self, idx: torch.Tensor, beta: float, cfg: TrainConfig) -> tuple[float, float, float]:
        """Forward and backward of this rank's slice of the global batch at ``idx``; (loss, recon, KL) of the global batch.

        The gradients left in the parameters are those of the mean loss over
        the global batch (DDP averages the ranks' gradients during backward),
        and the figures are its means, all-reduced as sums.
        """
        world = self.world
        assert world is not None and self._shards is not None
        n = int(idx.numel())
        lo, hi = world.shard(n)
        if self._dynamic:
            # The binary images of the whole global batch, as one process draws them.
            x = torch.bernoulli(self._x_train.gather(idx), generator=self._binarize_gen)[lo:hi]
        else:
            x = self._x_train.gather(idx[lo:hi])
        loss, sums = self._shards(
            x, batch=n, start=lo, beta=beta, mc_samples=cfg.mc_samples, free_bits=cfg.free_bits,
            generator=self._noise_gen,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss_v, recon_v, kl_v = (world.all_reduce_sum(sums) / n).tolist()
        return loss_v, recon_v, kl_v

    def _heldout_figures(self) -> dict[str, Any]:
        """The test split's figures; in a data-parallel run computed on rank 0 and sent to every rank."""
        if self.world is None:
            return self.evaluate("test")
        return self.world.broadcast(self.evaluate("test") if self.world.is_main else None)

    def _diverge(self, what: str) -> StatusEvent:
        """Roll back to the last good weights, ask for a pause and describe it."""
        at = self.step
        step0 = self._roll_back()
        self.history.add_change(at, "rollback", at, step0)
        self.control.pause()
        return StatusEvent(
            "diverged",
            f"{what} (learning rate {self.train_config.lr:g}); the model was rolled back to step {step0}. "
            "Lower the learning rate and resume.",
            at,
        )

    def _end_epoch(self, epoch_t0: float, ev: dict[str, Any], keep: bool = True) -> EpochEvent:
        self.epoch += 1
        self._perm = None
        self._batch_pos = 0
        train_loss = self._epoch_loss_sum / self._epoch_count if self._epoch_count else float("nan")
        if self.world is None or self.world.is_main:
            mu, logvar = self.encode_all()
            self.latents, self.latent_logvar = mu, logvar
        else:
            mu = logvar = np.zeros((0, self.model_config.latent_dim), dtype=np.float32)
        kl_per_dim = np.asarray(ev["kl_per_dim"], dtype=np.float64)
        self.history.add_epoch(
            {
                "epoch": self.epoch,
                "step": self.step,
                "train_loss": train_loss,
                "test_elbo": ev["elbo"],
                "test_recon": ev["recon"],
                "test_kl": ev["kl"],
                "active_units": ev["active_units"],
                "kl_per_dim": kl_per_dim.tolist(),
            }
        )
        if keep:
            self._keep_good()
        self.model.train()
        return EpochEvent(
            epoch=self.epoch,
            step=self.step,
            train_loss=train_loss,
            test_elbo=ev["elbo"],
            test_recon=ev["recon"],
            test_kl=ev["kl"],
            kl_per_dim=kl_per_dim,
            active_units=ev["active_units"],
            latents=mu.copy(),
            latent_logvar=logvar.copy(),
            seconds=time.perf_counter() - epoch_t0,
        )

    # -- the complete state ----------------------------------------------------
    def get_state(self) -> "TrainerState":
        """CPU copies of everything that restores this trainer exactly (see ``TrainerState``).

        Call it from the thread that runs ``run()`` (between events) or when
        training is not running.
        """

        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", copy=True).contiguous()

        with self._state_lock:
            model = {k: cpu(v) for k, v in self.model.state_dict().items()}
            opt = self.optimizer.state_dict()
            optimizer = {
                "state": {
                    pid: {key: cpu(v) if isinstance(v, torch.Tensor) else v for key, v in st.items()}
                    for pid, st in opt["state"].items()
                },
                "param_groups": [dict(g) for g in opt["param_groups"]],
            }
        rng = {name: g.get_state().to("cpu", copy=True) for name, g in self._generators().items()}
        return TrainerState(
            model=model,
            optimizer=optimizer,
            rng=rng,
            rng_device=self.device.type,
            epoch=self.epoch,
            step=self.step,
            batch=self._batch_pos,
            perm=None if self._perm is None else self._perm.to("cpu", copy=True),
            n_train=self.n_train,
            epoch_loss_sum=self._epoch_loss_sum,
            epoch_count=self._epoch_count,
            settings=self.settings,
            history=self.history.copy(),
            latents=None if self.latents is None else self.latents.copy(),
            latent_logvar=None if self.latent_logvar is None else self.latent_logvar.copy(),
        )

    def set_state(self, state: "TrainerState") -> None:
        """Continue from ``state`` (from ``get_state``, possibly of another process; the configs are the constructor's).

        Generator states saved on another kind of device are not restored
        (they do not transfer), except the CPU shuffling stream.  On a dataset
        with another number of training examples a state taken mid-epoch
        restarts that epoch from its first batch; latents of another number of
        examples are dropped.  Raises ``RuntimeError``, ``KeyError`` or
        ``ValueError`` when the state does not fit the model.
        """
        self.model.load_state_dict(state.model)
        groups = []
        for saved, current in zip(state.optimizer["param_groups"], self.optimizer.param_groups):
            group = dict(saved)
            for key, value in group.items():
                if isinstance(value, list) and isinstance(current.get(key), tuple):
                    group[key] = tuple(value)
            groups.append(group)
        # load_state_dict may adopt the given tensors and Adam then updates them in
        # place: hand it copies, so the state can restore another trainer too.
        self.optimizer.load_state_dict({"state": _clone_state(state.optimizer["state"]), "param_groups": groups})
        for group in self.optimizer.param_groups:
            group["lr"] = self.train_config.lr
        if state.rng_device == self.device.type:
            self._noise_gen.set_state(state.rng["noise"].clone())
            self._binarize_gen.set_state(state.rng["binarize"].clone())
        self._shuffle_gen.set_state(state.rng["shuffle"].clone())
        self.epoch = int(state.epoch)
        self.step = int(state.step)
        perm = state.perm
        if perm is not None and int(state.n_train) == self.n_train and perm.numel() == self.n_train:
            self._perm = perm.to(self._x_train.rows.device)
            self._batch_pos = int(state.batch)
            self._epoch_loss_sum = float(state.epoch_loss_sum)
            self._epoch_count = int(state.epoch_count)
        else:
            self._perm = None
            self._batch_pos = 0
            self._epoch_loss_sum = 0.0
            self._epoch_count = 0
        self.history = state.history.copy()
        if state.latents is not None and state.latent_logvar is not None and state.latents.shape[0] == self.n_examples:
            self.latents = np.array(state.latents, dtype=np.float32)
            self.latent_logvar = np.array(state.latent_logvar, dtype=np.float32)
        self._keep_good()

    def _generators(self) -> dict[str, torch.Generator]:
        """The generators whose states a ``TrainerState`` carries (the evaluation one is reseeded each time)."""
        return {"shuffle": self._shuffle_gen, "noise": self._noise_gen, "binarize": self._binarize_gen}
