"""The diffusion training objective in the model's own prediction space (eps, v or flow), via ComfyUI's model_sampling.

ComfyUI's `apply_model` returns the denoised estimate D. For every prediction type ComfyUI supports here,
the error in prediction space is a per-sigma multiple of (D - x0):
  eps:  x_t = x0 + s*eps,            D = x_t - s*eps_hat          ->  eps - eps_hat = (D - x0) / s
  flow: x_t = (1-s)*x0 + s*eps,      D = x_t - s*v_hat            ->  v - v_hat     = (D - x0) / s
  v:    D = x_t*sd^2/(s^2+sd^2) - v_hat*s*sd/sqrt(s^2+sd^2)       ->  v - v_hat     = (D - x0) * sqrt(s^2+sd^2) / (s*sd)
so the loss is the usual eps/v MSE, without ComfyUI core's x0-space weighting that spans 2.5e5 on SD1.5.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_sampling
import torch

from ..errors import SettingsError
from . import flow_matching

log = logging.getLogger(__name__)
VALIDATION_TIMESTEPS = (200, 400, 600, 800)  # kohya's fixed validation timesteps (of 1000)


def prediction_type(model_sampling) -> str:
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return "flow"
    if isinstance(model_sampling, comfy.model_sampling.V_PREDICTION):
        return "v"
    if isinstance(model_sampling, comfy.model_sampling.EPS):
        return "eps"
    raise SettingsError(f"LoRA Lab cannot train a model whose sampling is {type(model_sampling).__name__}.")


def sample_sigmas(sigma_table: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform over the model's training timesteps (kohya's scheme; shifted for flow models by their schedule).

    `sigma_table` is `model_sampling.sigmas`, kept on the training device with the generator, so drawing
    costs no host-device copy.
    """
    index = torch.randint(0, len(sigma_table), (batch_size,), generator=generator, device=sigma_table.device)
    return sigma_table[index]


@dataclass(frozen=True)
class NoiseLevels:
    """How one run draws and weights noise levels: uniformly over the model's own schedule, min-SNR weighted
    (SD; SD3 by default), or with a flow-matching sampler and the SD3 paper's loss weighting (Flux, Chroma)."""

    sigma_table: torch.Tensor  # the model's schedule (model_sampling.sigmas), on the training device
    sampler: str | None  # a flow_matching sampler; None: uniform over sigma_table
    sigmoid_scale: float
    shift: float
    weighting: str  # flow_matching loss weighting (flow models)
    min_snr_gamma: float  # eps and v models
    patch_size: int = 2  # latent pixels per transformer token, each way (the flux_shift samplers count tokens)

    def draw(self, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.sampler is None:
            return sample_sigmas(self.sigma_table, latents.shape[0], generator)
        mu = flow_matching.flux_mu(latents.shape[-2], latents.shape[-1], self.patch_size)
        return flow_matching.sample_sigmas(self.sampler, latents.shape[0], generator, sigmoid_scale=self.sigmoid_scale,
                                           shift=self.shift, mu=mu)

    def weights(self, model_sampling, sigma: torch.Tensor) -> torch.Tensor:
        if prediction_type(model_sampling) == "flow":
            return flow_matching.loss_weights(self.weighting, sigma)
        return min_snr_weight(model_sampling, sigma, self.min_snr_gamma)


def validation_sigmas(model_sampling) -> torch.Tensor:
    sigmas = model_sampling.sigmas.cpu().float()
    return torch.stack([sigmas[min(len(sigmas) - 1, t * len(sigmas) // 1000)] for t in VALIDATION_TIMESTEPS])


def error_scale(model_sampling, sigma: torch.Tensor) -> torch.Tensor:
    """w(sigma) with (prediction target - prediction) = (D - x0) * w(sigma); see the module docstring."""
    kind = prediction_type(model_sampling)
    if kind == "v":
        sigma_data = float(model_sampling.sigma_data)
        return (sigma**2 + sigma_data**2).sqrt() / (sigma * sigma_data)
    return 1.0 / sigma


def min_snr_weight(model_sampling, sigma: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma)/SNR for eps, /(SNR+1) for v.

    For discrete VP schedules SNR = 1/sigma^2. Flow models are left unweighted.
    """
    kind = prediction_type(model_sampling)
    if gamma <= 0 or kind == "flow":
        return torch.ones_like(sigma)
    snr = 1.0 / sigma**2
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if kind == "v" else clipped / snr


def noisy_latents(model_sampling, sigma: torch.Tensor, noise: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Forward diffusion: the latents at noise level sigma, as ComfyUI's sampler would build them."""
    return model_sampling.noise_scaling(sigma.view(-1, *([1] * (latents.ndim - 1))), noise, latents)


def per_sample_loss(denoised: torch.Tensor, latents: torch.Tensor, sigma: torch.Tensor, model_sampling) -> torch.Tensor:
    """Mean squared prediction-space error per sample."""
    scale = error_scale(model_sampling, sigma).view(-1, *([1] * (latents.ndim - 1)))
    error = (denoised.float() - latents.float()) * scale
    return error.pow(2).mean(dim=tuple(range(1, latents.ndim)))
