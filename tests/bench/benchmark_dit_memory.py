"""What Train LoRA's memory estimate says for the big transformers at their released sizes: Flux.1 dev (19
double, 38 single blocks) beside kohya's published figures, Qwen-Image (60 blocks, 20B), Z-Image (6B),
Lumina 2 (2.6B), Wan 2.1 T2V 14B (40 blocks; Wan 2.2 A14B's high- and low-noise files each have its shape) and
Flux.2 (dev 32B, Klein 4B and 9B), HiDream I1 (16 double, 32 single MoE blocks, 17B; Full, Dev and Fast
alike) and HunyuanImage 2.1 (20 double, 40 single blocks, 17B, at 2048, 1536 and 1024 px), the figures in the
README's family sections.

Each model is built on the meta device (shapes only), stored in fp8 (Load Diffusion Model's fp8_e4m3fn: one
byte a weight) and computed in bf16, text-encoder outputs cached; the estimate's calibration was fitted on SD UNets.

    eval "$(bash scripts/provision.sh | sed 's/^/export /')" && "$PYTHON" tests/bench/benchmark_dit_memory.py
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from harness import flow_models, flux2, hidream, hunyuan_image, nextdit, qwen_image, runtime, wan  # noqa: E402

KOHYA = {  # docs/flux_train_network.md, fp8_base at 1024 px
    (1024, 2): "24 GB", (1024, 1): "16 GB with block swap",
}


def workloads(resolutions: tuple[int, ...]) -> tuple[tuple[int, int, int, bool], ...]:
    """(rank, px, batch, checkpointing) rows: the largest size at batch 1 and 2, each smaller size, rank 8 at the
    smallest, and the largest without checkpointing."""
    top, *rest = resolutions
    return ((16, top, 1, True), (16, top, 2, True), *((16, size, 1, True) for size in rest),
            (8, resolutions[-1], 1, True), (16, top, 1, False))


def report(name: str, diffusion_model, family, compare: dict,
           resolutions: tuple[int, ...] = (1024, 768, 640, 512)) -> None:
    memory = runtime.pack("trainer.training.memory")
    session = runtime.pack("trainer.training.session")
    targets = runtime.pack("trainer.models.targets")
    weights = sum(parameter.numel() for parameter in diffusion_model.parameters())
    layers = targets.unet_targets(diffusion_model, False, family.adapter_blocks, family.adapter_exclude)
    profile = memory.activation_profile(diffusion_model, session.checkpoint_blocks(diffusion_model))
    print(f"{name}: {weights / 1e9:.2f}B weights, {len(layers)} adapted layers")
    print(f"{'rank':>4} {'px':>5} {'batch':>5} {'ckpt':>5}  estimate{'':40} kohya")
    for rank, resolution, batch, checkpointing in workloads(resolutions):
        adapter = sum(rank * (layer.module.in_features + layer.module.out_features) for layer in layers)
        work = memory.Workload(weight_bytes=weights, weight_count=weights, weights_cast=True,
                               adapter_parameters=adapter, optimizer="AdamW",
                               batches=((batch, (resolution // family.latent_scale) ** 2),), gradient_checkpointing=checkpointing,
                               compute_bytes=2, scores_materialised=False)
        estimate = memory.estimate_peak(profile, work)
        print(f"{rank:>4} {resolution:>5} {batch:>5} {str(checkpointing):>5}  {estimate.describe()[:46]:46}  "
              f"{compare.get((resolution, batch), '') if checkpointing else ''}")


def main() -> None:
    runtime.boot()
    families = runtime.pack("trainer.models.families")
    report("Flux.1 dev", flow_models.full_width_flux_on_meta(depth=19, depth_single_blocks=38).diffusion_model,
           families.FLUX_DEV, KOHYA)
    report("Qwen-Image", qwen_image.full_size_qwen_image_on_meta().diffusion_model,
           families.QWEN_IMAGE, {})
    report("Z-Image", nextdit.released_on_meta("z_image").diffusion_model, families.Z_IMAGE, {})
    report("Lumina 2", nextdit.released_on_meta("lumina2").diffusion_model, families.LUMINA2, {})
    report("Wan 2.1 T2V 14B", wan.full_size_wan21_14b_on_meta().diffusion_model, families.WAN, {})
    report("HiDream I1", hidream.full_size_hidream_on_meta().diffusion_model, families.HIDREAM_I1, {})
    report("HunyuanImage 2.1", hunyuan_image.released_on_meta().diffusion_model, families.HUNYUAN_IMAGE_2_1, {},
           (2048, 1536, 1024))  # (its native 2K; 32x latents: 2048 px is 4096 tokens, as Flux at 1024 px)
    for name in flux2.RELEASED:  # (Klein: the same latents as dev)
        try:
            model = flux2.released_on_meta(name)
        except ValueError as error:  # 0.3.75 detects every Flux.2 with dev's 48 heads, so Klein does not load there
            print(f"{name}: this ComfyUI cannot load it ({error})")
            continue
        report(name, model.diffusion_model, families.FLUX2_DEV, {})


if __name__ == "__main__":
    main()
