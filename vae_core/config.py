"""Configuration dataclasses for models and training.

Both are frozen so that they can cross threads safely and be stored verbatim
in checkpoints.  ``to_dict``/``from_dict`` round-trip through plain JSON types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
WARMUPS = ("none", "linear", "cyclical")
PRECISIONS = ("fp32", "bf16")

#: The TrainConfig fields a running trainer accepts changes to (``TrainControl.set``).
LIVE_SETTINGS = ("beta", "lr", "warmup", "warmup_epochs", "free_bits")


def _tuple_of_ints(value: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError as exc:
        raise ConfigError(f"{name} must be a sequence of integers, got {value!r}") from exc
    return out


def parse_hidden_dims(text: str) -> tuple[int, ...]:
    """Hidden sizes from text: "512, 256" -> (512, 256); "", "none" or "linear" -> () (a linear model).

    The sizes are comma-separated positive integers (blanks around them and
    empty entries, as after a trailing comma, are skipped).  Raises
    ConfigError naming the entry that is not a positive integer.
    """
    stripped = str(text).strip()
    if stripped.lower() in ("", "none", "linear"):
        return ()
    sizes = []
    for part in stripped.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            size = int(part)
        except ValueError:
            raise ConfigError(
                f"hidden sizes are comma-separated positive integers such as 512,256 (or none for a linear "
                f"model); {part!r} in {stripped!r} is not an integer"
            ) from None
        if size < 1:
            raise ConfigError(f"hidden sizes must be positive integers, got {size} in {stripped!r}")
        sizes.append(size)
    if not sizes:
        raise ConfigError(f"no hidden sizes in {stripped!r}; give comma-separated positive integers or none")
    return tuple(sizes)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a VAE.

    ``input_shape`` is (C, H, W).  ``hidden_dims`` lists the widths of the MLP
    hidden layers (``()`` makes encoder and decoder purely linear); for the
    conv architecture it lists the channel counts of the stride-2 conv layers.
    ``sigma`` is the standard deviation of the Gaussian likelihood; with
    ``learn_sigma`` it is only the initial value of a learned scalar.
    """

    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 2
    architecture: str = "mlp"
    hidden_dims: tuple[int, ...] = (512, 256)
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    learn_sigma: bool = False

    def __post_init__(self) -> None:
        shape = _tuple_of_ints(self.input_shape, "input_shape")
        hidden = _tuple_of_ints(self.hidden_dims, "hidden_dims")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "hidden_dims", hidden)
        object.__setattr__(self, "latent_dim", int(self.latent_dim))
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "learn_sigma", bool(self.learn_sigma))
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"input_shape must be (C, H, W) with positive sizes, got {shape}")
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be at least 1, got {self.latent_dim}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if any(h < 1 for h in hidden):
            raise ConfigError(f"hidden_dims must be positive, got {hidden}")
        if not self.sigma > 0:
            raise ConfigError(f"sigma must be positive, got {self.sigma}")
        if self.architecture == "conv":
            _, h, w = shape
            if not (28 <= h <= 64 and 28 <= w <= 64):
                raise ConfigError(f"the conv architecture takes images from 28x28 to 64x64, got {h}x{w}")
            if not hidden:
                raise ConfigError("the conv architecture needs at least one channel count in hidden_dims")

    @property
    def input_size(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    ``warmup`` ramps the KL weight from 0 to ``beta``: "linear" over
    ``warmup_epochs`` epochs, "cyclical" repeating that ramp (first half of each
    cycle rising, second half held at ``beta``) every ``warmup_epochs`` epochs.
    ``free_bits`` is the minimum KL, in nats, each latent dimension is charged
    (averaged over the batch, as in Kingma et al. 2016).  ``precision``
    "bf16" runs the networks in bfloat16 under ``torch.autocast`` (mixed
    precision, on a CUDA GPU only); the objective and every reported figure
    stay float32.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    warmup: str = "none"
    warmup_epochs: int = 10
    free_bits: float = 0.0
    mc_samples: int = 1
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    eval_batch_size: int = 1024
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "warmup_epochs", "mc_samples", "seed", "num_threads", "eval_batch_size"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("lr", "beta", "free_bits"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if not self.beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.warmup not in WARMUPS:
            raise ConfigError(f"warmup must be one of {WARMUPS}, got {self.warmup!r}")
        if self.warmup_epochs < 1:
            raise ConfigError(f"warmup_epochs must be at least 1, got {self.warmup_epochs}")
        if not self.free_bits >= 0:
            raise ConfigError(f"free_bits must be >= 0, got {self.free_bits}")
        if self.mc_samples < 1:
            raise ConfigError(f"mc_samples must be at least 1, got {self.mc_samples}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.num_threads < 0:
            raise ConfigError(f"num_threads must be >= 0 (0 = torch's default), got {self.num_threads}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


def kl_weight(config_beta: float, warmup: str, warmup_epochs: int, progress_epochs: float) -> float:
    """KL weight at a point in training measured in (fractional) epochs."""
    if warmup == "none":
        return config_beta
    if warmup == "linear":
        return config_beta * min(1.0, progress_epochs / warmup_epochs)
    # cyclical (Fu et al. 2019): rise over the first half of each cycle, then hold.
    phase = (progress_epochs % warmup_epochs) / warmup_epochs
    return config_beta * min(1.0, 2.0 * phase)


