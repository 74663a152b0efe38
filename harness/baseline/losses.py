"""Objectives of the beta-VAE family, as in the disentanglement_lib study (Locatello et al. 2019).

Every objective is Bernoulli reconstruction (summed over pixels, averaged over the batch) plus a
model-specific regulariser. Each model is a :class:`ModelSpec` with its study defaults; any of
them can be overridden by keyword (``harness train --param gamma=20``).

References
----------
- beta-VAE: Higgins et al., "beta-VAE: Learning basic visual concepts with a constrained
  variational framework", ICLR 2017.
- AnnealedVAE: Burgess et al., "Understanding disentangling in beta-VAE", 2018.
- FactorVAE: Kim & Mnih, "Disentangling by factorising", ICML 2018.
- DIP-VAE I/II: Kumar et al., "Variational inference of disentangled latent concepts from
  unlabeled observations", ICLR 2018.
- beta-TCVAE: Chen et al., "Isolating sources of disentanglement in VAEs", NeurIPS 2018.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    """A model of the family: its name, study defaults, the grid the study swept, and a citation."""

    name: str
    defaults: dict
    study_grid: dict
    citation: str
    needs_discriminator: bool = False
    doc: str = ""
    extra: dict = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("beta_vae", {"beta": 4.0}, {"beta": [1, 2, 4, 6, 8, 16]},
                  "Higgins et al. 2017", doc="recon + beta * KL"),
        ModelSpec("annealed_vae", {"gamma": 1000.0, "c_max": 25.0, "iteration_threshold": 100000},
                  {"c_max": [5, 10, 25, 50, 75, 100]}, "Burgess et al. 2018",
                  doc="recon + gamma * |KL - C(t)|, C(t) = c_max * min(1, t / iteration_threshold)"),
        ModelSpec("factor_vae", {"gamma": 10.0, "disc_lr": 1e-4, "disc_beta1": 0.5, "disc_beta2": 0.9},
                  {"gamma": [10, 20, 30, 40, 50, 100]}, "Kim & Mnih 2018", needs_discriminator=True,
                  doc="recon + KL + gamma * TC, TC from a discriminator on dimension-permuted codes"),
        ModelSpec("dip_vae_i", {"lambda_od": 1.0, "lambda_d_factor": 10.0},
                  {"lambda_od": [1, 2, 5, 10, 20, 50]}, "Kumar et al. 2018",
                  doc="recon + KL + lambda_od * sum offdiag(Cov[mu])^2 + lambda_d * sum (diag - 1)^2"),
        ModelSpec("dip_vae_ii", {"lambda_od": 1.0, "lambda_d_factor": 1.0},
                  {"lambda_od": [1, 2, 5, 10, 20, 50]}, "Kumar et al. 2018",
                  doc="as DIP-VAE-I on Cov[z] = Cov[mu] + E[diag exp(logvar)]"),
        ModelSpec("beta_tcvae", {"beta": 4.0}, {"beta": [1, 2, 4, 6, 8, 10]}, "Chen et al. 2018",
                  doc="recon + KL + (beta - 1) * TC, TC by minibatch-weighted sampling"),
    ]
}


def model_names() -> list[str]:
    return sorted(MODELS)


def resolve_params(model: str, overrides: dict | None = None) -> dict:
    """The model's study defaults updated with ``overrides`` (unknown keys are an InputError)."""
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; known models: {', '.join(model_names())}")
    params = dict(MODELS[model].defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in params:
            raise InputError(f"model {model!r} has no parameter {key!r}; it has: {', '.join(sorted(params))}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"parameter {key!r} of {model!r} must be a number, got {value!r}") from None
        params[key] = int(number) if isinstance(params[key], int) else number
    return params


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood summed over pixels, mean over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over dimensions, mean over the batch."""
    return (0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0)).sum(1).mean()


def sample_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)


def _gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean).pow(2) * torch.exp(-logvar))


def total_correlation_mws(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, dataset_size: int) -> torch.Tensor:
    """Minibatch-weighted-sampling estimate of TC(z) (Chen et al. 2018, eq. S6), with dataset-size correction.

    log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M), and the same per dimension for the
    marginals; N is the dataset size and M the batch size. The correction only shifts the value by
    (D - 1) log(N M) (gradients are unchanged), but it makes the estimate a TC and not an offset of one.
    """
    batch, dim = z.shape
    # log q(z_i^d | x_j) for every pair (i, j) and dimension d: (M, M, D)
    log_qz_pairs = _gaussian_log_density(z[:, None, :], mean[None, :, :], logvar[None, :, :])
    log_nm = math.log(dataset_size * batch)
    log_qz = torch.logsumexp(log_qz_pairs.sum(2), dim=1) - log_nm
    log_prod_marginals = (torch.logsumexp(log_qz_pairs, dim=1) - log_nm).sum(1)
    return (log_qz - log_prod_marginals).mean()


def _covariance(x: torch.Tensor) -> torch.Tensor:
    centered = x - x.mean(0, keepdim=True)
    return centered.T @ centered / x.shape[0]


def dip_regularizer(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    diag = torch.diagonal(cov)
    off_diag = cov - torch.diag(diag)
    return lambda_od * off_diag.pow(2).sum() + lambda_d * (diag - 1.0).pow(2).sum()


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle each latent dimension independently across the batch: samples of prod_d q(z_d)."""
    batch, dim = z.shape
    order = torch.argsort(torch.rand(batch, dim, generator=generator, device=z.device), dim=0)
    return torch.gather(z, 0, order)


def vae_loss(model: str, params: dict, *, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             z: torch.Tensor, logits: torch.Tensor, step: int, dataset_size: int,
             discriminator=None) -> tuple[torch.Tensor, dict[str, float]]:
    """The model's training loss for one batch, and its terms as floats (for the progress bar and log)."""
    recon = reconstruction_loss(logits, x)
    kl = gaussian_kl(mean, logvar)
    terms: dict[str, torch.Tensor] = {"recon": recon, "kl": kl}
    if model == "beta_vae":
        loss = recon + params["beta"] * kl
    elif model == "annealed_vae":
        capacity = params["c_max"] * min(1.0, step / max(1, params["iteration_threshold"]))
        terms["capacity"] = torch.tensor(capacity)
        loss = recon + params["gamma"] * (kl - capacity).abs()
    elif model == "factor_vae":
        disc_logits = discriminator(z)
        tc = (disc_logits[:, 0] - disc_logits[:, 1]).mean()
        terms["tc"] = tc
        loss = recon + kl + params["gamma"] * tc
    elif model in ("dip_vae_i", "dip_vae_ii"):
        cov = _covariance(mean)
        if model == "dip_vae_ii":
            cov = cov + torch.diag(torch.exp(logvar).mean(0))
        reg = dip_regularizer(cov, params["lambda_od"], params["lambda_od"] * params["lambda_d_factor"])
        terms["dip"] = reg
        loss = recon + kl + reg
    elif model == "beta_tcvae":
        tc = total_correlation_mws(z, mean, logvar, dataset_size)
        terms["tc"] = tc
        loss = recon + kl + (params["beta"] - 1.0) * tc
    else:  # resolve_params already rejected unknown names
        raise InputError(f"unknown model {model!r}")
    terms["loss"] = loss
    return loss, {k: float(v.detach()) for k, v in terms.items()}


def discriminator_loss(discriminator, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """FactorVAE's discriminator loss: class 0 for q(z) samples, class 1 for permuted ones."""
    z = z.detach()
    z_perm = permute_dims(z, generator)
    zeros = torch.zeros(len(z), dtype=torch.long, device=z.device)
    return 0.5 * (F.cross_entropy(discriminator(z), zeros) + F.cross_entropy(discriminator(z_perm), zeros + 1))
