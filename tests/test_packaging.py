"""Packaging rules ComfyUI-Manager and the registry depend on."""
from __future__ import annotations

import tomllib

from harness.runtime import REPO_ROOT

NEVER_PIN = {"torch", "torchvision", "torchaudio", "transformers", "safetensors", "kornia", "torchsde"}


def _name(requirement: str) -> str:
    for separator in "<>=!~[; ":
        requirement = requirement.split(separator)[0]
    return requirement.strip().lower()


def test_requirements_match_pyproject_and_never_pin_comfy_owned_packages():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = [line.strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if line.strip()]
    assert sorted(lines) == sorted(project["dependencies"])
    for requirement in lines:
        assert not requirement.startswith("-"), "ComfyUI-Manager installs requirements line by line: no options"
        if _name(requirement) in NEVER_PIN:
            assert _name(requirement) == requirement.lower(), f"{requirement} must not be pinned"


def test_web_directory_is_declared_once():
    comfy = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["comfy"]
    assert "web" not in comfy, "declaring web in [tool.comfy] as well as WEB_DIRECTORY loads every file twice"
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"]
