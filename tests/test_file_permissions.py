"""Files LoRA Lab writes get the permissions ComfyUI's own SaveImage gives its files (the user's umask), not the
owner-only mode of temporary files: a LoRA, grid or caption must be readable by whatever reads ComfyUI's folders
(another account, a web server, a container's host)."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from harness import runtime
from test_lora_files import small_lora


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_lora_file_output_png_and_caption_get_comfyuis_permissions(comfy_dirs, umask_022, tmp_path):
    image = torch.rand(1, 16, 16, 3)
    stock = runtime.run_node("SaveImage", images=image, filename_prefix="stock").ui["images"][0]
    expected = mode(comfy_dirs["output"] / stock["subfolder"] / stock["filename"])
    assert expected == 0o644

    saved = runtime.run_node("LoraLabSaveLoRA", lora=small_lora(), filename_prefix="perm/dog", epochs="final",
                             dtype="fp16", overwrite=False).ui["loras"][0]
    image_files = runtime.pack("trainer.files.image_files")
    entry = image_files.save_output_png(image_files.to_pil(image[0]), "perm/grid", None)
    caption = tmp_path / "image.txt"
    runtime.pack("trainer.captioning.writing").write_text_atomically(caption, "a caption\n")
    written = [comfy_dirs["loras"] / "perm" / saved["filename"], image_files.output_path(entry), caption]
    assert {str(path): mode(path) for path in written} == {str(path): expected for path in written}
