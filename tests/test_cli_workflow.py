"""The command line's workflow handling without a server: --set parsing, UI-format refusal, one run per dataset."""
from __future__ import annotations

import json

import pytest
from harness.runtime import REPO_ROOT

from loralab_cli.workflow import CliError, Override, apply_overrides, check_choices, load_workflow, runs_for_datasets

EXAMPLES = REPO_ROOT / "example_workflows"


def test_set_splits_at_the_last_dot_so_titles_may_contain_dots():
    assert Override.parse("SD v1.5 loader.ckpt_name=a.safetensors") == Override("SD v1.5 loader", "ckpt_name", "a.safetensors")
    assert Override.parse("4.epochs=8") == Override("4", "epochs", "8")
    assert Override.parse("Strength Sweep.strengths=0, 0.5=1") == Override("Strength Sweep", "strengths", "0, 0.5=1")


@pytest.mark.parametrize("text", ["epochs=8", "4.epochs", ".epochs=1", "4.=1"])
def test_set_without_node_input_and_value_is_refused_with_an_example(text):
    with pytest.raises(CliError, match="expected NODE.INPUT=VALUE"):
        Override.parse(text)


def test_ui_format_is_refused_with_the_way_to_the_api_format():
    with pytest.raises(CliError) as refused:
        load_workflow(EXAMPLES / "loralab_sd15_pipeline.json")
    message = str(refused.value)
    assert "Export (API)" in message and str(EXAMPLES / "api" / "loralab_sd15_pipeline.json") in message


def test_a_saved_prompt_body_is_accepted(tmp_path):
    api = json.loads((EXAMPLES / "api" / "loralab_sd15_pipeline.json").read_text())
    saved = tmp_path / "body.json"
    saved.write_text(json.dumps({"prompt": api, "client_id": "x"}))
    assert load_workflow(saved) == api


def test_each_dataset_gets_its_own_run_and_file_names(tmp_path):
    workflow = load_workflow(EXAMPLES / "api" / "loralab_sd15_pipeline.json")
    local = tmp_path / "10_cat photos"
    local.mkdir()
    runs = runs_for_datasets(workflow, [str(local), "on-server/dog", "elsewhere/dog"], None)
    assert [run.name for run in runs] == ["10_cat_photos", "dog", "dog_2"]
    assert runs[0].workflow["2"]["inputs"]["path"] == str(local.resolve())
    assert runs[1].workflow["2"]["inputs"]["path"] == "on-server/dog"  # not here: the server resolves it
    assert runs[2].workflow["5"]["inputs"]["filename_prefix"] == "loralab/ohwx_dog_2"
    assert runs[2].workflow["6"]["inputs"]["filename_prefix"] == "loralab/ohwx_sweep_dog_2"  # Strength Sweep's grid
    assert workflow["5"]["inputs"]["filename_prefix"] == "loralab/ohwx"  # the loaded workflow is left alone


def test_a_title_shared_by_two_nodes_asks_for_the_id():
    workflow = {"1": {"class_type": "A", "inputs": {"x": 1}, "_meta": {"title": "Same"}},
                "2": {"class_type": "A", "inputs": {"x": 1}, "_meta": {"title": "Same"}}}
    infos = {"A": {"input": {"required": {"x": ["INT", {}]}}}}
    with pytest.raises(CliError, match="several nodes.*use the node id"):
        apply_overrides(workflow, [Override("Same", "x", "2")], infos)
    assert apply_overrides(workflow, [Override("2", "x", "2")], infos)["2"]["inputs"]["x"] == 2


def test_a_choice_the_server_lacks_names_the_node_by_id_when_its_title_is_shared():
    workflow = {"1": {"class_type": "K", "inputs": {"sampler_name": "euler_x", "steps": 4}, "_meta": {"title": "Same"}},
                "2": {"class_type": "K", "inputs": {"sampler_name": "euler", "steps": 4}, "_meta": {"title": "Same"}}}
    infos = {"K": {"input": {"required": {"sampler_name": ["COMBO", {"options": ["euler", "dpmpp_2m"]}],
                                          "steps": ["INT", {}]}}}}
    with pytest.raises(CliError) as refused:
        check_choices(workflow, infos, "http://gpu-box:8188")
    assert str(refused.value) == ("node 1 (Same): sampler_name 'euler_x' is not one of the server's choices: euler, "
                                  'dpmpp_2m. Choose one with --set "1.sampler_name=euler".')
