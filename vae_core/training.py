"""The training loop as a generator, and a small thread-safe control object.

A GUI runs ``Trainer.run()`` in a worker thread and forwards the events it
yields; another thread steers it through a ``TrainControl`` (pause, resume,
stop, change beta / learning rate / warm-up / free bits).  Everything an event
carries is a Python number or a fresh numpy array, never a live tensor.

Reproducibility: the model is initialised from ``train_config.seed`` without
touching torch's global RNG, and the trainer owns the generators it draws from
(shuffling, reparameterisation noise, dynamic binarisation, evaluation noise),
so a run is the same whatever other threads do with torch's global RNG, and a
checkpoint taken anywhere (even mid-epoch) continues bit for bit.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch

from .config import WARMUPS, ModelConfig, TrainConfig, kl_weight
from .errors import ConfigError
from .model import VAE, resolve_device
from .objectives import elbo, iwae_log_likelihood

#: A latent dimension is "active" when the variance over the data of its
#: posterior mean exceeds this (Burda et al. 2016).
ACTIVE_UNIT_THRESHOLD = 0.01

#: Steps between the in-memory copies the trainer rolls back to after a NaN.
ROLLBACK_EVERY = 200

# Stream numbers for the generators derived from the seed.
_STREAM_SHUFFLE, _STREAM_NOISE, _STREAM_BINARIZE, _STREAM_EVAL, _STREAM_TEST_BINARIZE = range(1, 6)

SETTABLE = ("beta", "lr", "warmup", "warmup_epochs", "free_bits")


def derive_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def make_generator(device: torch.device, seed: int, stream: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream))
    return g


def build_model(model_config: ModelConfig, seed: int) -> VAE:
    """A freshly initialised VAE on the CPU, seeded without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return VAE(model_config)


def images_tensor(images: np.ndarray) -> torch.Tensor:
    """A float32 tensor over ``images`` (N, C, H, W), sharing memory where possible.

    The engine never writes to it, so read-only arrays are used as they are.
    """
    arr = np.ascontiguousarray(images, dtype=np.float32)
    if not arr.flags.writeable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr)
    return torch.from_numpy(arr)


def validate_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise live-settable values; raise ConfigError on a bad one."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in SETTABLE:
            raise ConfigError(f"cannot change {name!r} during training; settable: {', '.join(SETTABLE)}")
        if name == "warmup":
            if value not in WARMUPS:
                raise ConfigError(f"warmup must be one of {WARMUPS}, got {value!r}")
            out[name] = str(value)
            continue
        if name == "warmup_epochs":
            try:
                v = int(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"warmup_epochs must be an integer, got {value!r}") from exc
            if v != value or v < 1:
                raise ConfigError(f"warmup_epochs must be an integer of at least 1, got {value!r}")
            out[name] = v
            continue
        try:
            v = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be a number, got {value!r}") from exc
        if not math.isfinite(v):
            raise ConfigError(f"{name} must be finite, got {value!r}")
        if name == "lr" and not v > 0:
            raise ConfigError(f"learning rate must be positive, got {value!r}")
        if name in ("beta", "free_bits") and v < 0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")
        out[name] = v
    return out


# ---------------------------------------------------------------------------
# Control
# ---------------------------------------------------------------------------


class TrainControl:
    """Steers a running trainer from another thread.

    ``pause``/``resume``/``stop`` and ``set`` may be called from any thread at
    any time; the trainer acts on them at the next batch boundary.  ``stop``
    takes effect within one batch and also wakes a paused trainer.  The stop
    request stays set (``run`` keeps returning at once) until ``reset()``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._wake.set()
        self._paused = False
        self._stopped = False
        self._changes: dict[str, Any] = {}
        # Read by the trainer once per batch without the lock: True when there is
        # anything to look at (a pause, stop or change request).
        self.pending = False

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            self._wake.clear()
            self.pending = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._wake.set()
            self.pending = True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.set()
            self.pending = True

    def reset(self) -> None:
        """Clear a stop and a pause so that the trainer can be run again."""
        with self._lock:
            self._stopped = False
            self._paused = False
            self._wake.set()
            self.pending = bool(self._changes)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stopped

    def set(self, **changes: Any) -> None:
        """Request new values for beta, lr, warmup, warmup_epochs or free_bits.

        Values are validated here (ConfigError on a bad one, and then nothing
        is changed); the trainer applies them at the next batch boundary.
        """
        checked = validate_settings(changes)
        with self._lock:
            self._changes.update(checked)
            self.pending = True

    def pending_changes(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._changes)

    # -- used by the trainer ---------------------------------------------
    def _take(self) -> tuple[dict[str, Any], bool, bool]:
        """(changes, paused, stopped), clearing the changes; a stop stays pending until reset."""
        with self._lock:
            changes, self._changes = self._changes, {}
            self.pending = self._stopped
            return changes, self._paused, self._stopped

    def _wait(self, timeout: float) -> None:
        self._wake.wait(timeout)


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One optimizer step.  Means over the batch, in nats per example.

    ``step`` counts optimizer steps done; ``beta`` is the KL weight used
    (after warm-up); ``loss`` = recon + beta * KL (with free bits).
    """

    kind: ClassVar[str] = "batch"
    step: int
    epoch: int
    batch: int
    n_batches: int
    recon: float
    kl: float
    loss: float
    beta: float
    lr: float
    samples_per_s: float


@dataclass(frozen=True, slots=True)
class EpochEvent:
    """The end of an epoch: test-split figures (beta = 1, nats per example) and all latents.

    ``epoch`` is the number of epochs completed.  ``latents`` / ``latent_logvar``
    hold mu and log-variance of q(z|x) for every example in dataset order.
    """

    kind: ClassVar[str] = "epoch"
    epoch: int
    step: int
    train_loss: float
    test_elbo: float
    test_recon: float
    test_kl: float
    kl_per_dim: np.ndarray
    active_units: int
    latents: np.ndarray
    latent_logvar: np.ndarray
    seconds: float


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    kind: ClassVar[str] = "change"
    step: int
    name: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """status: "paused", "resumed", "stopped", "finished" or "diverged"."""

    kind: ClassVar[str] = "status"
    status: str
    message: str
    step: int


# ---------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------

STEP_FIELDS = ("step", "recon", "kl", "loss", "beta", "lr")


class History:
    """Everything a run has recorded: per-step curves, per-epoch figures, changes.

    The per-step values live in one growing float64 array (doubling, so
    appends are amortised O(1)); nothing is ever dropped.  Reading from
    another thread while the trainer appends is safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = np.zeros((1024, len(STEP_FIELDS)), dtype=np.float64)
        self._n = 0
        self._epochs: list[dict[str, Any]] = []
        self._changes: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return self._n

    def append_step(self, step: int, recon: float, kl: float, loss: float, beta: float, lr: float) -> None:
        n = self._n
        if n == self._buf.shape[0]:
            bigger = np.zeros((2 * n, len(STEP_FIELDS)), dtype=np.float64)
            bigger[:n] = self._buf
            with self._lock:
                self._buf = bigger
        self._buf[n] = (step, recon, kl, loss, beta, lr)
        self._n = n + 1

    def add_epoch(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._epochs.append(dict(record))

    def add_change(self, step: int, name: str, old: Any, new: Any) -> None:
        with self._lock:
            self._changes.append({"step": int(step), "name": name, "old": old, "new": new})

    @property
    def epochs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._epochs]

    @property
    def changes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._changes]

    def arrays(self, start: int = 0) -> dict[str, np.ndarray]:
        """Copies of the per-step columns from index ``start`` on (for incremental plots)."""
        with self._lock:
            n = self._n
            block = self._buf[start:n].copy()
        out = {name: block[:, i].copy() for i, name in enumerate(STEP_FIELDS)}
        out["step"] = out["step"].astype(np.int64)
        return out

    def table(self) -> np.ndarray:
        """The per-step values as one (n, 6) float64 array (columns: STEP_FIELDS)."""
        with self._lock:
            return self._buf[: self._n].copy()

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"epochs": self.epochs, "changes": self.changes, "n_steps": self._n}
        if include_arrays:
            d["steps"] = {k: v.tolist() for k, v in self.arrays().items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], table: np.ndarray | None = None) -> "History":
        """Rebuild from ``to_dict()``; the per-step values come from ``d["steps"]`` or ``table``."""
        h = cls()
        h._epochs = [dict(e) for e in d.get("epochs", [])]
        h._changes = [dict(c) for c in d.get("changes", [])]
        if table is None and "steps" in d:
            cols = [np.asarray(d["steps"][k], dtype=np.float64) for k in STEP_FIELDS]
            table = np.stack(cols, axis=1) if cols[0].size else np.zeros((0, len(STEP_FIELDS)))
        if table is not None:
            table = np.asarray(table, dtype=np.float64).reshape(-1, len(STEP_FIELDS))
            cap = max(1024, 1 << max(0, int(table.shape[0] - 1).bit_length()))
            h._buf = np.zeros((cap, len(STEP_FIELDS)), dtype=np.float64)
            h._buf[: table.shape[0]] = table
            h._n = int(table.shape[0])
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return (
            np.array_equal(self.table(), other.table())
            and self.epochs == other.epochs
            and self.changes == other.changes
        )

    def __repr__(self) -> str:
        return f"History(steps={self._n}, epochs={len(self._epochs)}, changes={len(self._changes)})"


# ---------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSnapshot:
    """The model's weights at one step, as CPU tensor clones that nobody else changes."""

    model_config: ModelConfig
    state: dict[str, torch.Tensor] = field(repr=False)
    step: int
    epoch: int

    def build_model(self) -> VAE:
        """An eval-mode VAE on the CPU with these weights (its own copy)."""
        model = build_model(self.model_config, 0)
        model.load_state_dict(self.state)
        return model.eval()


# ---------------------------------------------------------------------------
# Evaluation helpers
# ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate_model(
    model: VAE,
    x: torch.Tensor,
    batch_size: int = 1024,
    iwae_k: int = 0,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """ELBO (beta = 1, one sample), recon, KL, KL per dim, active units and optionally IWAE_k.

    All figures are means over the examples of ``x``, in nats per example:
    ``elbo`` is the lower bound on log p(x), ``recon`` = -E_q[log p(x|z)].
    """
    was_training = model.training
    model.eval()
    try:
        n = int(x.shape[0])
        d = model.config.latent_dim
        if n == 0:
            out: dict[str, Any] = {
                "elbo": float("nan"), "recon": float("nan"), "kl": float("nan"),
                "kl_per_dim": np.zeros(d), "active_units": 0, "n": 0,
            }
            if iwae_k > 0:
                out["iwae"] = float("nan")
            return out
        recon = torch.zeros((), dtype=torch.float64, device=x.device)
        kl = torch.zeros((), dtype=torch.float64, device=x.device)
        kl_dim = torch.zeros(d, dtype=torch.float64, device=x.device)
        iw = torch.zeros((), dtype=torch.float64, device=x.device)
        mus = []
        for s in range(0, n, batch_size):
            xb = x[s : s + batch_size]
            o = elbo(model, xb, beta=1.0, mc_samples=1, generator=generator)
            recon += o.recon.double().sum()
            kl += o.kl.double().sum()
            kl_dim += o.kl_per_dim.double().sum(0)
            mus.append(o.mu.double())
            if iwae_k > 0:
                iw += iwae_log_likelihood(model, xb, iwae_k, generator=generator).double().sum()
        mu = torch.cat(mus)
        variance = mu.var(0, unbiased=False) if n > 1 else torch.zeros(d, dtype=torch.float64)
        r = float(recon) / n
        k = float(kl) / n
        out = {
            "elbo": -(r + k),
            "recon": r,
            "kl": k,
            "kl_per_dim": (kl_dim / n).cpu().numpy(),
            "active_units": int((variance > ACTIVE_UNIT_THRESHOLD).sum()),
            "n": n,
        }
        if iwae_k > 0:
            out["iwae"] = float(iw) / n
        return out
    finally:
        model.train(was_training)


@torch.no_grad()
def encode_dataset(model: VAE, x: torch.Tensor, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """mu and logvar of q(z|x) for every row of ``x``, as float32 numpy arrays (N, d)."""
    was_training = model.training
    model.eval()
    try:
        d = model.config.latent_dim
        n = int(x.shape[0])
        mu = torch.empty((n, d), dtype=torch.float32, device=x.device)
        lv = torch.empty((n, d), dtype=torch.float32, device=x.device)
        for s in range(0, n, batch_size):
            m, l = model.encode(x[s : s + batch_size])
            mu[s : s + m.shape[0]] = m
            lv[s : s + m.shape[0]] = l
        # Fresh tensors made here: on the CPU the arrays share their memory and
        # nothing else holds a reference to it.
        return mu.cpu().numpy(), lv.cpu().numpy()
    finally:
        model.train(was_training)


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


# ---------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------


class Trainer:
    """Trains a VAE on a dataset; ``run()`` is a generator of events.

    ``train_config`` always holds the current settings: a change made through
    the control replaces it (and is recorded in ``history.changes``).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        dataset: Any,
        control: TrainControl | None = None,
        device: str | torch.device | None = None,
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
        dev = device if device is not None else train_config.device
        self.device = dev if isinstance(dev, torch.device) else resolve_device(str(dev))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {str(dev)!r} asked for, but CUDA is not available here; use the CPU")
        seed = train_config.seed

        self.model = build_model(model_config, seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.lr)

        self._shuffle_gen = make_generator(torch.device("cpu"), seed, _STREAM_SHUFFLE)
        self._noise_gen = make_generator(self.device, seed, _STREAM_NOISE)
        self._binarize_gen = make_generator(self.device, seed, _STREAM_BINARIZE)

        images = images_tensor(dataset.images)
        if images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ConfigError(f"dataset images must be shaped (N, {', '.join(map(str, shape))}), got {tuple(images.shape)}")
        self._x_all = images.to(self.device)
        train_idx = torch.as_tensor(np.asarray(dataset.train_idx, dtype=np.int64))
        test_idx = torch.as_tensor(np.asarray(dataset.test_idx, dtype=np.int64))
        self._x_train = self._x_all.index_select(0, train_idx.to(self.device))
        self._x_test = self._x_all.index_select(0, test_idx.to(self.device))
        self._dynamic = getattr(dataset, "binarize", "none") == "dynamic"
        if self._dynamic:
            # The test split is binarised once, with a fixed draw, so that every
            # evaluation sees the same binary images.
            g = make_generator(self.device, seed, _STREAM_TEST_BINARIZE)
            self._x_test_eval = torch.bernoulli(self._x_test, generator=g)
        else:
            self._x_test_eval = self._x_test
        self.n_train = int(self._x_train.shape[0])
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
        return {name: getattr(c, name) for name in SETTABLE}

    @property
    def labels(self) -> np.ndarray | None:
        labels = getattr(self.dataset, "labels", None)
        return None if labels is None else np.asarray(labels, dtype=np.int64)

    def effective_beta(self, progress_epochs: float | None = None) -> float:
        c = self.train_config
        if progress_epochs is None:
            progress_epochs = self.epoch + self._batch_pos / self.n_batches
        return kl_weight(c.beta, c.warmup, c.warmup_epochs, progress_epochs)

    @classmethod
    def from_checkpoint(cls, ckpt: Any, dataset: Any, control: TrainControl | None = None, device: Any = None) -> "Trainer":
        from .checkpoint import restore_trainer

        return restore_trainer(ckpt, dataset, control=control, device=device)

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

    def _split(self, split: str) -> torch.Tensor:
        if split == "test":
            return self._x_test_eval
        if split in ("train", "all"):
            x = self._x_train if split == "train" else self._x_all
            if self._dynamic:
                g = make_generator(self.device, self.train_config.seed, _STREAM_TEST_BINARIZE)
                x = torch.bernoulli(x, generator=g)
            return x
        raise ConfigError(f"split must be 'test', 'train' or 'all', got {split!r}")

    def evaluate(self, split: str = "test", iwae_k: int = 0) -> dict[str, Any]:
        """Figures for one split (see ``evaluate_model``); call it when ``run`` is not stepping."""
        return evaluate_model(
            self.model, self._split(split), self.train_config.eval_batch_size, iwae_k, self._eval_generator()
        )

    def encode_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) for every example in dataset order (grey levels for dynamic binarisation)."""
        return encode_dataset(self.model, self._x_all, self.train_config.eval_batch_size)

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

    def _control_point(self) -> Iterator[Any]:
        """Handle pending control requests, yielding events; sets ``_stop_now`` on a stop.

        While paused it blocks, waking every 0.1 s: changes made meanwhile are
        applied (and reported) at once, a stop or a resume ends the wait.
        """
        control = self.control
        changes, paused, stopped = control._take()
        yield from self._apply_changes(changes)
        if stopped:
            self._stop_now = True
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
                self._stop_now = True
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
        while self.epoch < target:
            if self._perm is None:
                self._perm = torch.randperm(self.n_train, generator=self._shuffle_gen).to(self.device)
                self._batch_pos = 0
                self._epoch_loss_sum = 0.0
                self._epoch_count = 0
                epoch_t0 = time.perf_counter()
            perm = self._perm
            while self._batch_pos < n_batches:
                if control.pending:
                    yield from self._control_point()
                    if self._stop_now:
                        yield StatusEvent("stopped", f"stopped at step {self.step}", self.step)
                        return
                    cfg = self.train_config
                    t_last = time.perf_counter()
                b = self._batch_pos
                idx = perm[b * bs : (b + 1) * bs]
                x = x_train.index_select(0, idx)
                if dynamic:
                    x = torch.bernoulli(x, generator=bin_gen)
                beta = kl_weight(cfg.beta, cfg.warmup, cfg.warmup_epochs, self.epoch + b / n_batches)
                out = elbo(model, x, beta=beta, mc_samples=mc, free_bits=cfg.free_bits, generator=noise_gen)
                loss = out.loss.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                loss_v, recon_v, kl_v = torch.stack(
                    (loss.detach(), out.recon.detach().mean(), out.kl.detach().mean())
                ).tolist()
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
                n = x.shape[0]
                self._batch_pos = b + 1
                self._epoch_loss_sum += loss_v * n
                self._epoch_count += n
                history.append_step(self.step, recon_v, kl_v, loss_v, beta, cfg.lr)
                now = time.perf_counter()
                dt = now - t_last
                t_last = now
                if dt > 0:
                    r = n / dt
                    rate = r if rate == 0.0 else 0.9 * rate + 0.1 * r
                if self.step % ROLLBACK_EVERY == 0:
                    self._candidate = self._copy_state()
                yield BatchEvent(self.step, self.epoch, b, n_batches, recon_v, kl_v, loss_v, beta, cfg.lr, rate)
                if self.boundary_hook is not None:
                    self.boundary_hook(self, False)
            # The last steps of the epoch may have broken the model although their
            # losses were finite: roll back before its figures and codes go out.
            # The pause starts at the next batch.
            rolled_back = False
            if not self._weights_finite():
                yield self._diverge(f"the weights became NaN or infinite at step {self.step}")
                rolled_back = True
            figures = self.evaluate("test")
            if figures["n"] and not all(math.isfinite(figures[k]) for k in ("elbo", "recon", "kl")):
                yield self._diverge(f"the held-out loss became NaN or infinite at step {self.step}")
                rolled_back = True
                figures = self.evaluate("test")
            yield self._end_epoch(epoch_t0, figures, keep=not rolled_back)
            if self.boundary_hook is not None:
                self.boundary_hook(self, True)
            cfg = self.train_config
            t_last = time.perf_counter()
        yield StatusEvent("finished", f"finished {self.epoch} epochs at step {self.step}", self.step)

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
        mu, logvar = self.encode_all()
        self.latents, self.latent_logvar = mu, logvar
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

    # -- state for checkpoints -------------------------------------------------
    def state_for_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able metadata) that restore this trainer exactly."""
        tensors: dict[str, torch.Tensor] = {}
        with self._state_lock:
            for k, v in self.model.state_dict().items():
                tensors[f"model/{k}"] = v.detach().to("cpu", copy=True).contiguous()
            opt_state = self.optimizer.state_dict()
            opt_meta: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
            for pid, st in opt_state["state"].items():
                plain = {}
                for key, value in st.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"optim/{pid}/{key}"] = value.detach().to("cpu", copy=True).contiguous()
                    else:
                        plain[key] = value
                opt_meta["state"][str(pid)] = {
                    "keys": list(st),
                    "tensors": [k for k, v in st.items() if isinstance(v, torch.Tensor)],
                    "values": plain,
                }
        for name, g in (("shuffle", self._shuffle_gen), ("noise", self._noise_gen), ("binarize", self._binarize_gen)):
            tensors[f"rng/{name}"] = g.get_state().to("cpu", copy=True)
        if self._perm is not None:
            tensors["position/perm"] = self._perm.to("cpu", copy=True)
        table = self.history.table()
        if table.shape[0]:
            tensors["history/steps"] = torch.from_numpy(table)
        if self.latents is not None:
            tensors["latents/mu"] = torch.from_numpy(np.ascontiguousarray(self.latents))
            tensors["latents/logvar"] = torch.from_numpy(np.ascontiguousarray(self.latent_logvar))
            labels = self.labels
            if labels is not None:
                tensors["latents/labels"] = torch.from_numpy(np.ascontiguousarray(labels))
        meta = {
            "epoch": self.epoch,
            "step": self.step,
            "position": {
                "batch": self._batch_pos,
                "n_train": self.n_train,
                "epoch_loss_sum": self._epoch_loss_sum,
                "epoch_count": self._epoch_count,
            },
            "settings": self.settings,
            "optimizer": opt_meta,
            "rng_device": self.device.type,
            "history": self.history.to_dict(include_arrays=False),
        }
        return tensors, meta

    def restore_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Inverse of ``state_for_checkpoint`` (the configs are given to the constructor)."""
        model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        self.model.load_state_dict(model_state)
        opt_meta = meta["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for pid, st in opt_meta["state"].items():
            tensor_keys = set(st["tensors"])
            state[int(pid)] = {
                key: tensors[f"optim/{pid}/{key}"] if key in tensor_keys else st["values"][key]
                for key in st.get("keys", [*st["values"], *st["tensors"]])
            }
        groups = []
        for saved, current in zip(opt_meta["param_groups"], self.optimizer.param_groups):
            group = dict(saved)
            for key, value in group.items():
                if isinstance(value, list) and isinstance(current.get(key), tuple):
                    group[key] = tuple(value)
            groups.append(group)
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        for group in self.optimizer.param_groups:
            group["lr"] = self.train_config.lr
        if meta.get("rng_device", "cpu") == self.device.type:
            self._noise_gen.set_state(tensors["rng/noise"].clone())
            self._binarize_gen.set_state(tensors["rng/binarize"].clone())
        self._shuffle_gen.set_state(tensors["rng/shuffle"].clone())
        self.epoch = int(meta["epoch"])
        self.step = int(meta["step"])
        pos = meta["position"]
        perm = tensors.get("position/perm")
        if perm is not None and int(pos["n_train"]) == self.n_train and perm.numel() == self.n_train:
            self._perm = perm.to(self.device)
            self._batch_pos = int(pos["batch"])
            self._epoch_loss_sum = float(pos["epoch_loss_sum"])
            self._epoch_count = int(pos["epoch_count"])
        else:
            self._perm = None
            self._batch_pos = 0
            self._epoch_loss_sum = 0.0
            self._epoch_count = 0
        table = tensors.get("history/steps")
        self.history = History.from_dict(meta["history"], None if table is None else table.numpy())
        mu = tensors.get("latents/mu")
        if mu is not None and mu.shape[0] == self._x_all.shape[0]:
            self.latents = tensors["latents/mu"].numpy().copy()
            self.latent_logvar = tensors["latents/logvar"].numpy().copy()
        self._keep_good()
