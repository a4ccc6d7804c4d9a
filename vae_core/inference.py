"""A trained model as numpy in, numpy out: what the desktop program uses to encode and decode.

``Encoder`` and ``Decoder`` are built from a ``ModelSnapshot`` (the weights at
one step of a training run, a private copy) or a loaded ``Checkpoint``.  They
hold an eval-mode model that nothing changes after construction, so any
thread may call them at the same time; every call runs without autograd.
Images are (N, C, H, W) arrays in data space (uint8 images are scaled to
[0, 1]); codes are (N, d) float arrays; results are float32 numpy arrays that
share nothing with the model.

``configure_thread`` sets what torch needs per thread (its intra-op thread
count and flushing subnormal floats), so callers never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from .config import ModelConfig
from .errors import Cancelled
from .model import VAE
from .training.evaluate import encode_dataset, images_tensor

__all__ = ["Cancelled", "Decoder", "Encoder", "configure_thread", "load_models"]

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


def configure_thread(num_threads: int = 1) -> None:
    """Give the calling thread ``num_threads`` torch threads and flush subnormal floats to zero.

    torch's thread count is per thread.  Subnormal floats appear in weights
    after a few epochs and make the CPU up to twice as slow.
    """
    if num_threads > 0:
        torch.set_num_threads(int(num_threads))
    torch.set_flush_denormal(True)


@dataclass(frozen=True)
class _Shared:
    """The model both halves use, and where its weights came from."""

    model: VAE
    step: int
    epoch: int


def _shared_from(source: Any) -> _Shared:
    """A model from a ModelSnapshot (shares its private tensors) or a Checkpoint (copies its weights).

    A checkpoint whose weights do not fit its config raises CheckpointError.
    """
    if hasattr(source, "state"):  # ModelSnapshot: its tensors are a copy that nobody changes
        model = source.build_model(share=True)
    else:
        model = source.build_model()
    return _Shared(model, int(source.step), int(source.epoch))


class _Half:
    def __init__(self, shared: _Shared):
        self._shared = shared
        self._model = shared.model

    @classmethod
    def from_snapshot(cls, snapshot: Any):
        return cls(_shared_from(snapshot))

    @classmethod
    def from_checkpoint(cls, checkpoint: Any):
        return cls(_shared_from(checkpoint))

    @property
    def config(self) -> ModelConfig:
        return self._model.config

    @property
    def latent_dim(self) -> int:
        return int(self._model.config.latent_dim)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self._model.config.input_shape)  # type: ignore[return-value]

    @property
    def likelihood(self) -> str:
        return str(self._model.config.likelihood)

    @property
    def step(self) -> int:
        return self._shared.step

    @property
    def epoch(self) -> int:
        return self._shared.epoch


class Decoder(_Half):
    """p(x|z) of a trained model: codes in, images (their means in data space) out."""

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(M, d) codes -> (M, C, H, W) float32 images; one (d,) code -> (C, H, W)."""
        z = np.asarray(codes, dtype=np.float32)
        single = z.ndim == 1
        z = np.ascontiguousarray(z.reshape(1, -1) if single else z)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"codes must have {self.latent_dim} dimensions, got {z.shape[1]}")
        with torch.no_grad():
            out = self._model.decode(torch.from_numpy(z)).numpy()
        return out[0] if single else out


class Encoder(_Half):
    """q(z|x) of a trained model: images in, mean and log-variance of the codes out."""

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, H, W) images -> (mu, logvar), each (N, d) float32; one (C, H, W) image -> (d,) each."""
        x = np.asarray(images)
        single = x.shape == self.input_shape
        if single:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        with torch.no_grad():
            mu, lv = self._model.encode(images_tensor(x))
        mu, lv = mu.numpy(), lv.numpy()
        return (mu[0], lv[0]) if single else (mu, lv)

    def encode_all(self, images: np.ndarray, batch_size: int = 2048, progress: Optional[ProgressFn] = None,
                   cancelled: Optional[CancelFn] = None) -> tuple[np.ndarray, np.ndarray]:
        """Every example of a (possibly memory-mapped, uint8) (N, C, H, W) array, a batch at a time.

        ``progress(fraction, text)`` follows every batch; ``cancelled()`` is
        asked before each and True raises ``Cancelled``.
        """
        if np.ndim(images) != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {np.shape(images)}")
        return encode_dataset(self._model, images, batch_size, progress=progress, cancelled=cancelled)

    def elbo_breakdown(self, x: np.ndarray, k: int = 1000, seed: Optional[int] = 0, mc_samples: int = 1000,
                       progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> Any:
        """Reconstruction, KL, ELBO, IWAE_k and their gap for one example or a few (``vae_core.explore.ELBOBreakdown``)."""
        from .explore import elbo_breakdown

        arr = np.asarray(x)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        return elbo_breakdown(self._model, arr, k=k, seed=seed, mc_samples=mc_samples, progress=progress,
                              cancelled=cancelled)


def load_models(source: Any) -> tuple[Encoder, Decoder]:
    """Encoder and decoder sharing one model, from a ModelSnapshot or a Checkpoint."""
    shared = _shared_from(source)
    return Encoder(shared), Decoder(shared)
