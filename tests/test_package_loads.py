"""ComfyUI loads the pack: in-process through its own loader, and in a real server process."""
from __future__ import annotations

import pytest

from harness import runtime
from harness.server import ComfyServer


def test_in_process_loader_registers_every_node_with_category_and_display_name():
    nodes = runtime.boot()
    for node_id in runtime.NODE_IDS:
        node_class = nodes.NODE_CLASS_MAPPINGS[node_id]
        assert node_class.CATEGORY == "LoRA Lab"
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id].endswith("(LoRA Lab)")
        assert isinstance(node_class.INPUT_TYPES()["required"], dict), node_id  # a loader may need no inputs
    assert nodes.EXTENSION_WEB_DIRS, "WEB_DIRECTORY was not registered"


@pytest.mark.server
def test_real_server_lists_all_nodes_and_runs_a_queued_workflow(tmp_path):
    with ComfyServer(tmp_path / "server") as server:
        info = server.get_json("/object_info")
        for node_id in runtime.NODE_IDS:
            assert node_id in info, f"{node_id} missing from /object_info"
        assert info["LoraLabTrainLoRA"]["input"]["required"]["dataset"][0] == "LORALAB_DATASET"
        # A core-only workflow proves the /prompt -> websocket -> /history round trip the other tests rely on.
        prompt = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF0000}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "roundtrip"}},
        }
        run = server.run(prompt, timeout=120)
        assert run.status == "success", run.history
        image = run.outputs("2")["images"][0]
        assert server.view(image["filename"], image["subfolder"]).startswith(b"\x89PNG")
