"""KL, ELBO and the importance-weighted bound, per example and in nats."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .model import VAE

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for each latent dimension: (N, d)."""
    return -0.5 * (1.0 + logvar - mu * mu - torch.exp(logvar))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j)): (N,)."""
    return gaussian_kl_per_dim(mu, logvar).sum(1)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + z * z).sum(-1)


@dataclass
class ELBOOutput:
    """Per-example terms of the objective, all (N,) tensors in nats except kl_per_dim (N, d).

    recon = -E_q[log p(x|z)] (a Monte Carlo mean over mc_samples draws);
    kl = KL(q(z|x) || p(z)) in closed form; elbo = -recon - kl (the true ELBO,
    beta = 1, no free bits); loss = recon + beta * KL with free bits applied.
    """

    recon: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor
    loss: torch.Tensor
    elbo: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def elbo(
    model: VAE,
    x: torch.Tensor,
    beta: float = 1.0,
    mc_samples: int = 1,
    free_bits: float = 0.0,
    generator: torch.Generator | None = None,
) -> ELBOOutput:
    """The ELBO and the training loss for a batch.

    Free bits (Kingma et al. 2016): each latent dimension is charged at least
    ``free_bits`` nats of KL averaged over the batch.  Dimensions whose batch
    mean KL is below the floor contribute the constant ``free_bits`` (and no
    gradient); the batch mean of ``loss`` is then exactly
    mean(recon) + beta * sum_j max(free_bits, mean_i KL_ij).
    """
    mu, logvar = model.encode(x)
    if mc_samples == 1:
        z = model.reparameterize(mu, logvar, generator)
        log_px = model.log_px_given_z(x, z)
    else:
        n = x.shape[0]
        mu_r = mu.repeat(mc_samples, 1)
        lv_r = logvar.repeat(mc_samples, 1)
        z = model.reparameterize(mu_r, lv_r, generator)
        x_r = x.repeat(mc_samples, *([1] * (x.dim() - 1)))
        log_px = model.log_px_given_z(x_r, z).view(mc_samples, n).mean(0)
    recon = -log_px
    kl_per_dim = gaussian_kl_per_dim(mu, logvar)
    kl = kl_per_dim.sum(1)
    if free_bits > 0.0:
        below = kl_per_dim.mean(0) < free_bits
        charged = torch.where(below, torch.full_like(kl_per_dim, free_bits), kl_per_dim).sum(1)
    else:
        charged = kl
    loss = recon + beta * charged
    return ELBOOutput(recon=recon, kl=kl, kl_per_dim=kl_per_dim, loss=loss, elbo=-(recon + kl), mu=mu, logvar=logvar)


@torch.no_grad()
def iwae_log_likelihood(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk_elements: int = 2**24,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per example, in nats (Burda et al. 2016).

    IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x).
    IWAE_1 is an unbiased estimate of the ELBO, and E[IWAE_k] rises towards
    log p(x) as k grows.  Samples are drawn in chunks so that k = 5000 fits in
    memory: at most about ``chunk_elements`` decoded pixels are alive at once.
    The k log-weights per example are kept (k floats each) and reduced at the end.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    model_was_training = model.training
    model.eval()
    try:
        mu, logvar = model.encode(x)
        n, d = mu.shape
        d_x = x[0].numel()
        per_chunk = max(1, min(k, chunk_elements // max(1, n * d_x)))
        if per_chunk < 1:
            per_chunk = 1
        logw_parts = []
        done = 0
        while done < k:
            m = min(per_chunk, k - done)
            # For very large batches process examples in slices too.
            ex_step = max(1, chunk_elements // max(1, m * d_x))
            part = torch.empty(m, n, device=x.device, dtype=mu.dtype)
            for s in range(0, n, ex_step):
                e = min(n, s + ex_step)
                mu_s, lv_s, x_s = mu[s:e], logvar[s:e], x[s:e]
                std = torch.exp(0.5 * lv_s)
                eps = torch.randn((m, e - s, d), device=x.device, dtype=mu.dtype, generator=generator)
                z = mu_s.unsqueeze(0) + std.unsqueeze(0) * eps  # (m, b, d)
                zf = z.reshape(m * (e - s), d)
                xf = x_s.unsqueeze(0).expand(m, *x_s.shape).reshape(m * (e - s), *x_s.shape[1:])
                log_px = model.log_px_given_z(xf, zf).view(m, e - s)
                log_pz = log_standard_normal(z)
                log_qz = log_normal_diag(z, mu_s.unsqueeze(0), lv_s.unsqueeze(0))
                part[:, s:e] = log_px + log_pz - log_qz
            logw_parts.append(part)
            done += m
        logw = torch.cat(logw_parts, 0)  # (k, n)
        return torch.logsumexp(logw, 0) - math.log(k)
    finally:
        model.train(model_was_training)


def exact_linear_gaussian_log_likelihood(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x) for a model with no hidden layers and a Gaussian likelihood.

    The decoder is then x = W z + b + sigma * noise with z ~ N(0, I), so
    p(x) = N(b, W W^T + sigma^2 I).  Used to check the estimators against the truth.
    """
    cfg = model.config
    if cfg.architecture != "mlp" or cfg.hidden_dims or cfg.likelihood != "gaussian":
        raise ValueError("the exact likelihood needs a linear (hidden_dims=()) Gaussian MLP model")
    lin = model.decoder[0]
    w = lin.weight.double()  # (D, d)
    b = lin.bias.double()
    sigma2 = torch.exp(2.0 * model.log_sigma.double())
    cov = w @ w.T + sigma2 * torch.eye(w.shape[0], dtype=torch.float64, device=w.device)
    dist = torch.distributions.MultivariateNormal(b, covariance_matrix=cov)
    return dist.log_prob(x.flatten(1).double())
