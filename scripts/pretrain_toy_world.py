"""Pretrain a demo model (trainer/toy_world/*.safetensors) from nothing, reproducibly.

    eval "$(bash scripts/provision.sh | sed 's/^/export /')"
    "$PYTHON" scripts/pretrain_toy_world.py                          # toy_world: 33.5 min with 3-4 other jobs on 2 cores
    "$PYTHON" scripts/pretrain_toy_world.py --model flow_toy_world   # the Flux-architecture one

Two phases, both on ComfyUI's own modules so the result loads into ComfyUI unchanged:
1. the VAE (AutoencoderKL, 4x downsampling; 4 latent channels, or Flux's 16) learns to reproduce any colour
   and shape on any background;
2. the denoiser learns to draw "a <colour> <shape> on a <background> background" for the base vocabulary
   (trainer/toy_world/scenes.py), with 10% empty captions so classifier-free guidance works and 15% without
   the background so short prompts work. toy_world: the UNet and the CLIP text model jointly, with ComfyUI's
   `model_sampling` (eps prediction, SD1.5's noise schedule). flow_toy_world: the Flux transformer alone on
   rectified flow (logit-normal timesteps, velocity loss, random guidance it learns to ignore) under frozen,
   randomly initialised CLIP-L and T5 (a LoRA never trains T5; random encoders already tell captions apart).
Seeds, thread count and step counts are fixed, so a rerun with the same torch build gives the same tensors
(the safetensors header may list its metadata in another order).
"""
from __future__ import annotations

import os

# Other processes share these two cores: threads that sleep while waiting, instead of spinning, keep an
# oversubscribed machine from slowing every step many-fold. Must be set before torch loads its OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
log = logging.getLogger("pretrain_toy_world")


def boot_comfyui() -> None:
    """Make ComfyUI's `comfy` package importable in CPU mode, as the test harness does."""
    root = os.environ.get("COMFYUI_PATH")
    if not root or not pathlib.Path(root, "comfyui_version.py").is_file():
        sys.exit("Set COMFYUI_PATH to a ComfyUI tree (scripts/provision.sh prints one).")
    sys.path.insert(0, root)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    args.use_pytorch_cross_attention = True  # torch's fused attention: faster for training than the CPU default


def import_pack_trainer() -> Any:
    """LoRA Lab's `trainer` package under a private name, without putting the pack folder on sys.path
    (its `nodes/` would shadow ComfyUI's `nodes.py`)."""
    spec = importlib.util.spec_from_file_location("loralab_trainer", REPO / "trainer" / "__init__.py",
                                                  submodule_search_locations=[str(REPO / "trainer")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["loralab_trainer"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- helpers


def reset_parameters_(module: torch.nn.Module) -> torch.nn.Module:
    """Run torch's own initialisation on every layer: ComfyUI's layer classes skip it (pitfall 1). Norms that
    are not torch's (Flux's RMSNorm `scale`, T5's LayerNorm `weight`) start at one."""
    initialised: set[int] = set()
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.Embedding):
                layer.weight.normal_(0.0, 0.02)  # CLIP's token and position embedding scale
                initialised.add(id(layer.weight))
                continue
            for torch_class in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm):
                if isinstance(layer, torch_class):
                    torch_class.reset_parameters(layer)  # ComfyUI's subclasses turn their own into a no-op
                    initialised.update(id(parameter) for parameter in layer.parameters(recurse=False))
        for name, parameter in module.named_parameters():
            if id(parameter) not in initialised and parameter.ndim > 0:  # scalars (CLIP's logit_scale) have values
                if parameter.ndim != 1 or not name.endswith(("scale", "weight")):
                    raise RuntimeError(f"no initialisation known for {name} {tuple(parameter.shape)}")
                parameter.fill_(1.0)
    return module


@contextlib.contextmanager
def out_of_place_residuals(text_encoder: torch.nn.Module) -> Iterator[None]:
    """ComfyUI's CLIPLayer adds its residuals in place (`x += ...`), which autograd rejects once the text
    encoder has gradients (pitfall 2). Give each layer instance an out-of-place forward while training;
    ComfyUI's files and class stay untouched, and the instances get their class forward back afterwards."""
    import comfy.clip_model

    def forward(self, x, mask=None, optimized_attention=None):
        x = x + self.self_attn(self.layer_norm1(x), mask, optimized_attention)
        return x + self.mlp(self.layer_norm2(x))

    layers = [layer for layer in text_encoder.modules() if isinstance(layer, comfy.clip_model.CLIPLayer)]
    for layer in layers:
        layer.forward = types.MethodType(forward, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, scale: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * scale


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], the range ComfyUI's VAE wrapper feeds the encoder."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class Progress:
    def __init__(self, name: str, total: int) -> None:
        self.name, self.total, self.start, self.losses = name, total, time.monotonic(), []

    def update(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        if (step + 1) % 25 == 0 or step + 1 == self.total:
            elapsed = time.monotonic() - self.start
            eta = elapsed / (step + 1) * (self.total - step - 1)
            log.info("%s step %d/%d loss %.4f (%.1f s elapsed, %.1f s left)", self.name, step + 1, self.total,
                     float(np.mean(self.losses[-25:])), elapsed, eta)


# ---------------------------------------------------------------- phase 1: the VAE


RANDOM_SCENE_FRACTION = 0.35


def vae_batch(scenes: Any, rng: np.random.Generator, size: int) -> np.ndarray:
    """Some random scenes (any colour, several objects), the rest named ones from the full palette and shapes."""
    images = [scenes.random_scene_image(rng) for _ in range(round(size * RANDOM_SCENE_FRACTION))]
    for _ in range(size - len(images)):
        scene = scenes.named_scene(str(rng.choice(list(scenes.COLOURS))), str(rng.choice(scenes.SHAPES)),
                                   str(rng.choice(list(scenes.BACKGROUNDS))), rng)
        images.append(scenes.render(scene))
    return np.stack(images)


def train_vae(toy: Any, rng: np.random.Generator, steps: int, batch_size: int) -> torch.nn.Module:
    from comfy.ldm.modules.distributions.distributions import DiagonalGaussianDistribution

    vae = reset_parameters_(toy.loader.new_vae_module(toy.kind)).train()
    with torch.no_grad():  # start with a small posterior spread, so early reconstructions are not drowned in noise
        vae.quant_conv.bias[vae.embed_dim:] = -6.0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1.5e-3, betas=(0.9, 0.99), weight_decay=0.0)
    for group in optimizer.param_groups:
        group["peak_lr"] = group["lr"]
    progress = Progress("vae", steps)
    for step in range(steps):
        set_learning_rate(optimizer, learning_rate(step, steps, 1.0, warmup=30))
        images = to_tensor(vae_batch(toy.scenes, rng, batch_size))
        posterior = DiagonalGaussianDistribution(vae.quant_conv(vae.encoder(images)))
        reconstruction = vae.decode(posterior.sample())
        # L1 keeps edges and flat colours crisp; the tiny KL term only keeps the latent scale bounded.
        loss = (reconstruction - images).abs().mean() + ((reconstruction - images) ** 2).mean() \
            + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        progress.update(step, loss.item())
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode(vae: torch.nn.Module, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations, in batches."""
    from comfy.ldm.modules.distributions.distributions import DiagonalGaussianDistribution

    means, stds = [], []
    for start in range(0, len(images), 256):
        posterior = DiagonalGaussianDistribution(vae.quant_conv(vae.encoder(to_tensor(images[start:start + 256]))))
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def latent_statistics(means: torch.Tensor, images: np.ndarray, downscale: int, with_shift: bool) -> dict[str, str]:
    """The latent scale (unit variance, as SD's 0.18215 gives SD latents), for Flux-type latent formats also the
    shift (zero mean), and a linear latent-to-RGB map for ComfyUI's sampling previews, fitted on the model's latents."""
    shift = means.mean().item() if with_shift else 0.0
    scale = 1.0 / (means - shift).std().item()
    latents = ((means - shift) * scale).permute(0, 2, 3, 1).reshape(-1, means.shape[1])
    pooled = torch.nn.functional.avg_pool2d(to_tensor(images), downscale).permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat([latents, torch.ones(len(latents), 1)], dim=1)
    solution = torch.linalg.lstsq(design, pooled).solution  # (channels + 1, 3)
    return {
        "latent_scale": repr(scale), **({"latent_shift": repr(shift)} if with_shift else {}),
        "latent_rgb_factors": json.dumps([[round(v, 4) for v in row] for row in solution[:-1].tolist()]),
        "latent_rgb_factors_bias": json.dumps([round(v, 4) for v in solution[-1].tolist()]),
    }


def reuse_vae(toy: Any, path: pathlib.Path) -> tuple[torch.nn.Module, dict[str, str]]:
    import comfy.utils

    _, sd, metadata = toy.loader.read_weights(path)
    vae = toy.loader.new_vae_module(toy.kind)
    vae_sd = comfy.utils.state_dict_prefix_replace(sd, {toy.loader.VAE_PREFIX: ""}, filter_keys=True)
    vae.load_state_dict({k: v.float() for k, v in vae_sd.items()})
    keys = ("latent_scale", "latent_shift", "latent_rgb_factors", "latent_rgb_factors_bias")
    return vae.eval().requires_grad_(False), {key: metadata[key] for key in keys if key in metadata}


# ---------------------------------------------------------------- phase 2: UNet and text encoder


def base_scene_pool(scenes: Any, rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """`count` images cycling evenly through every colour x shape x background of the base vocabulary."""
    combinations = [(c, s, b) for c in scenes.BASE_COLOURS for s in scenes.BASE_SHAPES for b in scenes.BASE_BACKGROUNDS]
    labels = [combinations[i % len(combinations)] for i in range(count)]
    images = np.stack([scenes.render(scenes.named_scene(c, s, b, rng)) for c, s, b in labels])
    return images, labels


def caption_for(scenes: Any, label: tuple[str, str, str], rng: np.random.Generator) -> str:
    """Mostly the full caption; sometimes without the background, so short prompts work; 10% empty for CFG."""
    draw = rng.random()
    if draw < 0.10:
        return ""
    colour, shape, background = label
    if draw < 0.25:
        return f"a {colour} {shape}"
    return scenes.caption(colour, shape, background)


class Tokens:
    """Token ids exactly as CLIPTextEncode produces them (one 77-token section per short caption), memoised."""

    def __init__(self) -> None:
        import comfy.sd1_clip

        self.tokenizer = comfy.sd1_clip.SD1Tokenizer()
        self.cache: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> list[list[int]]:
        for text in captions:
            if text not in self.cache:
                self.cache[text] = [token for token, _ in self.tokenizer.tokenize_with_weights(text)["l"][0]]
        return [self.cache[text] for text in captions]


class EMA:
    """Exponential moving average of weights: a short run's averaged weights sample much more cleanly."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].lerp_(value, 1.0 - self.decay)
            else:
                self.shadow[key].copy_(value)


def train_unet_and_text_encoder(toy: Any, vae: torch.nn.Module, statistics: dict[str, str], rng: np.random.Generator,
                                steps: int, batch_size: int, pool_size: int) -> tuple[dict, dict]:
    import comfy.model_base

    scale = float(statistics["latent_scale"])
    images, labels = base_scene_pool(toy.scenes, rng, pool_size)
    means, stds = encode(vae, images)
    log.info("encoded %d base scenes", len(images))

    base_model = comfy.model_base.BaseModel(toy.model.model_config(), model_type=comfy.model_base.ModelType.EPS)
    reset_parameters_(base_model.diffusion_model).train()
    text_encoder = reset_parameters_(toy.model.text_encoder_class(dtype=torch.float32)).train()
    text_encoder.requires_grad_(True)
    # Random token vectors already tell the words apart; leaving the 49408-row table frozen saves a third of a step.
    text_encoder.clip_l.transformer.text_model.embeddings.token_embedding.requires_grad_(False)
    text_parameters = [p for p in text_encoder.parameters() if p.requires_grad]
    tokenize = Tokens()
    model_sampling = base_model.model_sampling

    optimizer = torch.optim.AdamW([
        {"params": list(base_model.diffusion_model.parameters()), "lr": 1e-3, "peak_lr": 1e-3},
        {"params": text_parameters, "lr": 3e-4, "peak_lr": 3e-4},
    ], betas=(0.9, 0.99), weight_decay=0.01)
    unet_ema, text_ema = EMA(base_model.diffusion_model, 0.995), EMA(text_encoder, 0.995)
    progress = Progress("unet+text", steps)
    with out_of_place_residuals(text_encoder):
        for step in range(steps):
            set_learning_rate(optimizer, learning_rate(step, steps, 1.0, warmup=50))
            index = torch.from_numpy(rng.integers(0, len(images), size=batch_size))
            latents = (means[index] + stds[index] * torch.randn_like(means[index])) * scale
            context = text_encoder.clip_l(tokenize([caption_for(toy.scenes, labels[i], rng) for i in index]))[0]
            # Forward diffusion through ComfyUI's own schedule: x = latent + sigma * noise.
            sigma = model_sampling.sigmas[torch.randint(0, len(model_sampling.sigmas), (batch_size,))]
            # A little offset noise lets the model choose the overall brightness (black vs white backgrounds).
            noise = torch.randn_like(latents) + 0.1 * torch.randn(batch_size, latents.shape[1], 1, 1)
            noisy = model_sampling.noise_scaling(sigma.view(-1, 1, 1, 1), noise, latents)
            denoised = base_model.apply_model(noisy, sigma, c_crossattn=context)
            predicted_noise = (noisy - denoised) / sigma.view(-1, 1, 1, 1)
            # Min-SNR-5 weighting (Hang et al. 2023): nearly clean inputs teach little, so they count less.
            weight = torch.clamp(sigma ** -2, max=5.0) * sigma ** 2
            loss = (weight * ((predicted_noise - noise) ** 2).mean(dim=(1, 2, 3))).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(base_model.diffusion_model.parameters()) + text_parameters, 1.0)
            optimizer.step()
            unet_ema.update(base_model.diffusion_model)
            text_ema.update(text_encoder)
            progress.update(step, loss.item())
    return unet_ema.shadow, text_ema.shadow


class CaptionEncodings:
    """(T5 sequence, CLIP-L pooled) per caption, exactly as CLIPTextEncode gives them, from frozen encoders; memoised."""

    def __init__(self, clip: Any) -> None:
        self.clip, self.cache = clip, {}

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for text in captions:
            if text not in self.cache:
                context, pooled = self.clip.encode_from_tokens(self.clip.tokenize(text), return_pooled=True)
                self.cache[text] = (context[0].float(), pooled[0].float())
        return (torch.stack([self.cache[text][0] for text in captions]),
                torch.stack([self.cache[text][1] for text in captions]))


def flux_checkpoint_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Black Forest Labs' checkpoint names (RMS norms as `.scale`), which every ComfyUI reads whatever its own names."""
    import re

    return {re.sub(r"(query_norm|key_norm)\.weight$", r"\1.scale", key): value for key, value in weights.items()}


def train_flow_transformer(toy: Any, vae: torch.nn.Module, statistics: dict[str, str], rng: np.random.Generator,
                           steps: int, batch_size: int, pool_size: int) -> tuple[dict, dict]:
    import comfy.sd
    from loralab_trainer.training.session import ResidualsOutOfPlace as residuals_out_of_place

    images, labels = base_scene_pool(toy.scenes, rng, pool_size)
    means, stds = encode(vae, images)
    scale, shift = float(statistics["latent_scale"]), float(statistics["latent_shift"])
    log.info("encoded %d base scenes", len(images))

    clip = comfy.sd.CLIP(target=toy.kind.clip_target(), embedding_directory=None)
    reset_parameters_(clip.cond_stage_model)
    encodings = CaptionEncodings(clip)
    base_model = toy.model.model_config().get_model({}, "", device="cpu")
    transformer = reset_parameters_(base_model.diffusion_model).train()
    with torch.no_grad():  # adaLN-zero's cheaper half: the output starts at zero velocity, so early steps are calm
        transformer.final_layer.linear.weight.zero_()
        transformer.final_layer.linear.bias.zero_()
    optimizer = torch.optim.AdamW([{"params": list(transformer.parameters()), "lr": 1e-3, "peak_lr": 1e-3}],
                                  betas=(0.9, 0.99), weight_decay=0.01)
    ema = EMA(transformer, 0.995)
    progress = Progress("flux", steps)
    for step in range(steps):
        set_learning_rate(optimizer, learning_rate(step, steps, 1.0, warmup=50))
        index = torch.from_numpy(rng.integers(0, len(images), size=batch_size))
        latents = (means[index] + stds[index] * torch.randn_like(means[index]) - shift) * scale
        context, pooled = encodings([caption_for(toy.scenes, labels[i], rng) for i in index])
        # Rectified flow on ComfyUI's CONST schedule: x = (1 - sigma) * latent + sigma * noise, sigma logit-normal (SD3).
        sigma = torch.sigmoid(torch.randn(batch_size)).clamp(1e-3, 1.0)
        noise = torch.randn_like(latents)
        noisy = base_model.model_sampling.noise_scaling(sigma.view(-1, 1, 1, 1), noise, latents)
        guidance = torch.empty(batch_size).uniform_(1.0, 5.0)  # Flux dev's input; the toy learns to ignore it
        with residuals_out_of_place():  # Flux's blocks add residuals in place, which autograd rejects (pitfall 2)
            denoised = base_model.apply_model(noisy, sigma, c_crossattn=context, y=pooled, guidance=guidance)
        velocity = (noisy - denoised) / sigma.view(-1, 1, 1, 1)
        loss = ((velocity - (noise - latents)) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        ema.update(transformer)
        progress.update(step, loss.item())
    return flux_checkpoint_names(ema.shadow), clip.cond_stage_model.state_dict()


# ---------------------------------------------------------------- writing the file


def write_weights(toy: Any, path: pathlib.Path, unet: dict, text: dict, vae: dict, metadata: dict[str, str]) -> None:
    import safetensors.torch

    state = {f"{toy.loader.UNET_PREFIX}{k}": v for k, v in unet.items()}
    state.update({f"{toy.loader.CLIP_PREFIX}{k}": v for k, v in text.items()})
    state.update({f"{toy.loader.VAE_PREFIX}{k}": v for k, v in vae.items()})
    state = {k: (v.to(torch.float16) if v.dtype.is_floating_point else v).contiguous() for k, v in state.items()}
    partial = path.with_name(path.name + ".partial")
    safetensors.torch.save_file(state, str(partial), metadata=metadata)
    os.replace(partial, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("toy_world", "flow_toy_world"), default="toy_world")
    parser.add_argument("--output", type=pathlib.Path, default=None, help="default: the model's file in trainer/toy_world/")
    parser.add_argument("--vae-steps", type=int, default=700)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--unet-steps", type=int, default=None, help="default: 1200 (toy_world), 3000 (flow_toy_world)")
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--pool", type=int, default=7200, help="pretraining images (cycled over the base vocabulary)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-vae", type=pathlib.Path, default=None,
                        help="take the VAE from an existing file of the same model instead of training one (for trying "
                             "denoiser settings; the shipped files come from full runs with the defaults)")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    boot_comfyui()
    import_pack_trainer()
    import loralab_trainer.toy_world.demo_models as demo_models
    import loralab_trainer.toy_world.flow_model as flow_model
    import loralab_trainer.toy_world.model as toy_model
    import loralab_trainer.toy_world.scenes as toy_scenes

    flow = options.model == "flow_toy_world"
    module = flow_model if flow else toy_model
    toy = types.SimpleNamespace(kind=module.KIND, model=module, loader=demo_models, scenes=toy_scenes)
    output = options.output or toy.kind.weights_path
    unet_steps = options.unet_steps or (3000 if flow else 1200)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)  # denormal arithmetic on CPU is many times slower (pitfall 1)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    started = time.monotonic()

    if options.reuse_vae:
        vae, statistics = reuse_vae(toy, options.reuse_vae)
    else:
        vae = train_vae(toy, rng, options.vae_steps, options.vae_batch)
        probe = vae_batch(toy_scenes, rng, 512)
        statistics = latent_statistics(encode(vae, probe)[0], probe, toy.kind.downscale, with_shift=flow)
    log.info("VAE ready after %.0f s; latent scale %s", time.monotonic() - started, statistics["latent_scale"])

    train = train_flow_transformer if flow else train_unet_and_text_encoder
    unet, text = train(toy, vae, statistics, rng, unet_steps, options.unet_batch, options.pool)
    minutes = (time.monotonic() - started) / 60
    metadata = {
        "format": toy.kind.format, **statistics,
        "recipe": json.dumps({"vae_steps": options.vae_steps, "vae_batch": options.vae_batch,
                              "unet_steps": unet_steps, "unet_batch": options.unet_batch,
                              "pool": options.pool, "seed": options.seed, "torch": torch.__version__,
                              "minutes": round(minutes, 1)}),
    }
    write_weights(toy, output, unet, text, vae.state_dict(), metadata)
    log.info("wrote %s (%.1f MB) after %.1f minutes (%.1f CPU minutes)", output, output.stat().st_size / 1e6, minutes,
             time.process_time() / 60)


if __name__ == "__main__":
    main()
