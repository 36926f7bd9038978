"""A random-weight HiDream I1 built through ComfyUI's own classes: its MoE transformer (double- and single-stream
blocks whose image feed-forward routes each token to 2 of 4 experts), ComfyUI's HiDream text encoder (CLIP-L,
CLIP-G, T5-XXL and Llama 3.1 with their real tokenizers, shrunk) and Flux's 16-channel 8x latent space.

ComfyUI's detection recognises HiDream by its caption projections and fixes every other entry (heads, rotary
axes, caption widths, block counts, the Llama layer each block reads, the pooled width) at the released 17B's
values, so the toy geometry (`toy_geometry`) replaces them, as the other DiT fixtures do. The pooled width is
CLIP-L's projection plus CLIP-G's, the caption widths T5's and Llama's hidden sizes. Llama's heads stay 128 wide
(ComfyUI's config fixes them) and its vocabulary real (128256 ids).

Llama 3's tokenizer: ComfyUI's own class and its special tokens (`tokenizer_config.json`, which every tree ships),
over a byte-level vocabulary of the 256 bytes without merges, written to the fixture cache: the /work/comfy033
checkout of ComfyUI 0.33 lacks the 9 MB `llama_tokenizer/tokenizer.json` that releases ship, and a toy encoder needs
no real word pieces.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import torch

from .models import (
    ModelBundle, assemble_vae, cache_dir, cached_dit_bundle, detected_with_toy_geometry, initialise_,
    shrunk_text_encoder, tiny_encoder_overrides, tiny_vae_config, vae_weights,
)

LATENT_CHANNELS = 16
TINY_CLIP_L = tiny_encoder_overrides(hidden_size=32)
TINY_CLIP_G = tiny_encoder_overrides(hidden_size=32)
TINY_T5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}
TINY_LLAMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1}
DOUBLE_BLOCKS, SINGLE_BLOCKS = 2, 2
# Llama 3's pre-tokenizer split (its tokenizer.json; ComfyUI 0.33's BPE reader accepts only this one)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def toy_geometry() -> dict[str, Any]:
    """What detection fixes at the 17B's size, for the toy: 2 heads of 32 (rotary 16 + 8 + 8, the released 2:1:1),
    two blocks of each kind, each reading one of the toy Llama's two layers (the released model reads 0..31 and
    then the last layer again), the caption and pooled widths of the toy encoders."""
    return {"attention_head_dim": 32, "num_attention_heads": 2, "axes_dims_rope": [16, 8, 8],
            "num_layers": DOUBLE_BLOCKS, "num_single_layers": SINGLE_BLOCKS, "llama_layers": [0, 1, 1, 1],
            "caption_channels": [TINY_T5["d_model"], TINY_LLAMA["hidden_size"]],
            "text_emb_dim": TINY_CLIP_L["projection_dim"] + TINY_CLIP_G["projection_dim"]}


def hidream_config() -> dict[str, Any]:
    """Constructor arguments of ComfyUI's HiDreamImageTransformer2DModel at toy size (2x2 patches of 16 channels,
    the released 4 routed experts with 2 active)."""
    return {"image_model": "hidream", "patch_size": 2, "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
            "num_routed_experts": 4, "num_activated_experts": 2, "max_resolution": [128, 128], **toy_geometry()}


EMBEDDER_SCALE = 25.0  # the timestep and pooled embedders' weights at 0.5 rather than 0.02 (see diffusion_weights)


def diffusion_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Random weights, the timestep and pooled embedders' drawn wider: every block's residual is scaled by gates
    that modulations read from those embeddings, and at 0.02 the gates are about 1e-3, so that the blocks (and any
    adapter in them) would barely reach the output; trained models have gates of order one."""
    import comfy.ldm.hidream.model
    import comfy.ops

    model = initialise_(comfy.ldm.hidream.model.HiDreamImageTransformer2DModel(
        **config, operations=comfy.ops.disable_weight_init), seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("t_embedder.", "p_embedder.")) and parameter.ndim == 2:
                parameter.mul_(EMBEDDER_SCALE)
    return model.state_dict()


def byte_level_llama3_tokenizer() -> pathlib.Path:
    """A folder holding Llama 3's tokenizer as ComfyUI reads it (transformers' LlamaTokenizerFast on 0.3.x, its own
    BPE reader on 0.33): ComfyUI's tokenizer_config.json, and a tokenizer.json whose vocabulary is the 256
    byte-level pieces (ids 0-255, GPT-2's byte-to-character table) with Llama 3's special tokens at their ids and
    <|begin_of_text|> before every prompt."""
    import comfy.text_encoders.hunyuan_video as hunyuan_video

    shipped = pathlib.Path(hunyuan_video.__file__).parent / "llama_tokenizer" / "tokenizer_config.json"
    config = json.loads(shipped.read_text(encoding="utf-8"))
    specials = [{"id": int(index), **token} for index, token in config["added_tokens_decoder"].items()]
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    characters = {byte: chr(byte if byte in printable else next(extra)) for byte in range(256)}
    bos = config["bos_token"]
    bos_id = next(token["id"] for token in specials if token["content"] == bos)
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {bos: {"id": bos, "ids": [bos_id],
                                                    "tokens": [bos]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {characters[byte]: byte for byte in range(256)}, "merges": []},
    }
    folder = cache_dir() / "llama3-byte-level-tokenizer"
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    return folder


def hidream_clip_target() -> Any:
    """ComfyUI's HiDream text encoder and tokenizer: CLIP-L and CLIP-G pooled, T5-XXL's last state, and every
    Llama layer's states (`conditioning_llama3`), each encoder at toy width."""
    import comfy.supported_models_base
    import comfy.text_encoders.hidream as hidream

    clip = shrunk_text_encoder(hidream.hidream_clip(), clip_l=TINY_CLIP_L, clip_g=TINY_CLIP_G, t5xxl=TINY_T5,
                               llama=TINY_LLAMA)
    return comfy.supported_models_base.ClipTarget(byte_level_hidream_tokenizer(), clip)


def byte_level_hidream_tokenizer() -> type:
    """ComfyUI's HiDreamTokenizer, whose Llama 3 tokenizer reads `byte_level_llama3_tokenizer`'s folder.

    ComfyUI's LLAMA3Tokenizer hands its folder to SDTokenizer, so a class between the two in the method order
    swaps the folder; HiDreamTokenizer's own __init__ runs as it is, with that class as its Llama 3 tokenizer
    (its code over its module's names, the one name changed), so every other argument stays ComfyUI's."""
    import types

    import comfy.sd1_clip
    import comfy.text_encoders.hidream as hidream
    import comfy.text_encoders.hunyuan_video as hunyuan_video

    folder = str(byte_level_llama3_tokenizer())

    class ByteLevelFolder(comfy.sd1_clip.SDTokenizer):
        def __init__(self, tokenizer_path=None, **kwargs):
            super().__init__(folder, **kwargs)

    class ByteLevelLlama3Tokenizer(hunyuan_video.LLAMA3Tokenizer, ByteLevelFolder):
        pass

    names = {**vars(hidream), "hunyuan_video": types.SimpleNamespace(LLAMA3Tokenizer=ByteLevelLlama3Tokenizer)}
    init = types.FunctionType(hidream.HiDreamTokenizer.__init__.__code__, names, "__init__",
                              hidream.HiDreamTokenizer.__init__.__defaults__)
    return type("ByteLevelHiDreamTokenizer", (hidream.HiDreamTokenizer,), {"__init__": init})


def tiny_hidream(seed: int = 0) -> ModelBundle:
    """HiDream I1: MoE double/single-stream DiT, four text encoders, Flux's latent space."""
    config = hidream_config()
    vae_config = tiny_vae_config(latent_channels=LATENT_CHANNELS)
    text = {"clip_l": TINY_CLIP_L, "clip_g": TINY_CLIP_G, "t5xxl": TINY_T5, "llama": TINY_LLAMA}
    recipe = {"diffusion": config, "embedders": EMBEDDER_SCALE, "text": text, "vae": vae_config, "seed": seed}
    return cached_dit_bundle(
        "hidream_i1", "tiny-hidream-i1", recipe,
        lambda: diffusion_weights(config, seed), hidream_clip_target(), lambda: vae_weights(vae_config, seed + 2),
        lambda unet_sd: detected_with_toy_geometry(unet_sd, "hidream", toy_geometry()),
        lambda vae_sd: assemble_vae(vae_sd, vae_config, latent_channels=LATENT_CHANNELS))


def full_size_hidream_on_meta() -> Any:
    """HiDream I1 (Full, Dev and Fast share it: 16 double and 32 single blocks, 17B weights) on the meta device,
    at the geometry ComfyUI's detection gives it: shapes without weights, for the memory estimate's figures."""
    import comfy.ldm.hidream.model
    import comfy.model_detection
    import comfy.ops

    released = comfy.model_detection.detect_unet_config({"caption_projection.0.linear.weight": None}, "")
    weights = comfy.ldm.hidream.model.HiDreamImageTransformer2DModel(
        **released, device="meta", operations=comfy.ops.disable_weight_init).state_dict()
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
