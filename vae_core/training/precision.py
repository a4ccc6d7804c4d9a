"""Mixed precision: the networks of a VAE run in bfloat16 on a GPU, the objective stays in float32."""

from __future__ import annotations

import torch

from ..likelihoods import log_likelihood
from ..model import VAE


class AutocastVAE:
    """A VAE as the objectives see it, with its encoder and decoder run under ``torch.autocast`` (bfloat16).

    ``vae_core.objectives.elbo`` calls ``encode``, ``reparameterize`` and
    ``log_px_given_z``; here the networks compute in bfloat16 while every
    output they hand on (mu, log-variance, the decoder's parameters) is cast
    back to float32, so the noise, the KL and log p(x|z) (with all its
    normalising constants) are computed, and the ELBO reported, in float32.
    The weights, their gradients and the optimizer stay float32.
    """

    def __init__(self, model: VAE, device_type: str = "cuda") -> None:
        self.model: VAE = model
        self.config = model.config
        self.device_type: str = device_type

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            mu, logvar = self.model.encode(x)
        return mu.float(), logvar.float()

    reparameterize = staticmethod(VAE.reparameterize)

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example in nats, from the decoder's bfloat16 output taken to float32."""
        with self._autocast():
            params = self.model.decoder_params(z)
        return log_likelihood(self.config.likelihood, params.float(), x, self.model.log_sigma)
