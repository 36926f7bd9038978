"""What a remote client can do to a ComfyUI server with LoRA Lab, using only HTTP: upload files anywhere in the
input and output folders (`POST /upload/image`), read them back (`/view`), and queue any workflow (`POST /prompt`).

It must not run code (a pickle in a crafted training state), replace or delete folders the pack did not create
(`resume_from` aimed at the input folder, at `user/`, at a copied state), read or list files outside the dataset
roots, or get past a nan. Every attack here goes through the real server; the assertions look at the disk and at
everything the server sent back.
"""
from __future__ import annotations

import hashlib
import json
import io
import os
import pathlib

import pytest
import requests
import safetensors.torch
import torch

from harness import runtime
from harness.datasets import make_sample_dataset
from harness.server import ComfyServer

pytestmark = pytest.mark.server

SECRET_CAPTION = "the secret caption of the private folder"
TRAIN = dict(network="LoRA", rank=4, epochs=1, batch_size=4, resolution=0, unet_lr=4e-3, text_encoder_lr=0.0,
             mixed_precision="fp32", gradient_checkpointing=False, save_every_n_epochs=1, resume_from="")


class Payload:
    """Unpickling this creates the marker file: the proof that a state made the server run code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("security") / "server"
    base.mkdir()
    private = base.parent / "private"  # outside every root, next to the server's folders
    make_sample_dataset(private, count=2, name="secret_name_subject")
    (private / "2_secret_name_subject" / "shape_00.txt").write_text(SECRET_CAPTION)
    (private / "2_secret_name_subject" / "passwords.md").write_text("hunter2")
    declared = base.parent / "declared"  # a dataset root declared in extra_model_paths.yaml
    make_sample_dataset(declared / "set", count=2)
    (declared / "set" / "notes.md").write_text("not an image")
    config = base.parent / "extra_model_paths.yaml"
    config.write_text(f"datasets:\n  loralab_datasets: {declared}\n", encoding="utf-8")
    saved = os.environ.get("LORALAB_DATASET_ROOTS")
    os.environ["LORALAB_DATASET_ROOTS"] = ""  # this server reads datasets from its input folder and `declared` only
    try:
        comfy = ComfyServer(base, extra_args=("--extra-model-paths-config", str(config))).__enter__()
    finally:
        os.environ["LORALAB_DATASET_ROOTS"] = saved or ""
    try:
        (base / "input" / "link_out").symlink_to(private, target_is_directory=True)  # a user's own link
        for path in sorted(make_sample_dataset(base.parent / "upload", count=4, size=32, name="zqx").rglob("*.*")):
            upload(comfy, path.name, path.read_bytes(), "input", f"zqx/{path.parent.name}")
        yield comfy
    finally:
        comfy.__exit__(None, None, None)


def upload(server: ComfyServer, name: str, data: bytes, folder_type: str, subfolder: str) -> None:
    response = requests.post(f"{server.url}/upload/image", files={"image": (name, data)},
                             data={"type": folder_type, "subfolder": subfolder, "overwrite": "true"}, timeout=30)
    response.raise_for_status()


def train_prompt(**overrides) -> dict:
    required = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"].INPUT_TYPES()["required"]
    inputs = {name: spec[1]["default"] for name, spec in required.items() if len(spec) > 1 and "default" in spec[1]}
    inputs.update(TRAIN, model=["1", 0], clip=["1", 1], vae=["1", 2], dataset=["2", 0])
    inputs.update(overrides)
    return {"1": {"class_type": "LoraLabLoadDemoModel", "inputs": {}},
            "2": {"class_type": "LoraLabLoadDataset", "inputs": {"path": "zqx", "repeats": 1, "caption_extension": ".txt",
                                                                 "class_tokens": ""}},
            "3": {"class_type": "LoraLabTrainLoRA", "inputs": inputs}}


def everything_sent(run) -> str:
    return json.dumps(run.history) + json.dumps(run.messages)


def error_of(run) -> str:
    errors = run.events("execution_error")
    assert errors, f"expected an error, got {run.status}"
    return errors[-1]["exception_message"]


def files_under(base: pathlib.Path) -> dict[str, str]:
    """Every file of the server's folders with a digest of its contents (the log excepted)."""
    return {str(path.relative_to(base)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(base.rglob("*")) if path.is_file() and path.name != "server.log"
            and "custom_nodes" not in path.parts}


def test_a_crafted_state_runs_no_code_wherever_it_is_uploaded_and_however_it_is_named(server):
    base = server.base_dir
    marker = base / "CODE_RAN"
    stream = io.BytesIO()
    torch.save(Payload(marker), stream)  # torch's own pickle container: what torch.load(weights_only=False) runs
    payload = stream.getvalue()
    # The layout LoRA Lab used to read with torch.load(weights_only=False): everything valid but the pickle.
    old_meta = {"settings": {}, "family": "toy_world", "dataset_fingerprint": "", "position": {}, "loss_history": [],
                "learning_rate_history": [], "validation_history": [], "epochs": {}, "started_at": 0}
    old_layout = {"state.json": json.dumps(old_meta).encode(), "optimizer.pt": payload,
                  "adapters.safetensors": safetensors.torch.save({}), "epochs.safetensors": safetensors.torch.save({})}
    new_layout = {"run.json": payload, **{f"snapshot-000001/{name}": payload for name in
                                          ("state.json", "adapters.safetensors", "epochs.safetensors", "optimizer.safetensors")}}
    for folder_type, prefix in (("output", "loralab/training_state/"), ("input", "")):
        for name, layout in (("evil_old", old_layout), ("evil_new", new_layout)):
            for file_name, data in layout.items():
                subfolder = "/".join([prefix + name, *file_name.split("/")[:-1]])
                upload(server, file_name.split("/")[-1], data, folder_type, subfolder)
    state_root = base / "output" / "loralab" / "training_state"
    names = ["evil_old", "evil_new", "loralab/training_state/evil_new", str(state_root / "evil_new"),
             "../../../input/evil_old", "../../../input/evil_new", str(base / "input" / "evil_old"),
             str(base / "input" / "evil_new"), "evil_new/../../../../input/evil_old"]
    for resume_from in names:
        run = server.run(train_prompt(resume_from=resume_from), timeout=300)
        assert not marker.exists(), f"resume_from {resume_from!r} ran the pickle"
        assert error_of(run).startswith("resume_from"), (resume_from, error_of(run))


def test_resume_from_aimed_at_folders_the_pack_does_not_own_changes_nothing(server):
    base = server.base_dir
    upload(server, "photo.png", b"the user's upload", "input", "")
    requests.post(f"{server.url}/userdata/workflows%2Fmy_workflow.json", data=b'{"nodes": []}',
                  timeout=30).raise_for_status()
    finished = server.run(train_prompt(keep_training_state=True), timeout=600)
    assert finished.status == "success", error_of(finished)
    (start,) = [event for event in finished.events("loralab.train") if event["kind"] == "start"]
    run = pathlib.Path(start["state_dir"])
    assert (run / "run.json").is_file(), "keep_training_state keeps the finished run's state"
    for path in sorted(run.rglob("*")):  # a client can copy a real state: /view reads it, /upload writes it
        if path.is_file():
            relative = path.relative_to(run)
            data = server.view(path.name, str(path.parent.relative_to(base / "output")), "output")
            upload(server, path.name, data, "input", "/".join(["copied_state", *relative.parts[:-1]]))
    before = files_under(base)
    for resume_from in ("../../../input", str(base / "input"), "../../../user/default", str(base / "user" / "default"),
                        str(base / "user"), "../../../input/copied_state", str(base / "input" / "copied_state"),
                        str(base / "output"), "../..", "."):
        run_result = server.run(train_prompt(resume_from=resume_from, epochs=2), timeout=300)
        assert error_of(run_result).startswith("resume_from"), (resume_from, error_of(run_result))
    assert files_under(base) == before


@pytest.mark.parametrize("path", ["ABSOLUTE", "../../private", "link_out", "zqx/../../../private"])
def test_load_dataset_refuses_paths_out_of_the_roots_and_sends_nothing_of_them(server, path):
    private = server.base_dir.parent / "private"
    prompt = {"2": {"class_type": "LoraLabLoadDataset",
                    "inputs": {"path": str(private) if path == "ABSOLUTE" else path, "repeats": 1,
                               "caption_extension": ".txt", "class_tokens": ""}},
              "3": {"class_type": "LoraLabAutoCaption",
                    "inputs": {"dataset": ["2", 0], "captioner": "wd-vit-tagger-v3", "trigger_word": "", "mode": "overwrite",
                               "exclude_tags": "", "general_threshold": 0.35, "character_threshold": 0.85,
                               "replace_underscores": True, "max_tags": 40}}}
    before = files_under(private)
    run = server.run(prompt, timeout=300)
    assert "outside the folders datasets may be read from" in error_of(run)
    sent = everything_sent(run)
    for secret in ("secret_name", "shape_00", SECRET_CAPTION, "passwords", "hunter2"):
        assert secret not in sent, secret
    assert files_under(private) == before


@pytest.mark.parametrize("name", ["unet_lr", "min_snr_gamma", "noise_offset", "alpha",
                                  "sigmoid_scale", "discrete_flow_shift", "guidance_scale"])
def test_nan_sent_as_json_passes_comfyuis_checks_and_is_refused_by_name(server, name):
    # inf is stopped by ComfyUI's max already; nan compares false with everything, so only the node can catch it.
    run = server.run(train_prompt(**{name: float("nan")}), timeout=300)
    assert error_of(run).startswith(f"{name} is nan; it must be a finite number")


def test_a_root_declared_in_extra_model_paths_is_read_and_comfyui_lists_only_its_images_and_captions(server):
    declared = server.base_dir.parent / "declared"
    prompt = {"2": {"class_type": "LoraLabLoadDataset",
                    "inputs": {"path": str(declared / "set"), "repeats": 1, "caption_extension": ".txt", "class_tokens": ""}}}
    run = server.run(prompt, timeout=300)
    assert run.status == "success", error_of(run)
    assert run.outputs("2")["text"][0].startswith("Dataset: declared/set (kohya layout)")
    listed = server.get_json("/models/loralab_datasets")
    assert listed and all(name.endswith((".png", ".txt")) for name in listed), listed
