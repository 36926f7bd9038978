"""Flow-matching maths: each timestep sampler draws the law it claims, each loss weighting is the density it
names, and the noisy latents and velocity agree with ComfyUI's own flow sampling.

Statistical tests use fixed seeds and the Kolmogorov-Smirnov distance: with n draws from the claimed law the
distance stays under 1.63 / sqrt(n) 99% of the time; a wrong law (the negative controls) lands far above it.
"""
from __future__ import annotations

import math

import pytest
import torch

from harness import flow_models, runtime

N = 40_000
KS_LIMIT = 1.63 / math.sqrt(N)


def flow():
    return runtime.pack("trainer.training.flow_matching")


def draws(sampler: str, seed: int = 0, **options) -> torch.Tensor:
    return flow().sample_sigmas(sampler, N, torch.Generator().manual_seed(seed), **options).double()


def ks_distance(samples: torch.Tensor, cdf) -> float:
    ordered, _ = torch.sort(samples.double())
    expected = cdf(ordered)
    upper = torch.arange(1, len(ordered) + 1, dtype=torch.float64) / len(ordered)
    return max((upper - expected).abs().max().item(), (expected - (upper - 1 / len(ordered))).abs().max().item())


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def logit(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1 - x))


def sigmoid_law(scale: float):
    """kohya's `sigmoid`: sigma = sigmoid(scale * z)."""
    return lambda x: normal_cdf(logit(x) / scale)


def shift_law(shift: float, scale: float):
    """kohya's `shift`: s = sigmoid(scale * z), sigma = s * shift / (1 + (shift - 1) * s); inverted for the CDF."""
    return lambda x: normal_cdf(logit(x / (shift - (shift - 1) * x)) / scale)


def flux_shift_law(mu: float, scale: float):
    """kohya's `flux_shift`: sigma = exp(mu) / (exp(mu) + 1/s - 1) of s = sigmoid(scale * z); inverted for the CDF."""
    return lambda x: normal_cdf(logit(1 / (1 + math.exp(mu) * (1 / x - 1))) / scale)


def nextdit_shift_law(mu: float):
    """kohya's Lumina 2 `nextdit_shift`: sigma = exp(mu) / (exp(mu) + 1/u - 1) of a uniform u; inverted for the CDF."""
    return lambda x: 1 / (1 + math.exp(mu) * (1 / x - 1))


CLAIMS = [
    ("uniform", {}, lambda x: x),
    ("sigmoid", {"sigmoid_scale": 1.0}, sigmoid_law(1.0)),
    ("sigmoid", {"sigmoid_scale": 1.7}, sigmoid_law(1.7)),
    ("shift", {"shift": 3.1582, "sigmoid_scale": 1.0}, shift_law(3.1582, 1.0)),
    ("shift", {"shift": 1.5, "sigmoid_scale": 0.8}, shift_law(1.5, 0.8)),
    ("flux_shift", {"mu": 1.15, "sigmoid_scale": 1.0}, flux_shift_law(1.15, 1.0)),
    ("flux_shift", {"mu": 0.5, "sigmoid_scale": 1.3}, flux_shift_law(0.5, 1.3)),
    ("nextdit_shift", {"mu": 1.15}, nextdit_shift_law(1.15)),
    ("nextdit_shift", {"mu": 0.5}, nextdit_shift_law(0.5)),
]


@pytest.mark.parametrize("sampler,options,cdf", CLAIMS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLAIMS)])
def test_each_timestep_sampler_draws_the_law_it_claims(sampler, options, cdf):
    samples = draws(sampler, **options)
    assert ((samples > 0) & (samples < 1)).all()
    assert ks_distance(samples, cdf) < KS_LIMIT


@pytest.mark.parametrize("sampler,options,wrong_cdf", [
    ("shift", {"shift": 3.1582}, sigmoid_law(1.0)),  # a shift that did nothing would pass as plain sigmoid
    ("sigmoid", {"sigmoid_scale": 1.0}, lambda x: x),
    ("flux_shift", {"mu": 1.15}, flux_shift_law(0.5, 1.0)),  # the resolution must move the law
    ("nextdit_shift", {"mu": 1.15}, flux_shift_law(1.15, 1.0)),  # a uniform draw is not flux_shift's sigmoid one
])
def test_the_statistical_check_rejects_a_wrong_law(sampler, options, wrong_cdf):
    assert ks_distance(draws(sampler, **options), wrong_cdf) > 5 * KS_LIMIT


def test_flux_mu_is_comfyuis_resolution_shift():
    """ComfyUI's ModelSamplingFlux node computes the shift a Flux image of a size is sampled with; our mu is it."""
    model = flow_models.tiny_flux_dev().model
    for width, height in ((1024, 1024), (512, 512), (768, 1344), (256, 256)):
        patched = runtime.run_node("ModelSamplingFlux", model=model, max_shift=1.15, base_shift=0.5,
                                   width=width, height=height)[0]
        expected = patched.get_model_object("model_sampling").shift
        assert flow().flux_mu(height // 8, width // 8) == pytest.approx(expected, rel=1e-9)


def test_flux_shift_transforms_the_sigmoid_draw_as_comfyui_shifts_flux_time():
    """Same normal draws: our flux_shift sigma is ComfyUI's flux_time_shift of kohya's sigmoid draw."""
    import comfy.model_sampling

    mu = flow().flux_mu(128, 128)
    ours = flow().sample_sigmas("flux_shift", 64, torch.Generator().manual_seed(3), mu=mu)
    z = torch.randn(64, generator=torch.Generator().manual_seed(3))
    reference = comfy.model_sampling.flux_time_shift(mu, 1.0, torch.sigmoid(z))
    torch.testing.assert_close(ours, reference.float(), atol=1e-5, rtol=1e-5)


def test_nextdit_shift_transforms_a_uniform_draw_as_comfyui_shifts_flux_time():
    """Same uniform draws: our nextdit_shift sigma is ComfyUI's flux_time_shift of kohya's uniform draw."""
    import comfy.model_sampling

    mu = flow().flux_mu(128, 128)
    ours = flow().sample_sigmas("nextdit_shift", 64, torch.Generator().manual_seed(3), mu=mu)
    u = torch.rand(64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, comfy.model_sampling.flux_time_shift(mu, 1.0, u).float(), atol=1e-5, rtol=1e-5)


def test_an_unknown_sampler_or_weighting_is_named_in_the_error():
    with pytest.raises(ValueError, match="'lognorm'.*uniform, sigmoid, shift, flux_shift"):
        flow().sample_sigmas("lognorm", 4, torch.Generator())
    with pytest.raises(ValueError, match="'sqrt'.*none, logit_normal, mode, cosmap"):
        flow().loss_weights("sqrt", torch.rand(4))


GRID = torch.linspace(1e-4, 1 - 1e-4, 20_001, dtype=torch.float64)


@pytest.mark.parametrize("weighting", ["logit_normal", "mode", "cosmap"])
def test_each_loss_weighting_is_a_density_on_the_unit_interval(weighting):
    """So the weighted loss keeps the unweighted loss's scale."""
    weights = flow().loss_weights(weighting, GRID)
    assert (weights > 0).all()
    assert torch.trapezoid(weights, GRID).item() == pytest.approx(1.0, abs=2e-3)


def histogram_density(samples: torch.Tensor, bins: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.histc(samples.double(), bins=bins, min=0.0, max=1.0)
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    return centres, counts / counts.sum() * bins


@pytest.mark.parametrize("weighting,options", [
    ("logit_normal", {"logit_mean": 0.0, "logit_std": 1.0}),
    ("logit_normal", {"logit_mean": 0.5, "logit_std": 0.7}),
    ("mode", {"mode_scale": 1.29}),
    ("mode", {"mode_scale": 0.5}),
])
def test_logit_normal_and_mode_weights_are_the_densities_diffusers_samples(weighting, options):
    """diffusers' compute_density_for_timestep_sampling draws the SD3 paper's timesteps; our weight at sigma is
    the density of those draws (diffusers' u is the training sigma)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    torch.manual_seed(0)
    samples = compute_density_for_timestep_sampling(weighting, 200_000, logit_mean=options.get("logit_mean"),
                                                    logit_std=options.get("logit_std"),
                                                    mode_scale=options.get("mode_scale"))
    centres, density = histogram_density(samples)
    weights = flow().loss_weights(weighting, centres, **options)
    assert (weights - density).abs().max().item() < 0.05 * density.max().item()


def test_cosmap_weight_is_diffusers_cosmap_weighting():
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    sigmas = torch.rand(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(flow().loss_weights("cosmap", sigmas),
                               compute_loss_weighting_for_sd3("cosmap", sigmas))


def test_no_weighting_is_ones():
    sigmas = torch.rand(8)
    assert torch.equal(flow().loss_weights("none", sigmas), torch.ones(8))


def test_noisy_latents_velocity_and_denoised_agree_with_comfyuis_flow_sampling():
    """ComfyUI builds x_t with its CONST noise scaling and returns D = x_t - sigma * v from apply_model."""
    model_sampling = flow_models.tiny_flux_dev().model.get_model_object("model_sampling")
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 16, 4, 4, generator=generator), torch.randn(3, 16, 4, 4, generator=generator)
    sigma = torch.tensor([0.1, 0.5, 0.9])
    noisy = flow().noisy_latents(latents, noise, sigma)
    torch.testing.assert_close(noisy, model_sampling.noise_scaling(sigma.view(-1, 1, 1, 1), noise, latents))
    velocity = flow().velocity_target(latents, noise)
    denoised = model_sampling.calculate_denoised(sigma, velocity, noisy)
    torch.testing.assert_close(denoised, latents, atol=1e-5, rtol=1e-5)  # the true velocity denoises exactly
    torch.testing.assert_close(flow().velocity_from_denoised(noisy, denoised, sigma), velocity, atol=1e-5, rtol=1e-5)
