"""Decoder likelihoods log p(x|z), summed over pixels, in nats per example.

Every normalising constant is included, so the numbers are true log densities
(or log probabilities) and the ELBO is a genuine lower bound on log p(x).

The decoder network produces one tensor of "parameters" shaped like the data:
logits for the Bernoulli family, the mean for the Gaussian.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i x_i log p_i + (1 - x_i) log(1 - p_i) with p = sigmoid(logits).

    Exact on binary data.  On grey-level data this is a cross-entropy, not the
    log of a normalised density.
    """
    ll = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return ll.flatten(1).sum(1)


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli with lambda = sigmoid(logits).

    C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda), and C(1/2) = 2.  In
    terms of the logit l: 1 - 2 lambda = -tanh(l / 2) and
    2 artanh(1 - 2 lambda) = -l, so C = l / tanh(l / 2), which is stable for
    large |l|.  Near l = 0 a Taylor expansion avoids 0/0:
    l / tanh(l/2) = 2 (1 + l^2/12 - l^4/720 + ...).
    """
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe / torch.tanh(safe / 2.0))
    l2 = logits * logits
    taylor = math.log(2.0) + torch.log1p(l2 / 12.0 - l2 * l2 / 720.0)
    return torch.where(small, taylor, exact)


def continuous_bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""
    ll = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    ll = ll + continuous_bernoulli_log_norm(logits)
    return ll.flatten(1).sum(1)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the continuous Bernoulli: lambda/(2 lambda - 1) + 1/(2 artanh(1 - 2 lambda)).

    In logits: E[x] = 1/(1 - exp(-l)) - 1/l, which tends to 1/2 as l -> 0.
    """
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    mean = -1.0 / torch.expm1(-safe) - 1.0 / safe
    return torch.where(small, 0.5 + logits / 12.0, mean)


def gaussian_log_prob(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Isotropic Gaussian N(x; mean, sigma^2 I):

    -||x - mean||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2).
    """
    diff = (x - mean).flatten(1)
    d = diff.shape[1]
    inv_var = torch.exp(-2.0 * log_sigma)
    return -0.5 * (diff * diff).sum(1) * inv_var - d * (0.5 * LOG_2PI + log_sigma)


def log_likelihood(kind: str, params: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x|z) for a decoder output ``params``; x and params share a shape (N, ...) -> (N,)."""
    if kind == "bernoulli":
        return bernoulli_log_prob(params, x)
    if kind == "continuous_bernoulli":
        return continuous_bernoulli_log_prob(params, x)
    if kind == "gaussian":
        if log_sigma is None:
            raise ValueError("the Gaussian likelihood needs log_sigma")
        return gaussian_log_prob(params, x, log_sigma)
    raise ValueError(f"unknown likelihood {kind!r}")


def to_data_space(kind: str, params: torch.Tensor) -> torch.Tensor:
    """Decoder parameters -> an image in data space.

    Bernoulli: the pixel probabilities.  Continuous Bernoulli: the mean of the
    distribution (its lambda parameter is not the mean and looks washed out).
    Gaussian: the mean, unsquashed.
    """
    if kind == "bernoulli":
        return torch.sigmoid(params)
    if kind == "continuous_bernoulli":
        return continuous_bernoulli_mean(params)
    return params
