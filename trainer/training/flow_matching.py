"""Flow-matching maths as pure functions: which noise levels to train on, how to weight them, and the target.

Rectified flow (SD3, Flux, Chroma) mixes data and noise on a straight line, x_t = (1 - sigma) x0 + sigma n with
sigma in (0, 1), and the model predicts the velocity n - x0. The samplers are kohya sd-scripts' (`uniform`,
`sigmoid`, `shift`, `flux_shift`, and Lumina 2's `nextdit_shift`); the loss weightings are the SD3 paper's densities (`logit_normal`, `mode`,
`cosmap`), as diffusers' training_utils names them.

Every sampler but `uniform` is a logit-normal law: sigmoid(scale * z + m) with z ~ N(0, 1), where
m = 0 for `sigmoid`, log(shift) for `shift` (kohya's (s * v) / (1 + (v - 1) * s) of a sigmoid draw s), and the
resolution-dependent mu for `flux_shift` (Flux's exp(mu) / (exp(mu) + 1 / s - 1)). kohya writes them as those
transforms; drawing the law directly is the same distribution in one step. `nextdit_shift` applies Flux's shift
to a uniform draw instead: sigmoid(logit(u) + mu).
"""
from __future__ import annotations

import math

import torch

TIMESTEP_SAMPLERS = ("uniform", "sigmoid", "shift", "flux_shift", "nextdit_shift")
LOSS_WEIGHTINGS = ("none", "logit_normal", "mode", "cosmap")
FLUX_BASE_SHIFT, FLUX_MAX_SHIFT = 0.5, 1.15  # mu at 256 and at 4096 image tokens (Flux's schedule, ComfyUI's ModelSamplingFlux)
FLUX_BASE_TOKENS, FLUX_MAX_TOKENS = 256, 4096
FLUX_SHIFT = 3.1582  # kohya's discrete_flow_shift for Flux (docs/flux_train_network.md)
SIGMA_EPSILON = 1e-5  # keeps sigma off 0 and 1, where the flow error (D - x0) / sigma and the densities blow up


def flux_mu(latent_height: int, latent_width: int, patch_size: int = 2) -> float:
    """Flux's resolution-dependent shift: mu grows linearly with the number of image tokens (patches of latents).

    256 tokens (256 px images) give 0.5 and 4096 tokens (1024 px) give 1.15: larger images train noisier.
    """
    tokens = (latent_height // patch_size) * (latent_width // patch_size)
    slope = (FLUX_MAX_SHIFT - FLUX_BASE_SHIFT) / (FLUX_MAX_TOKENS - FLUX_BASE_TOKENS)
    return FLUX_BASE_SHIFT + slope * (tokens - FLUX_BASE_TOKENS)


def logit_normal_mean(sampler: str, shift: float, mu: float) -> float:
    """The location m of a logit-normal sampler (see the module docstring)."""
    if sampler == "sigmoid":
        return 0.0
    if sampler == "shift":
        return math.log(shift)
    if sampler == "flux_shift":
        return mu
    raise ValueError(f"{sampler} is not a logit-normal timestep sampler")


def mode_sigma(u: torch.Tensor, mode_scale: float) -> torch.Tensor:
    """The SD3 paper's mode-weighted timesteps (its eq. 20): 1 - u - s (cos^2(pi u / 2) - 1 + u), for u uniform in (0, 1)."""
    return 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)


def sample_sigmas(sampler: str, batch_size: int, generator: torch.Generator, *, sigmoid_scale: float = 1.0,
                  shift: float = FLUX_SHIFT, mu: float = 0.0) -> torch.Tensor:
    """Noise levels in (0, 1) for one batch, drawn on the generator's device.

    `sigmoid_scale` spreads the logit-normal samplers (larger is closer to uniform), `shift` is kohya's
    discrete_flow_shift for `shift`, `mu` the location for `flux_shift` (see `flux_mu`).
    """
    device = generator.device
    if sampler == "uniform":
        sigmas = torch.rand(batch_size, generator=generator, device=device)
    elif sampler == "nextdit_shift":
        sigmas = torch.sigmoid(torch.logit(torch.rand(batch_size, generator=generator, device=device), SIGMA_EPSILON) + mu)
    elif sampler in TIMESTEP_SAMPLERS:
        z = torch.randn(batch_size, generator=generator, device=device)
        sigmas = torch.sigmoid(sigmoid_scale * z + logit_normal_mean(sampler, shift, mu))
    else:
        raise ValueError(f"unknown timestep sampler {sampler!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}")
    return sigmas.clamp(SIGMA_EPSILON, 1 - SIGMA_EPSILON)


def mode_density(sigma: torch.Tensor, mode_scale: float, iterations: int = 48) -> torch.Tensor:
    """Density of the mode sampler at sigma: 1 / |d sigma / du| at the u that maps to sigma.

    The map is decreasing on (0, 1) for 0 <= s < 2 / (pi - 2) (the paper's range), so u is found by bisection.
    """
    low, high = torch.zeros_like(sigma), torch.ones_like(sigma)
    for _ in range(iterations):
        middle = (low + high) / 2
        above = mode_sigma(middle, mode_scale) > sigma  # decreasing map: u is further right
        low, high = torch.where(above, middle, low), torch.where(above, high, middle)
    u = (low + high) / 2
    slope = -(1 + mode_scale) + mode_scale * (math.pi / 2) * torch.sin(math.pi * u)
    return 1 / slope.abs()


def loss_weights(weighting: str, sigma: torch.Tensor, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                 mode_scale: float = 1.29) -> torch.Tensor:
    """Per-sample loss weights: the density of the SD3 paper's timestep distribution at sigma.

    Weighting a uniformly sampled loss by a density is, in expectation, training at that density; with
    another sampler the two multiply. Each density integrates to 1 over (0, 1), so the loss keeps its scale.
    """
    if weighting == "none":
        return torch.ones_like(sigma)
    if weighting == "logit_normal":
        logit = torch.log(sigma / (1 - sigma))
        gauss = torch.exp(-((logit - logit_mean) ** 2) / (2 * logit_std**2)) / (logit_std * math.sqrt(2 * math.pi))
        return gauss / (sigma * (1 - sigma))
    if weighting == "mode":
        return mode_density(sigma, mode_scale)
    if weighting == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))
    raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(LOSS_WEIGHTINGS)}")


def noisy_latents(latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - sigma) x0 + sigma n, per sample."""
    s = sigma.view(-1, *([1] * (latents.ndim - 1)))
    return (1 - s) * latents + s * noise


def velocity_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What a flow model predicts: d x_t / d sigma = n - x0."""
    return noise - latents


def velocity_from_denoised(noisy: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The velocity a ComfyUI flow model predicted, from the denoised estimate its apply_model returns
    (ComfyUI's CONST sampling computes D = x_t - sigma * v)."""
    s = sigma.view(-1, *([1] * (noisy.ndim - 1)))
    return (noisy - denoised) / s
