"""Figures of a model on a set of examples (ELBO, KL per dim, active units, IWAE) and encoding every example."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..model import VAE
from ..objectives import elbo, iwae_log_likelihood

#: A latent dimension is "active" when the variance over the data of its
#: posterior mean exceeds this (Burda et al. 2016).
ACTIVE_UNIT_THRESHOLD = 0.01


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
