"""Correctness of one Train LoRA run, each check on its own so one failure does not hide the others.

Each check returns {"ok": bool, "detail": str}; an exception inside a check is that check's failure.
"""
from __future__ import annotations

import math
import re
import traceback
from typing import Any, Callable

import torch

# LoraLoader's output may differ from the in-process adapter's by storage rounding (fp16/bf16 weights take the
# merged delta; the adapter adds an fp32 delta to activations): allowed up to this share of the adapter's effect.
REPRODUCTION_TOLERANCE = 0.1


def guarded(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return check()
    except Exception as error:  # noqa: BLE001  (recorded in the report, never swallowed)
        return {"ok": False, "detail": f"{type(error).__name__}: {error}", "traceback": tail(traceback.format_exc())}


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def finite_losses(lora: Any, expected_steps: int) -> dict[str, Any]:
    losses = [loss for _, loss in lora.loss_history]
    finite = all(math.isfinite(loss) for loss in losses)
    ok = finite and len(losses) >= expected_steps
    return {"ok": ok, "detail": f"{len(losses)} steps, losses {losses[0]:.4g} .. {losses[-1]:.4g}" if losses else "no steps",
            "losses": losses}


TEXT_ENCODER_LAYER = re.compile(r"(lora_te\d*)_.*?layers_(\d+)_")  # kohya names: prefix and layer index


def adapters_changed(lora: Any) -> dict[str, Any]:
    """LoRA up matrices start at zero (kohya's init), so every layer that got a gradient has moved.

    A text encoder's last layer may stay put: a model that reads the penultimate layer (SDXL's clip_l) never
    sends a gradient there.
    """
    ups = {name: tensor for name, tensor in lora.weights().items() if name.endswith("lora_up.weight")}
    still = [name for name, tensor in ups.items() if not (bool(tensor.abs().max() > 0) and bool(torch.isfinite(tensor).all()))]
    layers = {name: (match[1], int(match[2])) for name in ups if (match := TEXT_ENCODER_LAYER.match(name))}
    last = {}
    for encoder, index in layers.values():
        last[encoder] = max(last.get(encoder, 0), index)
    unread = [name for name in still if name in layers and layers[name][1] == last[layers[name][0]]]
    stuck = [name for name in still if name not in unread]
    mean = sum(float(tensor.abs().mean()) for tensor in ups.values()) / max(1, len(ups))
    detail = f"{len(ups) - len(still)} of {len(ups)} LoRA layers moved from zero, mean |up| {mean:.3g}"
    if unread:
        detail += f"; {len(unread)} in a text encoder's last layer did not (the model reads an earlier layer)"
    if stuck:
        detail += f"; stuck: {stuck[:3]}"
    return {"ok": bool(ups) and not stuck, "detail": detail}


def snapshot(bundle: Any) -> dict[str, torch.Tensor]:
    """The graph's diffusion-model and text-encoder tensors as raw bytes, for a bit-exact comparison later."""
    import comfy.model_management as mm

    mm.unload_all_models()  # dynamic VRAM keeps replaced parameters in its backup while loaded
    parts = {"unet": bundle.model.model.diffusion_model, "clip": bundle.clip.cond_stage_model}
    return {f"{part}.{name}": value.detach().to("cpu", copy=True).reshape(-1).view(torch.uint8)
            for part, module in parts.items() for name, value in module.state_dict().items()}


def base_unchanged(bundle: Any, before: dict[str, torch.Tensor]) -> dict[str, Any]:
    after = snapshot(bundle)
    changed = [name for name, value in before.items() if name not in after or not torch.equal(after[name], value)]
    return {"ok": not changed and after.keys() == before.keys(),
            "detail": f"{len(before)} tensors bit-identical" if not changed else f"{len(changed)} tensors changed, e.g. {changed[:3]}"}


def reproduction_error(bundle: Any, lora: Any, lora_name: str, text_encoder: bool) -> dict[str, float]:
    """Per part (UNet, each trained text encoder): |LoraLoader - in-process adapter| / |adapter's effect|."""
    import test_lora_files_helpers as helpers
    import trained_adapter_reference as reference

    inputs = helpers.unet_inputs(bundle)
    base = reference.per_part(bundle, helpers.unet_output(bundle.model, inputs), helpers.clip_output(bundle.clip))
    unet, text = reference.in_process_adapters(bundle, lora)
    trained = reference.per_part(bundle, *reference.in_process_outputs(bundle, unet, text, inputs))
    loaded = reference.per_part(bundle, *reference.lora_loader_outputs(bundle, lora_name, 1.0, inputs))
    shares = {}
    for part in (list(base) if text_encoder else ["unet"]):
        effect = float((trained[part] - base[part]).norm())
        shares[part] = float((loaded[part] - trained[part]).norm()) / effect if effect > 0 else math.inf
    return shares


def describe(shares: dict[str, float]) -> str:
    return ", ".join(f"{part}: error {share:.2%} of the adapter's effect" for part, share in shares.items())


def lora_loader_reproduces(bundle: Any, lora: Any, text_encoder: bool, reference_bundle: Any | None) -> dict[str, Any]:
    """Save LoRA (fp32) -> LoraLoader on the graph's MODEL/CLIP gives the outputs of the trained in-process adapter,
    up to a small share of the adapter's own effect.

    On an fp8-stored base (`reference_bundle` is then the same model at default storage) ComfyUI rounds each
    merged weight back to fp8 (stochastic rounding, steps of 6-12%), which swamps a few steps' delta: the file is
    judged on the default-storage model and the fp8 figure is reported beside it.
    """
    from harness import runtime

    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix="gpu_kit/check", epochs="final", dtype="fp32",
                             overwrite=True)
    lora_name = saved.ui["loras"][0]["lora_name"]
    judged = reproduction_error(reference_bundle or bundle, lora, lora_name, text_encoder)
    ok = all(share <= REPRODUCTION_TOLERANCE for share in judged.values())
    detail = describe(judged)
    if reference_bundle is not None:
        detail = (f"on the default-storage model {detail}; on the fp8-stored model itself "
                  f"{describe(reproduction_error(bundle, lora, lora_name, text_encoder))} (fp8 rounding of merged weights)")
    return {"ok": ok, "detail": detail, "error_share": judged}


def run_all(bundle: Any, lora: Any, expected_steps: int, text_encoder: bool, before: dict[str, torch.Tensor],
            reference_bundle: Any | None = None) -> dict[str, Any]:
    """Every check, in an order where the bit-exact base comparison comes last (after LoraLoader loaded patches)."""
    return {
        "finite_losses": guarded(lambda: finite_losses(lora, expected_steps)),
        "adapters_changed": guarded(lambda: adapters_changed(lora)),
        "lora_loader_reproduces": guarded(lambda: lora_loader_reproduces(bundle, lora, text_encoder, reference_bundle)),
        "base_unchanged": guarded(lambda: base_unchanged(bundle, before)),
    }
