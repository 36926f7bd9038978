"""The README documents every node and every input a workflow can set."""
from __future__ import annotations

import re

from harness import runtime

README = (runtime.REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_node_and_input_is_documented():
    nodes = runtime.boot()
    for node_id, node_class in nodes.NODE_CLASS_MAPPINGS.items():
        if not node_id.startswith("LoraLab") or getattr(node_class, "__module__", "").find(str(runtime.REPO_ROOT).replace(".", "_x_")) != 0:
            continue
        match = re.search(rf"^### .*\(`{node_id}`\)\n(.*?)(?=^### |^## )", README, re.S | re.M)
        assert match, f"README has no section for {node_id}"
        section = match.group(1)
        declared = node_class.INPUT_TYPES()
        for group in ("required", "optional"):
            for name in declared.get(group, {}):
                assert f"`{name}`" in section, f"README section of {node_id} does not mention input `{name}`"


def test_readme_names_the_two_commands_ci_and_users_run():
    assert "bash scripts/demo.sh" in README and "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (runtime.REPO_ROOT / ".ci" / "run").read_text()
