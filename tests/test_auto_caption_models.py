"""Captioner weights: found in any captioners folder, downloaded through HF_ENDPOINT into a temporary
folder and renamed when complete, and explained file by file when they cannot be had."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import pathlib
import re
import socket
import threading

import pytest
from PIL import Image

from harness import runtime
from harness.datasets import make_tiny_blip, make_tiny_wd14_tagger

errors = runtime.pack("trainer.errors")
loader = runtime.pack("trainer.data.loading")
models = runtime.pack("trainer.captioning.models")

class FakeHub:
    """The Hugging Face hub routes a model download uses (model info, file tree, file resolve), for a
    repository whose commit id follows its content, as on the real hub."""

    def __init__(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repo_id = repo_id
        self.files = files
        self.commit = _oid(json.dumps(sorted((name, _oid(data)) for name, data in files.items())).encode())
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.answer(self, send_body=True)

            def do_HEAD(self):
                hub.answer(self, send_body=False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler, send_body: bool) -> None:
        path = handler.path.split("?")[0]
        self.requests.append(f"{handler.command} {path}")
        api = f"/api/models/{self.repo_id}"
        body, headers, status = b"{}", {"Content-Type": "application/json"}, 404
        if path in (api, f"{api}/revision/main"):
            body, status = json.dumps({"id": self.repo_id, "sha": self.commit,
                                       "siblings": [{"rfilename": name} for name in self.files]}).encode(), 200
        elif re.fullmatch(rf"{re.escape(api)}/tree/(main|{self.commit})", path):
            body, status = json.dumps([{"type": "file", "path": name, "size": len(data), "oid": _oid(data)}
                                       for name, data in self.files.items()]).encode(), 200
        elif path.startswith(f"/{self.repo_id}/resolve/") and path.rsplit("/", 1)[1] in self.files:
            body, status = self.files[path.rsplit("/", 1)[1]], 200
            headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": self.commit,
                       "ETag": f'"{_oid(body)}"'}
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if send_body:
            handler.wfile.write(body)

    def downloaded(self) -> set[str]:
        return {request.rsplit("/", 1)[1] for request in self.requests if request.startswith("GET /" + self.repo_id)}


def _oid(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def folder_files(folder: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


@pytest.fixture
def captioner_folders(tmp_path):
    """Two captioners folders, as models/captioners plus an extra_model_paths.yaml entry would give."""
    import folder_paths

    first, second = tmp_path / "models" / "captioners", tmp_path / "shared drive" / "captioners"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    saved = folder_paths.folder_names_and_paths.get("captioners")
    folder_paths.folder_names_and_paths["captioners"] = ([str(first), str(second)], set())
    yield first, second
    if saved is None:
        del folder_paths.folder_names_and_paths["captioners"]
    else:
        folder_paths.folder_names_and_paths["captioners"] = saved


@pytest.fixture
def red_dataset(tmp_path):
    folder = tmp_path / "data" / "2_ohwx"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (220, 30, 30)).save(folder / "red.png")
    return loader.load_dataset(folder.parent, repeats=1).dataset


def caption(dataset, captioner, mode="memory_only"):
    return runtime.run_node("LoraLabAutoCaption", dataset=dataset, captioner=captioner, trigger_word="", mode=mode,
                            exclude_tags="", general_threshold=0.35, character_threshold=0.85,
                            replace_underscores=True, max_tags=40)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_missing_wd14_tagger_downloads_through_hf_endpoint_and_runs(captioner_folders, red_dataset, tmp_path,
                                                                     monkeypatch):
    source = tmp_path / "hub files"
    make_tiny_wd14_tagger(source)
    files = folder_files(source) | {"README.md": b"# tagger", "sample.png": b"not wanted"}
    with FakeHub("SmilingWolf/wd-vit-tagger-v3", files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        dataset, _ = caption(red_dataset, "wd-vit-tagger-v3")
    target = captioner_folders[0] / "wd-vit-tagger-v3"
    assert (target / "model.onnx").read_bytes() == files["model.onnx"]
    assert (target / "selected_tags.csv").read_bytes() == files["selected_tags.csv"]
    assert hub.downloaded() == {"model.onnx", "selected_tags.csv"}
    assert not (captioner_folders[0] / ".wd-vit-tagger-v3.download").exists()
    assert dataset.images[0].caption.startswith("ohwx, hatsune miku, red theme")


def test_transformers_captioner_downloads_only_config_weights_and_tokenizer(captioner_folders, red_dataset,
                                                                            tmp_path, monkeypatch):
    source = tmp_path / "blip files"
    make_tiny_blip(source)
    files = folder_files(source) | {"pytorch_model.bin": b"duplicate weights", "tf_model.h5": b"tensorflow"}
    with FakeHub("Salesforce/blip-image-captioning-base", files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        dataset, _ = caption(red_dataset, "blip-image-captioning-base")
    assert hub.downloaded() == set(folder_files(source))
    assert dataset.images[0].caption.startswith("ohwx, ")


def test_without_network_the_error_says_which_files_go_where(captioner_folders, red_dataset, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(errors.CaptionerError) as raised:
        caption(red_dataset, "wd-vit-tagger-v3")
    message = str(raised.value)
    target = captioner_folders[0] / "wd-vit-tagger-v3"
    assert "SmilingWolf/wd-vit-tagger-v3" in message and "model.onnx, selected_tags.csv" in message
    assert f"{target}{'/'}" in message and "HF_ENDPOINT" in message
    assert not target.exists()


def test_an_incomplete_download_is_never_taken_for_a_model_and_resumes(captioner_folders, red_dataset, tmp_path,
                                                                       monkeypatch):
    source = tmp_path / "hub files"
    make_tiny_wd14_tagger(source)
    files = folder_files(source)
    target = captioner_folders[0] / "wd-vit-tagger-v3"
    with FakeHub("SmilingWolf/wd-vit-tagger-v3", {"model.onnx": files["model.onnx"]}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(errors.CaptionerError, match=r"lacks selected_tags\.csv"):
            caption(red_dataset, "wd-vit-tagger-v3")
    assert not target.exists()
    assert (captioner_folders[0] / ".wd-vit-tagger-v3.download" / "model.onnx").is_file()  # kept to resume
    with FakeHub("SmilingWolf/wd-vit-tagger-v3", files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        caption(red_dataset, "wd-vit-tagger-v3")
    assert hub.downloaded() == {"selected_tags.csv"}  # model.onnx was already there
    assert set(folder_files(target)) == {"model.onnx", "selected_tags.csv"}


def test_a_half_made_model_folder_is_reported_and_left_alone(captioner_folders, red_dataset, monkeypatch):
    target = captioner_folders[0] / "wd-vit-tagger-v3"
    target.mkdir()
    (target / "model.onnx").write_bytes(b"placed by hand")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.CaptionerError) as raised:
        caption(red_dataset, "wd-vit-tagger-v3")
    assert "lacks selected_tags.csv" in str(raised.value) and str(target) in str(raised.value)
    assert folder_files(target) == {"model.onnx": b"placed by hand"}


def test_models_in_an_extra_folder_are_found_and_custom_ones_offered(captioner_folders, red_dataset, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_tiny_wd14_tagger(captioner_folders[1] / "wd-vit-tagger-v3")
    make_tiny_wd14_tagger(captioner_folders[1] / "my own tagger")
    (captioner_folders[1] / "not a model").mkdir()
    node = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabAutoCaption"]
    offered = node.INPUT_TYPES()["required"]["captioner"][0]
    assert offered[:5] == list(models.KNOWN_CAPTIONERS) and offered[5:] == ["my own tagger"]
    for name in ("wd-vit-tagger-v3", "my own tagger"):
        dataset, _ = caption(red_dataset, name)
        assert "red theme" in dataset.images[0].caption
