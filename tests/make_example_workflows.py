"""Regenerate example_workflows/: the UI files, their API twins and thumbnails, built by the real frontend.

Run after a node's inputs change (tests/test_example_workflows.py and tests/test_browser.py fail until then):

    eval "$(bash scripts/provision.sh | sed 's/^/export /')" && "$PYTHON" tests/make_example_workflows.py

The graphs are written here in API format; a ComfyUI server with this pack and headless Chromium turn each into
the UI format (loadApiJson, then the layout below), export the API twin with graphToPrompt, and photograph the
canvas for the template browser's thumbnail. Inputs the server does not declare yet are left out.
"""
from __future__ import annotations

import io
import json
import pathlib
import sys
import tempfile
from typing import Any

from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import runtime  # noqa: E402
from harness.browser import Chromium  # noqa: E402
from harness.server import ComfyServer  # noqa: E402

OUT = runtime.REPO_ROOT / "example_workflows"
APP = "window.comfyAPI.app.app"
THUMBNAIL_SIDE = 576
SD15_PROMPTS = "ohwx, 1girl, smiling, outdoors\nohwx, portrait, looking at viewer"
LAYOUT = {"1": (0, 0), "2": (330, 0), "3": (330, 430), "4": (680, 0), "5": (1100, 0), "6": (1100, 190),
          "7": (0, 620), "8": (0, 770)}  # Flux's text encoders and VAE, below the note
NOTE_POS, NOTE_SIZE = (0, 160), (300, 430)


def node(class_type: str, title: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


# Train LoRA's flow-matching inputs at their defaults (they apply to Flux, Chroma and SD3 only).
FLOW_DEFAULTS = {"timestep_sampling": "family default", "sigmoid_scale": 1.0, "discrete_flow_shift": 0.0,
                 "weighting_scheme": "none", "guidance_scale": 1.0}


def pipeline(*, checkpoint: str, captioner: str, size: int, prompts: str, negative: str, steps: int, cfg: float,
             sampler: str, scheduler: str, text_encoder_lr: float, prefix: str, caption: bool = True,
             resume_from: str = "") -> dict[str, Any]:
    """Load Checkpoint -> Load Dataset -> Auto Caption -> Train LoRA -> Save LoRA, Strength Sweep (saves its grid)."""
    train = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "dataset": ["3", 0] if caption else ["2", 0],
             "network": "LoRA", "rank": 16, "alpha": 8.0, "conv_rank": 8, "conv_alpha": 4.0, "epochs": 10,
             "batch_size": 1, "gradient_accumulation": 1, "resolution": 0, "unet_lr": 0.0001,
             "text_encoder_lr": text_encoder_lr, "optimizer": "AdamW", "lr_scheduler": "cosine", "warmup_steps": 0,
             "mixed_precision": "auto", "gradient_checkpointing": True, "seed": 42, "noise_offset": 0.0,
             "min_snr_gamma": 5.0, "caption_shuffle": True, "keep_tokens": 1, "caption_dropout": 0.0,
             "flip_augment": False, "save_every_n_epochs": 1, "validation_split": 0.0, "resume_from": resume_from,
             "sample_prompts": prompts.splitlines()[0], "sample_every_n_epochs": 2, "keep_training_state": False, **FLOW_DEFAULTS}
    workflow = {
        "1": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name=checkpoint),
        "2": node("LoraLabLoadDataset", "Load Dataset", path="lora_dataset", repeats=10, caption_extension=".txt",
                  class_tokens="", regularization_path="", base_resolution=0, model=["1", 0], batch_size=1,
                  trigger_word="ohwx", epochs=10, clip=["1", 1]),
        "3": node("LoraLabAutoCaption", "Auto Caption", dataset=["2", 0], captioner=captioner, trigger_word="ohwx",
                  mode="fill_missing", exclude_tags="", general_threshold=0.35, character_threshold=0.85,
                  replace_underscores=True, max_tags=40, include_regularization=False),
        "4": node("LoraLabTrainLoRA", "Train LoRA", **train),
        "5": node("LoraLabSaveLoRA", "Save LoRA", lora=["4", 2], filename_prefix=prefix, epochs="final", dtype="fp16",
                  overwrite=False),
        "6": node("LoraLabStrengthSweep", "Strength Sweep", model=["1", 0], clip=["1", 1], vae=["1", 2], lora=["4", 2],
                  prompts=prompts, negative=negative, strengths="0, 0.5, 0.75, 1.0", seeds="1, 2", epochs="final",
                  clip_strength_ratio=1.0, width=size, height=size, steps=steps, cfg=cfg, sampler_name=sampler,
                  scheduler=scheduler, filename_prefix=prefix + "_sweep", guidance=3.5),
    }
    if not caption:
        del workflow["3"]
    return workflow


TOY_PROMPTS = "a zqx on a white background\na zqx on a black background"
TOY_EPOCHS, TOY_BATCH = 6, 8
# Measured settings per demo model (tests/test_toy_world_learning.py checks them): the learning rate that teaches
# the ring in 150 steps, and the cfg its samples need (neither toy model is guidance-distilled).
TOY_MODELS = {
    "toy_world": dict(title="toy world", unet_lr=0.004, cfg=5.0),
    "flow_toy_world": dict(title="flow toy world", unet_lr=0.01, cfg=4.0),
}


def toy_world_pipeline(model_name: str) -> dict[str, Any]:
    """The demo: a LoRA for a new concept on a built-in toy-world model, trained on a CPU in about a minute.

    The settings are measured ones: on 20 images x 10 repeats, 150 steps teach the purple ring (the LoRA at
    strength 1 draws it in 16 of 16 samples, strength 0.5 in about 1). caption_dropout keeps the empty prompt's
    branch trained, which cfg needs.
    """
    toy = TOY_MODELS[model_name]
    train = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "dataset": ["3", 0], "network": "LoRA", "rank": 4,
             "alpha": 0.0, "conv_rank": 4, "conv_alpha": 0.0, "epochs": TOY_EPOCHS, "batch_size": TOY_BATCH,
             "gradient_accumulation": 1, "resolution": 0, "unet_lr": toy["unet_lr"], "text_encoder_lr": 0.0,
             "optimizer": "AdamW", "lr_scheduler": "constant", "warmup_steps": 0, "mixed_precision": "fp32",
             "gradient_checkpointing": False, "seed": 42, "noise_offset": 0.0, "min_snr_gamma": 5.0,
             "caption_shuffle": False, "keep_tokens": 1, "caption_dropout": 0.2, "flip_augment": False,
             "save_every_n_epochs": 2, "validation_split": 0.0, "resume_from": "",
             "sample_prompts": TOY_PROMPTS.splitlines()[0], "sample_every_n_epochs": 2, "keep_training_state": False, **FLOW_DEFAULTS}
    prefix = "loralab/zqx" if model_name == "toy_world" else "loralab/zqx_flow"
    return {
        "1": node("LoraLabLoadDemoModel", f"Load Demo Model ({toy['title']})", model_name=model_name),
        "2": node("LoraLabLoadDataset", "Load Dataset", path="loralab_zqx", repeats=10, caption_extension=".txt",
                  class_tokens="", regularization_path="", base_resolution=0, model=["1", 0], batch_size=TOY_BATCH,
                  trigger_word="zqx", epochs=TOY_EPOCHS, clip=["1", 1]),
        "3": node("LoraLabAutoCaption", "Auto Caption", dataset=["2", 0], captioner="Florence-2-base", trigger_word="zqx",
                  mode="fill_missing", exclude_tags="", general_threshold=0.35, character_threshold=0.85,
                  replace_underscores=True, max_tags=40, include_regularization=False),
        "4": node("LoraLabTrainLoRA", "Train LoRA", **train),
        "5": node("LoraLabSaveLoRA", "Save LoRA", lora=["4", 2], filename_prefix=prefix, epochs="final",
                  dtype="fp16", overwrite=False),
        "6": node("LoraLabStrengthSweep", "Strength Sweep", model=["1", 0], clip=["1", 1], vae=["1", 2], lora=["4", 2],
                  prompts=TOY_PROMPTS, negative="", strengths="0, 0.25, 0.5, 0.75, 1.0", seeds="1, 2, 3",
                  epochs="all", clip_strength_ratio=1.0, width=32, height=32, steps=20, cfg=toy["cfg"],
                  sampler_name="euler", scheduler="normal", filename_prefix=f"{prefix}_sweep", guidance=3.5),
    }


def split_files_pipeline(prompts: str, cfg: float, prefix: str, diffusion_model: dict[str, Any],
                         text_encoders: dict[str, Any], vae_name: str, size: int = 1024) -> dict[str, Any]:
    """The pipeline on a model that ComfyUI loads as three files: Load Diffusion Model + its text-encoder loader +
    Load VAE; Train LoRA's flow-matching inputs at the family defaults, samples and sweep at `cfg`."""
    workflow = pipeline(checkpoint="", captioner="Florence-2-base", size=size, prompts=prompts, negative="", steps=20,
                        cfg=cfg, sampler="euler", scheduler="simple", text_encoder_lr=0.0, prefix=prefix)
    relinked = {("1", 1): ["7", 0], ("1", 2): ["8", 0]}
    for graph_node in workflow.values():
        for name, value in graph_node["inputs"].items():
            if isinstance(value, list) and tuple(value) in relinked:
                graph_node["inputs"][name] = relinked[tuple(value)]
    workflow["1"] = diffusion_model
    workflow["7"] = text_encoders
    workflow["8"] = node("VAELoader", "Load VAE", vae_name=vae_name)
    return workflow


def flux_pipeline() -> dict[str, Any]:
    """Flux.1 dev: fp8 storage, CLIP-L + T5-XXL, kohya's defaults; samples and sweep at cfg 1 with FluxGuidance 3.5."""
    return split_files_pipeline(
        "a photo of ohwx smiling outdoors\na portrait of ohwx, studio lighting", 1.0, "loralab/ohwx_flux",
        node("UNETLoader", "Load Diffusion Model", unet_name="flux1-dev.safetensors", weight_dtype="fp8_e4m3fn"),
        node("DualCLIPLoader", "DualCLIPLoader (CLIP-L + T5-XXL)", clip_name1="clip_l.safetensors",
             clip_name2="t5xxl_fp8_e4m3fn.safetensors", type="flux", device="default"), "ae.safetensors")


def qwen_image_pipeline() -> dict[str, Any]:
    """Qwen-Image: ComfyUI's fp8 transformer file, Qwen2.5-VL through Load CLIP, musubi-tuner's defaults (shift 2.2);
    samples and sweep at cfg 4 and the native 1328 px."""
    return split_files_pipeline(
        "a photo of ohwx smiling outdoors\na portrait of ohwx, studio lighting", 4.0, "loralab/ohwx_qwen_image",
        node("UNETLoader", "Load Diffusion Model", unet_name="qwen_image_fp8_e4m3fn.safetensors", weight_dtype="default"),
        node("CLIPLoader", "Load CLIP (Qwen2.5-VL)", clip_name="qwen_2.5_vl_7b_fp8_scaled.safetensors", type="qwen_image",
             device="default"), "qwen_image_vae.safetensors", size=1328)


def headless(name: str, extra: str = "--dataset /path/to/images") -> str:
    return f"Headless: python -m loralab_cli example_workflows/api/{name}.json {extra}"


SD15 = dict(checkpoint="v1-5-pruned-emaonly.safetensors", captioner="wd-vit-tagger-v3", size=512, prompts=SD15_PROMPTS,
            negative="lowres, blurry, bad anatomy", steps=20, cfg=7.0, sampler="euler_ancestral", scheduler="normal",
            text_encoder_lr=5e-05, prefix="loralab/ohwx")
EXAMPLES = {
    "loralab_toy_world_demo": (toy_world_pipeline("toy_world"), (
        "LoRA Lab demo: teach the toy world a new concept (CPU, a few minutes)\n\n"
        "Load Demo Model gives LoRA Lab's built-in toy-world model: 32x32 pictures of red, yellow, green and blue "
        "circles, squares and triangles. It has never drawn a purple ring; this workflow teaches it one, called zqx.\n\n"
        "1. Put the generated dataset in ComfyUI/input/loralab_zqx (bash scripts/demo.sh writes it; 20 captioned "
        "images in 10_zqx). The captions are there already, so Auto Caption has nothing to do.\n"
        "2. Queue. Training takes about a minute on a CPU; Train LoRA shows the loss chart and samples every 2 epochs.\n\n"
        "Save LoRA writes models/loras/loralab/zqx.safetensors. In Strength Sweep's grid (strength across, epoch "
        "down) the purple ring fades in as the strength grows, and the later epochs draw it more surely.\n\n"
        + headless("loralab_toy_world_demo", "--dataset /path/to/loralab_zqx"))),
    "loralab_flow_toy_world_demo": (toy_world_pipeline("flow_toy_world"), (
        "LoRA Lab demo: flow matching on the Flux-architecture toy world (CPU, a few minutes)\n\n"
        "The toy-world demo on the flow toy world: Flux.1's transformer (double and single stream blocks), its "
        "16-channel latents and its CLIP-L + T5 text encoders, at toy size. Train LoRA trains it the way Flux LoRAs "
        "are trained (flow matching, logit-normal timesteps, the guidance input at 1); the file has kohya's Flux "
        "names. The toy is not guidance-distilled, so Strength Sweep samples it with cfg 4.\n\n"
        "1. Put the generated dataset in ComfyUI/input/loralab_zqx (bash scripts/demo.sh --model flow_toy_world "
        "writes it).\n2. Queue. Save LoRA writes models/loras/loralab/zqx_flow.safetensors.\n\n"
        + headless("loralab_flow_toy_world_demo", "--dataset /path/to/loralab_zqx"))),
    "loralab_sd15_pipeline": (pipeline(**SD15), (
        "LoRA Lab: train an SD1.5 LoRA\n\n"
        "1. Put 10-50 images in ComfyUI/input/lora_dataset (or a folder inside a declared dataset root: see the README's Security section). "
        "Captions are same-name .txt files; Auto Caption writes the missing ones, starting with the trigger word.\n"
        "2. Choose your SD1.5 checkpoint and trigger word (ohwx here, on Load Dataset and Auto Caption).\n"
        "3. Read Load Dataset's report (warnings in orange), then queue.\n\n"
        "Train LoRA shows the loss chart, speed, ETA and the run's cost (set your GPU price per hour in Settings, "
        "LoraLab). Save LoRA writes models/loras/loralab/ohwx.safetensors; Strength Sweep renders strengths x seeds "
        "so the best strength is visible at once.\n\n" + headless("loralab_sd15_pipeline"))),
    "loralab_sdxl_pipeline": (pipeline(
        checkpoint="sd_xl_base_1.0.safetensors", captioner="Florence-2-base", size=1024,
        prompts="a photo of ohwx smiling outdoors\na portrait of ohwx, studio lighting", negative="blurry, low quality",
        steps=25, cfg=6.0, sampler="dpmpp_2m", scheduler="karras", text_encoder_lr=0.0, prefix="loralab/ohwx_sdxl"), (
        "LoRA Lab: train an SDXL LoRA\n\n"
        "The SD1.5 pipeline with an SDXL checkpoint: resolution 0 trains at SDXL's native 1024 px, Florence-2 writes "
        "sentence captions, and the text encoders stay frozen (text_encoder_lr 0).\n\n"
        "Images go in ComfyUI/input/lora_dataset (or a folder inside a declared dataset root). The LoRA is saved as "
        "models/loras/loralab/ohwx_sdxl.safetensors.\n\n" + headless("loralab_sdxl_pipeline"))),
    "loralab_flux_pipeline": (flux_pipeline(), (
        "LoRA Lab: train a Flux.1 dev LoRA\n\n"
        "Flux loads as three files: Load Diffusion Model (flux1-dev, weight_dtype fp8_e4m3fn keeps the 12B "
        "transformer at one byte a weight), DualCLIPLoader (clip_l + t5xxl, type flux) and Load VAE (ae). Train "
        "LoRA detects Flux.1 dev and trains it as kohya does: shift timesteps (3.1582), guidance 1, T5 frozen and "
        "its outputs cached, CLIP-L frozen (text_encoder_lr 0; raise it to train CLIP-L), 16 px buckets at 1024 px.\n\n"
        "Read Train LoRA's memory estimate before the first step: 21 GB at 1024 px (a 24 GB card); on 16 GB "
        "lower resolution to 768 or 512. Samples and Strength Sweep use cfg 1 with FluxGuidance 3.5.\n\n"
        "Images go in ComfyUI/input/lora_dataset; the LoRA is saved as models/loras/loralab/ohwx_flux.safetensors "
        "with kohya's Flux names.\n\n" + headless("loralab_flux_pipeline"))),
    "loralab_qwen_image_pipeline": (qwen_image_pipeline(), (
        "LoRA Lab: train a Qwen-Image LoRA\n\n"
        "Qwen-Image loads as three files: Load Diffusion Model (qwen_image_fp8_e4m3fn), Load CLIP (qwen_2.5_vl_7b, "
        "type qwen_image) and Load VAE (qwen_image_vae). Train LoRA trains the transformer blocks but their "
        "modulations, with musubi-tuner's shift sampler at 2.2, at the native 1328 px; the Qwen2.5-VL encoder stays "
        "frozen. A 24 GB card needs resolution 512 (the 20B weights take 19 GB in fp8). Samples and the sweep use "
        "cfg 4. Images go in ComfyUI/input/lora_dataset; the LoRA is saved as "
        "models/loras/loralab/ohwx_qwen_image.safetensors with musubi-tuner's names.\n\n"
        + headless("loralab_qwen_image_pipeline"))),
    "loralab_resume_training": (pipeline(**SD15, caption=False, resume_from="YYYYMMDD-HHMMSS-seed42"), (
        "LoRA Lab: continue a cancelled run\n\n"
        "When a training run is cancelled, ComfyUI's console prints 'To continue it, set resume_from to: ...'. "
        "Put that path, or just the folder's name (<date>-<time>-seed42, in ComfyUI/output/loralab/training_state), "
        "in Train LoRA's resume_from.\n\n"
        "Keep the dataset and every other Train LoRA setting as they were: the ones here match the SD1.5 pipeline "
        "example. Auto Caption is left out because the first run already wrote the captions.\n\n"
        + headless("loralab_resume_training", "--set \"Train LoRA.resume_from=<folder name>\""))),
}

BUILD_JS = """(async () => {
  const app = %(app)s;
  await app.loadApiJson(%(api)s, %(name)s);
  for (const [id, pos] of Object.entries(%(layout)s)) { const n = app.graph.getNodeById(+id); if (n) n.pos = pos; }
  const note = LiteGraph.createNode("Note");
  note.title = "Read me"; note.pos = %(note_pos)s; note.size = %(note_size)s; note.widgets[0].value = %(note)s;
  app.graph.add(note);
  return {ui: app.graph.serialize(), api: (await app.graphToPrompt()).output};
})()"""

FIT_JS = """(() => {
  const app = %(app)s, nodes = app.graph._nodes, side = %(side)d, left = %(left)d, top = %(top)d;
  const x0 = Math.min(...nodes.map(n => n.pos[0])) - 20, y0 = Math.min(...nodes.map(n => n.pos[1])) - 50;
  const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])) + 20;
  const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1])) + 20;
  const scale = Math.min(side / (x1 - x0), side / (y1 - y0));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [left / scale - x0 + (side / scale - (x1 - x0)) / 2,
                          top / scale - y0 + (side / scale - (y1 - y0)) / 2];
  app.graph.setDirtyCanvas(true, true);
  app.canvas.draw(true, true);
  return true;
})()"""


def declared(object_info: dict[str, Any], class_type: str) -> set[str]:
    inputs = object_info[class_type]["input"]
    return set(inputs.get("required", {})) | set(inputs.get("optional", {}))


def main() -> None:
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    side, left, top = 1150, 425, 150  # a square of canvas clear of the page's menus at 2000 x 1400
    with tempfile.TemporaryDirectory() as base, ComfyServer(pathlib.Path(base)) as server, Chromium(2000, 1400) as browser:
        server.post_json("/settings/Comfy.TutorialCompleted", True)
        server.post_json("/settings/Comfy.Minimap.Visible", False)
        object_info = server.get_json("/object_info")
        page = browser.page()
        page.navigate(server.url)
        page.wait_for("!!window.comfyAPI?.app?.app?.graph && !!window.LiteGraph?.registered_node_types?.LoraLabTrainLoRA",
                      120, "the ComfyUI page")
        for name, (api, note) in EXAMPLES.items():
            api = {node_id: {**node, "inputs": {key: value for key, value in node["inputs"].items()
                                                if key in declared(object_info, node["class_type"])}}
                   for node_id, node in api.items()}
            built = page.evaluate(BUILD_JS % dict(app=APP, api=json.dumps(api), name=json.dumps(name),
                                                  layout=json.dumps(LAYOUT), note_pos=json.dumps(NOTE_POS),
                                                  note_size=json.dumps(NOTE_SIZE), note=json.dumps(note)))
            if built["api"] != api:
                raise RuntimeError(f"{name}: the frontend's export differs from the graph it was given")
            built["ui"]["extra"] = {"ds": {"scale": 0.7, "offset": [120, 160]}}
            (OUT / f"{name}.json").write_text(json.dumps(built["ui"], indent=1) + "\n")
            (OUT / "api" / f"{name}.json").write_text(json.dumps(built["api"], indent=1) + "\n")
            page.evaluate(FIT_JS % dict(app=APP, side=side, left=left, top=top))
            page.wait_for("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))",
                          10, "a frame")
            shot = pathlib.Path(base) / "shot.png"
            page.screenshot(shot, clip={"x": left, "y": top, "width": side, "height": side})
            with Image.open(shot) as image:
                buffer = io.BytesIO()
                image.convert("RGB").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.LANCZOS).save(buffer, "JPEG", quality=88)
            (OUT / f"{name}.jpg").write_bytes(buffer.getvalue())
            print(f"wrote {name}.json, api/{name}.json, {name}.jpg")


if __name__ == "__main__":
    main()
