"""What ``Trainer.run`` yields: small frozen records of Python numbers and fresh numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One optimizer step.  Means over the batch, in nats per example.

    ``step`` counts optimizer steps done; ``beta`` is the KL weight used
    (after warm-up); ``loss`` = recon + beta * KL (with free bits).
    ``wall_s`` is the wall time of the step in seconds since the run began
    (pauses included), continued across resumes from a checkpoint (see
    ``History.wall_times``).
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
    wall_s: float = float("nan")


@dataclass(frozen=True, slots=True)
class EpochEvent:
    """The end of an epoch: test-split figures (beta = 1, nats per example) and all latents.

    ``epoch`` is the number of epochs completed.  ``latents`` / ``latent_logvar``
    hold mu and log-variance of q(z|x) for every example in dataset order
    (in a data-parallel run, on rank 0; the other ranks' are empty, (0, d)).
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
