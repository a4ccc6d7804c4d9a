"""The VAE: a Gaussian encoder q(z|x), a standard normal prior and a decoder p(x|z)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig
from .likelihoods import log_likelihood, to_data_space


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _ConvEncoder(nn.Module):
    """Stride-2 convolutions, then a linear layer to 2 * latent_dim."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c, h, w = config.input_shape
        layers: list[nn.Module] = []
        for ch in config.hidden_dims:
            layers += [nn.Conv2d(c, ch, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            c = ch
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, *config.input_shape)).numel()
        self.head = nn.Linear(n_flat, 2 * config.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


class _ConvDecoder(nn.Module):
    """A linear layer to a small feature map, then stride-2 transposed convolutions.

    The feature map starts at ceil(H / 2^k) x ceil(W / 2^k) for k layers, so the
    output is at least H x W; it is cropped to exactly H x W.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c_out, h, w = config.input_shape
        chans = list(reversed(config.hidden_dims))
        k = len(chans)
        self.h0 = math.ceil(h / 2**k)
        self.w0 = math.ceil(w / 2**k)
        self.c0 = chans[0]
        self.out_hw = (h, w)
        self.fc = nn.Linear(config.latent_dim, self.c0 * self.h0 * self.w0)
        layers: list[nn.Module] = [nn.ReLU()]
        for i, ch in enumerate(chans):
            nxt = chans[i + 1] if i + 1 < k else c_out
            layers.append(nn.ConvTranspose2d(ch, nxt, kernel_size=4, stride=2, padding=1))
            if i + 1 < k:
                layers.append(nn.ReLU())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.fc(z).view(-1, self.c0, self.h0, self.w0)
        y = self.deconv(y)
        h, w = self.out_hw
        return y[:, :, :h, :w]


class VAE(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar))), p(z) = N(0, I), p(x|z) from ``config.likelihood``.

    ``encode`` returns (mu, logvar); ``reparameterize`` draws z = mu + sigma * eps;
    ``decode`` returns images in data space (probabilities for the Bernoulli
    family, the mean for the Gaussian); ``decoder_params`` returns what the
    likelihood takes (logits, or the Gaussian mean).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.latent_dim
        if config.architecture == "mlp":
            sizes_enc = [config.input_size, *config.hidden_dims, 2 * d]
            sizes_dec = [d, *reversed(config.hidden_dims), config.input_size]
            self.encoder: nn.Module = _mlp(sizes_enc)
            self.decoder: nn.Module = _mlp(sizes_dec)
        else:
            self.encoder = _ConvEncoder(config)
            self.decoder = _ConvDecoder(config)
        log_sigma = torch.tensor(math.log(config.sigma), dtype=torch.float32)
        if config.learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    # -- the three steps ---------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.architecture == "mlp":
            h = self.encoder(x.flatten(1))
        else:
            h = self.encoder(x.reshape(-1, *self.config.input_shape))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    def decoder_params(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return out.reshape(z.shape[0], *self.config.input_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return to_data_space(self.config.likelihood, self.decoder_params(z))

    # -- conveniences ------------------------------------------------------
    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example, in nats."""
        return log_likelihood(self.config.likelihood, self.decoder_params(z), x, self.log_sigma)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar

    @property
    def sigma(self) -> float:
        return float(torch.exp(self.log_sigma.detach()))


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cuda_devices() -> list[str]:
    """The names of the CUDA GPUs torch can train on here, in device order ("cuda:0" first); empty without CUDA."""
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def vae_from_state(config: ModelConfig, state: dict[str, torch.Tensor], share: bool = False) -> VAE:
    """An eval-mode VAE on the CPU holding ``state``'s weights: the one way to build a model from saved weights.

    With ``share`` the model takes the state's tensors as they are, built on
    the meta device so nothing is allocated or initialised first (about 2 ms
    for the default MLP, against 8 ms for random initial weights that are
    then overwritten, and without touching the global RNG); use it only for a
    state nobody changes, such as a snapshot.  Otherwise the weights are
    copied.  A state that does not fit the config raises ``RuntimeError``.
    """
    if share:
        with torch.device("meta"):
            model = VAE(config)
        model.load_state_dict(state, assign=True)
        meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
        if not meta:
            return model.eval()
    model = VAE(config)
    model.load_state_dict(state)
    return model.eval()
