"""The math: KL, likelihood constants, ELBO <= IWAE_k <= log p(x), free bits."""

import math

import pytest
import torch
from torch.distributions import ContinuousBernoulli, Independent, Normal, kl_divergence

from vae_core import ModelConfig, VAE, elbo, exact_linear_gaussian_log_likelihood, gaussian_kl, iwae_log_likelihood
from vae_core.likelihoods import (
    bernoulli_log_prob,
    continuous_bernoulli_log_prob,
    continuous_bernoulli_mean,
    gaussian_log_prob,
)
from vae_core.objectives import gaussian_kl_per_dim


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(64, 7, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(64, 7, generator=g, dtype=torch.float64)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    ref = kl_divergence(q, p)
    ours = gaussian_kl(mu, logvar)
    assert ours.shape == (64,)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert torch.all(gaussian_kl_per_dim(mu, logvar) >= 0)
    assert torch.allclose(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_bernoulli_is_normalised_on_binary_data():
    # Summing p(x) over every binary image of 4 pixels gives exactly 1.
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.0]], dtype=torch.float64)
    xs = torch.tensor([[(i >> b) & 1 for b in range(4)] for i in range(16)], dtype=torch.float64)
    total = torch.exp(bernoulli_log_prob(logits.expand(16, 4), xs)).sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


def test_continuous_bernoulli_matches_torch_and_integrates_to_one():
    logits = torch.linspace(-8, 8, 41, dtype=torch.float64).reshape(1, -1)
    x = torch.rand(1, 41, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = ContinuousBernoulli(logits=logits).log_prob(x).sum()
    torch.testing.assert_close(continuous_bernoulli_log_prob(logits, x), ref.reshape(1), rtol=1e-6, atol=1e-6)
    # The density of one pixel integrates to 1 over [0, 1] for any logit, 0 included.
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64).reshape(-1, 1)
    for l in (-6.0, -0.5, 0.0, 1e-4, 3.0):
        dens = torch.exp(continuous_bernoulli_log_prob(torch.full_like(grid, l), grid))
        assert float(torch.trapezoid(dens.squeeze(), grid.squeeze())) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(continuous_bernoulli_mean(logits), ContinuousBernoulli(logits=logits).mean, rtol=1e-5, atol=1e-6)


def test_gaussian_log_prob_has_every_constant():
    g = torch.Generator().manual_seed(2)
    mean = torch.randn(5, 1, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(5, 1, 3, 3, generator=g, dtype=torch.float64)
    log_sigma = torch.tensor(math.log(0.3), dtype=torch.float64)
    ref = Independent(Normal(mean.flatten(1), 0.3), 1).log_prob(x.flatten(1))
    torch.testing.assert_close(gaussian_log_prob(mean, x, log_sigma), ref)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    cfg = ModelConfig(input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(16,), likelihood="bernoulli")
    model = VAE(cfg).double()
    x = (torch.rand(6, 1, 4, 4, dtype=torch.float64) > 0.5).double()
    return model, x


def test_elbo_terms_and_beta(small_model):
    model, x = small_model
    torch.manual_seed(3)
    out = elbo(model, x, beta=1.0)
    for t in (out.recon, out.kl, out.loss, out.elbo):
        assert t.shape == (6,)
    assert out.kl_per_dim.shape == (6, 2)
    torch.testing.assert_close(out.elbo, -(out.recon + out.kl))
    torch.testing.assert_close(out.loss, out.recon + out.kl)
    torch.testing.assert_close(out.kl, out.kl_per_dim.sum(1))
    # Same noise, beta = 4: only the loss changes, the ELBO stays the true one.
    torch.manual_seed(3)
    out4 = elbo(model, x, beta=4.0)
    torch.testing.assert_close(out4.loss, out4.recon + 4.0 * out4.kl)
    torch.testing.assert_close(out4.elbo, out.elbo)
    torch.manual_seed(3)
    out0 = elbo(model, x, beta=0.0)
    torch.testing.assert_close(out0.loss, out0.recon)


def test_recon_is_minus_expected_log_likelihood(small_model):
    model, x = small_model
    g = torch.Generator().manual_seed(5)
    out = elbo(model, x, mc_samples=4000, generator=g)
    mu, logvar = model.encode(x)
    g2 = torch.Generator().manual_seed(6)
    zs = [model.reparameterize(mu, logvar, g2) for _ in range(4000)]
    ref = -torch.stack([model.log_px_given_z(x, z) for z in zs]).mean(0)
    torch.testing.assert_close(out.recon, ref, rtol=0.02, atol=0.02)


def test_free_bits_floor_per_dim_on_batch_mean(small_model):
    model, x = small_model
    torch.manual_seed(7)
    ref = elbo(model, x)
    fb = float(ref.kl_per_dim.detach().mean(0).max()) + 1.0  # above every dim's batch-mean KL
    torch.manual_seed(7)
    out = elbo(model, x, free_bits=fb)
    torch.testing.assert_close(out.loss, out.recon + 2 * fb)
    torch.testing.assert_close(out.elbo, ref.elbo)  # the ELBO ignores free bits
    # Below the floor no gradient reaches the KL through the loss.
    model.zero_grad()
    torch.manual_seed(7)
    out = elbo(model, x, free_bits=fb)
    (out.loss.mean() - out.recon.mean()).backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())
    # A zero floor is the plain loss.
    torch.manual_seed(7)
    out = elbo(model, x, free_bits=0.0)
    torch.testing.assert_close(out.loss, ref.loss)


def test_elbo_below_iwae_which_grows_with_k(small_model):
    model, x = small_model
    g = torch.Generator().manual_seed(11)
    # Average the estimators over repeats to compare their expectations.
    el = torch.stack([elbo(model, x, generator=g).elbo.detach() for _ in range(2000)]).mean(0)
    reps = {1: 2000, 10: 200, 200: 40}
    iw = {k: torch.stack([iwae_log_likelihood(model, x, k, generator=g) for _ in range(r)]).mean(0) for k, r in reps.items()}
    torch.testing.assert_close(iw[1], el.detach(), rtol=0, atol=0.15)
    assert torch.all(iw[10] >= el - 0.05)
    assert torch.all(iw[200] >= iw[10] - 0.02)
    assert float((iw[200] - el).mean()) > 0.05


def test_iwae_chunking_gives_the_same_numbers(small_model):
    model, x = small_model
    a = iwae_log_likelihood(model, x, 300, generator=torch.Generator().manual_seed(1))
    b = iwae_log_likelihood(model, x, 300, chunk_elements=40, generator=torch.Generator().manual_seed(1))
    # Different chunking draws the noise in a different order, so compare as estimates.
    torch.testing.assert_close(a, b, rtol=0, atol=0.3)
    big = iwae_log_likelihood(model, x[:2], 5000, chunk_elements=2**14)
    assert big.shape == (2,) and torch.all(torch.isfinite(big))


def test_linear_gaussian_iwae_approaches_exact_log_likelihood():
    torch.manual_seed(0)
    cfg = ModelConfig(input_shape=(1, 3, 3), latent_dim=2, hidden_dims=(), likelihood="gaussian", sigma=0.5)
    model = VAE(cfg).double()
    with torch.no_grad():
        model.decoder[0].weight.mul_(3.0)
    x = torch.randn(8, 1, 3, 3, dtype=torch.float64)
    exact = exact_linear_gaussian_log_likelihood(model, x)
    g = torch.Generator().manual_seed(0)
    el = torch.stack([elbo(model, x, generator=g).elbo for _ in range(200)]).mean(0).detach()
    iw_small = iwae_log_likelihood(model, x, 5, generator=g)
    iw_big = iwae_log_likelihood(model, x, 5000, generator=g)
    assert torch.all(el < exact)
    gap_small = (exact - iw_small).abs().mean()
    gap_big = (exact - iw_big).abs().mean()
    assert gap_big < gap_small
    assert gap_big < 0.05 * (exact - el).abs().mean() + 0.05
    # The exact marginal agrees with a direct Monte Carlo over the prior.
    z = torch.randn(200000, 2, dtype=torch.float64, generator=g)
    ll = torch.stack([model.log_px_given_z(xi.expand(200000, 1, 3, 3), z) for xi in x[:2]])
    mc = torch.logsumexp(ll, 1) - math.log(200000)
    torch.testing.assert_close(mc, exact[:2], rtol=0, atol=0.05)


@pytest.mark.parametrize("arch,shape,hidden", [("mlp", (1, 8, 8), (32, 16)), ("mlp", (3, 5, 5), ()), ("conv", (1, 28, 28), (8, 16)), ("conv", (3, 33, 41), (8,))])
@pytest.mark.parametrize("lik", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_model_shapes_and_data_space(arch, shape, hidden, lik):
    cfg = ModelConfig(input_shape=shape, latent_dim=3, architecture=arch, hidden_dims=hidden, likelihood=lik)
    model = VAE(cfg)
    x = torch.rand(4, *shape)
    mu, logvar = model.encode(x)
    assert mu.shape == (4, 3) and logvar.shape == (4, 3)
    img = model.decode(model.reparameterize(mu, logvar)).detach()
    assert img.shape == (4, *shape)
    if lik != "gaussian":
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    out = elbo(model, x, beta=0.5, mc_samples=2)
    out.loss.mean().backward()
    assert torch.isfinite(out.loss).all()


def test_learned_sigma_is_a_parameter():
    cfg = ModelConfig(input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,), likelihood="gaussian", sigma=0.2, learn_sigma=True)
    model = VAE(cfg)
    assert any(p is model.log_sigma for p in model.parameters())
    assert model.sigma == pytest.approx(0.2)
    fixed = VAE(cfg.replace(learn_sigma=False))
    assert all(p is not fixed.log_sigma for p in fixed.parameters())
