"""Figures of a model on a set of examples (ELBO, KL per dim, active units, IWAE) and encoding every example."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch

from ..errors import Cancelled
from ..model import VAE
from ..objectives import elbo, iwae_log_likelihood
from .batches import ImageSplit

#: A latent dimension is "active" when the variance over the data of its
#: posterior mean exceeds this (Burda et al. 2016).
ACTIVE_UNIT_THRESHOLD = 0.01

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


def images_tensor(images: np.ndarray) -> torch.Tensor:
    """A float32 tensor of images (N, C, H, W) in data space: uint8 is scaled to [0, 1], floats are used as they are.

    Float arrays are shared where possible (the engine never writes to
    them, so read-only and memory-mapped arrays are used as they are).
    """
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not arr.flags.writeable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr)
    return torch.from_numpy(arr)


@torch.no_grad()
def evaluate_model(
    model: VAE,
    x: torch.Tensor | ImageSplit,
    batch_size: int = 1024,
    iwae_k: int = 0,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """ELBO (beta = 1, one sample), recon, KL, KL per dim, active units and optionally IWAE_k.

    All figures are means over the examples of ``x``, in nats per example:
    ``elbo`` is the lower bound on log p(x), ``recon`` = -E_q[log p(x|z)].
    ``x`` is a float tensor of the images on the model's device, or an
    ``ImageSplit`` that gives them a batch at a time.
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
def encode_dataset(
    model: VAE,
    images: torch.Tensor | ImageSplit | np.ndarray,
    batch_size: int = 1024,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """mu and logvar of q(z|x) for every example, a batch at a time, as float32 numpy arrays (N, d).

    ``images`` is a tensor (N, C, H, W) already on the model's device, an
    ``ImageSplit`` (float batches on its device), or a numpy array of them
    (float, or uint8 scaled to [0, 1]; a memory-mapped file is read a batch
    at a time), each batch converted and moved to the model's device.  ``progress(fraction, text)`` is called after every
    batch; ``cancelled()`` is asked before every batch and True raises
    ``Cancelled``.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        d = model.config.latent_dim
        n = int(images.shape[0])
        mu = torch.empty((n, d), dtype=torch.float32, device=device)
        lv = torch.empty((n, d), dtype=torch.float32, device=device)
        for s in range(0, n, batch_size):
            if cancelled is not None and cancelled():
                raise Cancelled("encoding was cancelled")
            x = images[s : s + batch_size]
            if not isinstance(x, torch.Tensor):
                x = images_tensor(x)
            m, l = model.encode(x.to(device))
            done = s + m.shape[0]
            mu[s:done] = m
            lv[s:done] = l
            if progress is not None:
                progress(min(1.0, done / n), f"Encoding {done:,} of {n:,}")
        # Fresh tensors made here: on the CPU the arrays share their memory and
        # nothing else holds a reference to it.
        return mu.cpu().numpy(), lv.cpu().numpy()
    finally:
        model.train(was_training)
