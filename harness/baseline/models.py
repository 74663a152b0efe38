"""The reference convolutional encoder and decoder of disentanglement_lib (DESIGN 7), in plain torch.

Encoder (Locatello et al. 2019, ``conv_encoder``): conv 32 k4 s2, 32 k4 s2, 64 k2 s2, 64 k2 s2 (ReLU),
FC 256 (ReLU), then two linear heads giving the posterior mean and log-variance. Decoder
(``deconv_decoder``): FC 256, FC 64*(H/16)*(W/16), reshape, transposed convs 64, 32, 32, C
(k4 s2), giving Bernoulli logits. For 64x64 inputs these are exactly the study's shapes; other
sizes work when height and width are multiples of 16 (the spatial map shrinks by 16).

Inputs are float32 NCHW in [0, 1], the layout a submission's model receives (DESIGN 3.1).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.errors import InputError


def _check_image_shape(channels: int, height: int, width: int) -> None:
    if channels < 1 or height < 16 or width < 16 or height % 16 or width % 16:
        raise InputError(
            f"the reference conv architecture needs height and width that are multiples of 16 "
            f"(>= 16) and at least 1 channel, got channels={channels} height={height} width={width}"
        )


class ConvEncoder(nn.Module):
    """Gaussian encoder: images ``(N, C, H, W)`` in [0, 1] -> ``(mean, logvar)``, each ``(N, latent_dim)``."""

    def __init__(self, channels: int = 1, height: int = 64, width: int = 64, latent_dim: int = 10):
        super().__init__()
        _check_image_shape(channels, height, width)
        self.channels, self.height, self.width, self.latent_dim = channels, height, width, latent_dim
        # padding=1 on the k4 s2 convs reproduces TensorFlow's "same" padding for even sizes.
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 2, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 2, stride=2), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * (height // 16) * (width // 16), 256), nn.ReLU(),
        )
        self.mean = nn.Linear(256, latent_dim)
        self.logvar = nn.Linear(256, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mean(h), self.logvar(h)


class DeconvDecoder(nn.Module):
    """Bernoulli decoder: latents ``(N, latent_dim)`` -> pixel logits ``(N, C, H, W)``."""

    def __init__(self, channels: int = 1, height: int = 64, width: int = 64, latent_dim: int = 10):
        super().__init__()
        _check_image_shape(channels, height, width)
        self.map_shape = (64, height // 16, width // 16)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),
            nn.Linear(256, 64 * (height // 16) * (width // 16)), nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, *self.map_shape))


class Discriminator(nn.Module):
    """FactorVAE's total-correlation discriminator (Kim & Mnih 2018; DL: 6 x FC 1000, leaky ReLU).

    Returns two logits per code: column 0 = "from q(z)", column 1 = "from the product of marginals".
    """

    def __init__(self, latent_dim: int = 10, hidden: int = 1000, layers: int = 6):
        super().__init__()
        blocks: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        blocks.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


WEIGHT_INITS = ("glorot", "torch")


def check_weight_init(scheme: str) -> None:
    if scheme not in WEIGHT_INITS:
        raise InputError(f"unknown weight init {scheme!r}; choose one of {', '.join(WEIGHT_INITS)}")


def init_weights(module: nn.Module, scheme: str = "glorot") -> nn.Module:
    """Re-initialise every linear and (transposed) convolution layer of ``module`` in place.

    ``glorot`` is disentanglement_lib's: its ``tf.layers`` default to Glorot-uniform kernels and zero
    biases. ``torch`` keeps PyTorch's default (Kaiming-uniform with a = sqrt(5), uniform biases), which
    for this architecture starts the codes about ten times smaller (std ~ 2e-3 against 2e-2).
    """
    check_weight_init(scheme)
    if scheme == "glorot":
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    return module


class MeanEncoder(nn.Module):
    """Wraps a Gaussian encoder for export: returns the mean only, or ``(mean, logvar)``.

    Any module whose ``forward`` maps float32 NCHW images in [0, 1] to ``(mean, logvar)`` (or to the
    mean alone) can be wrapped; this is how a participant's own encoder goes through ``harness export``.
    """

    def __init__(self, encoder: nn.Module, *, with_logvar: bool = False):
        super().__init__()
        self.encoder = encoder
        self.with_logvar = with_logvar

    def forward(self, x: torch.Tensor):
        out = self.encoder(x)
        if isinstance(out, (tuple, list)):
            mean, logvar = out[0], out[1] if len(out) > 1 else None
        else:
            mean, logvar = out, None
        if self.with_logvar:
            if logvar is None:
                raise InputError("with_logvar=True needs an encoder that returns (mean, logvar)")
            return mean, logvar
        return mean
