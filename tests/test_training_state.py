"""The resumable training state: no pickle, exact round trips, `resume_from` confined to the pack's own folder,
folders replaced only by the run that owns them, damaged states refused by name, finished states removed."""
from __future__ import annotations

import json
import logging
import math
import pathlib
import pickle

import pytest
import safetensors.torch
import torch

from harness import models, runtime, training_data

codec = runtime.pack("trainer.files.state_codec")
errors = runtime.pack("trainer.errors")
optim = runtime.pack("trainer.training.optim")
run_folders = runtime.pack("trainer.training.run_folders")
run_state = runtime.pack("trainer.training.run_state")
node_inputs = training_data.node_inputs


def stepped(optimizer_name: str, seed: int = 0):
    """A real optimizer, schedule and grad scaler after two steps on two small parameters."""
    generator = torch.Generator().manual_seed(seed)
    parameters = [torch.nn.Parameter(torch.randn(4, 3, generator=generator)), torch.nn.Parameter(torch.zeros(4))]
    optimizer = optim.build_optimizer(optimizer_name, [{"params": parameters, "lr": 1e-2}], torch.device("cpu"))
    scheduler = optim.build_scheduler("cosine", optimizer, warmup_steps=1, total_steps=10)
    scaler = torch.amp.GradScaler("cpu")
    for step in range(2):
        for parameter in parameters:
            parameter.grad = torch.randn(parameter.shape, generator=generator)
        optimizer.step()
        scheduler.step()
    return parameters, optimizer, scheduler, scaler


def through_files(value, tmp_path: pathlib.Path):
    """flatten -> a safetensors file and strict JSON -> unflatten, as a saved state travels."""
    tensors, skeleton = codec.flatten(value)
    safetensors.torch.save_file(tensors, str(tmp_path / "t.safetensors"))
    text = json.dumps(skeleton, allow_nan=False)  # strict JSON: nan and inf are encoded, not emitted as NaN
    return codec.unflatten(json.loads(text), safetensors.torch.load_file(str(tmp_path / "t.safetensors")))


def assert_same(expected, actual, where="state"):
    assert type(expected) is type(actual), f"{where}: {type(expected)} became {type(actual)}"
    if isinstance(expected, torch.Tensor):
        assert expected.dtype == actual.dtype and torch.equal(expected, actual), where
    elif isinstance(expected, dict):
        assert list(expected) == list(actual), where
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for index, (a, b) in enumerate(zip(expected, actual)):
            assert_same(a, b, f"{where}/{index}")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), where
    else:
        assert expected == actual, where


@pytest.mark.parametrize("optimizer_name", ["AdamW", "SGD", "Lion", "Prodigy", "Adafactor"])
def test_optimizer_scheduler_and_scaler_state_survive_the_files_and_training_continues_identically(optimizer_name, tmp_path):
    parameters, optimizer, scheduler, scaler = stepped(optimizer_name)
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
    restored = through_files(saved, tmp_path)
    assert_same(saved, restored)

    # A fresh optimizer loaded from the files takes the same next step as the original.
    copies = [torch.nn.Parameter(parameter.detach().clone()) for parameter in parameters]
    fresh = optim.build_optimizer(optimizer_name, [{"params": copies, "lr": 1e-2}], torch.device("cpu"))
    fresh_scheduler = optim.build_scheduler("cosine", fresh, warmup_steps=1, total_steps=10)
    fresh.load_state_dict(restored["optimizer"])
    fresh_scheduler.load_state_dict(restored["scheduler"])
    for group in (parameters, copies):
        for parameter in group:
            parameter.grad = torch.full(parameter.shape, 0.5)
    optimizer.step(), fresh.step()
    scheduler.step(), fresh_scheduler.step()
    assert all(torch.equal(a, b) for a, b in zip(parameters, copies))
    assert scheduler.get_last_lr() == fresh_scheduler.get_last_lr()


def test_non_finite_floats_int_keys_tuples_and_shared_tensors_round_trip(tmp_path):
    shared = torch.arange(3.0)
    value = {"growth_rate": math.inf, "d": -math.inf, "odd": math.nan, 0: {"step": 3, "pair": (0.9, 0.999)},
             "flags": [True, None, "text"], "a": shared, "b": shared}
    restored = through_files(value, tmp_path)
    assert_same(value, restored)
    assert restored["a"] is restored["b"]


@pytest.mark.parametrize("value,where", [
    ({"state": {0: {"exotic": object()}}}, "state/state/0/exotic"),
    ({"dtype": torch.float16}, "state/dtype"),
    ({"state": [1, 2, {3.5j}]}, "state/state/2"),
])
def test_anything_else_is_refused_naming_where_it_sits(value, where):
    with pytest.raises(errors.TrainingStateError, match=where):
        codec.flatten(value)


@pytest.mark.parametrize("skeleton", [{"pickle": "x"}, {"tensor": "missing"}, {"dict": [[1]]}, {"list": 3},
                                      {"float": "1e999"}, [1, 2], {"dict": [[{"list": []}, 1]]}])
def test_a_skeleton_flatten_cannot_have_written_is_refused(skeleton):
    with pytest.raises(errors.TrainingStateError):
        codec.unflatten(skeleton, {})


# ---------------------------------------------------------------------- resume_from names a run


@pytest.fixture
def state_root(comfy_dirs):
    root = run_folders.state_root(comfy_dirs["output"])
    (root / "20250131-120000-seed42").mkdir(parents=True)
    return root


def test_resume_from_accepts_the_name_the_printed_path_and_the_older_relative_form(state_root, comfy_dirs):
    run = state_root / "20250131-120000-seed42"
    for text in ("20250131-120000-seed42", str(run), f"  \"{run}\" ", "loralab/training_state/20250131-120000-seed42"):
        assert run_folders.resolve_resume_from(text, comfy_dirs["output"]) == run


def test_resume_from_refuses_anything_outside_the_state_folder(state_root, comfy_dirs, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state_root / "link_out").symlink_to(elsewhere, target_is_directory=True)
    (comfy_dirs["input"] / "state").mkdir()
    for text in ("../../../input/state", str(comfy_dirs["input"] / "state"), str(elsewhere), "link_out",
                 "20250131-120000-seed42/../../../../input/state", str(comfy_dirs["output"]), "/",
                 "20250131-120000-seed42/snapshot-000001", "x" * 5000):
        with pytest.raises(errors.SettingsError, match="resume_from"):
            run_folders.resolve_resume_from(text, comfy_dirs["output"])


# ---------------------------------------------------------------------- ownership, recovery, damage


def a_state(run_id: str = "run-a") -> object:
    return run_state.RunState(run_id, {"rank": 4}, "sd15", "abc", run_state.RunPosition(2, 0, 5),
                              {"layer.lora_A": torch.ones(2, 3)}, {"state": {}, "param_groups": []},
                              {"last_epoch": 5}, None, [[1, 0.5]], [[1, 1e-4]])


def tree(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_saves_switch_snapshots_and_the_state_reads_back(tmp_path):
    folder = tmp_path / "run"
    state = a_state()
    run_state.save_run_state(folder, state)
    state.position = run_state.RunPosition(3, 0, 9)
    run_state.save_run_state(folder, state)
    assert sorted(path.name for path in folder.iterdir()) == ["run.json", "snapshot-000002"]
    loaded = run_state.load_run_state(folder)
    assert loaded.run_id == "run-a" and loaded.position == run_state.RunPosition(3, 0, 9)
    assert torch.equal(loaded.adapters["layer.lora_A"], torch.ones(2, 3))


def test_a_folder_of_another_run_or_of_the_user_is_never_replaced(tmp_path):
    theirs = tmp_path / "theirs"
    run_state.save_run_state(theirs, a_state("run-b"))
    users = tmp_path / "users"
    users.mkdir()
    (users / "workflow.json").write_text("{}")
    before = tree(tmp_path)
    for folder in (theirs, users):
        with pytest.raises(errors.TrainingStateError, match="left it untouched"):
            run_state.save_run_state(folder, a_state("run-a"))
    assert tree(tmp_path) == before


def test_removing_a_finished_run_deletes_only_its_own_files(tmp_path, caplog):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    run_state.save_run_state(mine, a_state("run-a"))
    run_state.save_run_state(theirs, a_state("run-b"))
    (mine / "snapshot-000001" / "notes.txt").write_text("the user's")
    with caplog.at_level(logging.WARNING):
        assert not run_folders.remove_run(mine, "run-a")
        assert not run_folders.remove_run(theirs, "run-a")
    assert tree(mine) == {"snapshot-000001/notes.txt": b"the user's"}
    assert "did not write" in caplog.text and "another run" in caplog.text
    assert run_folders.remove_run(theirs, "run-b") and not theirs.exists()


def test_what_a_killed_save_left_is_removed_on_the_next_load_with_a_message(tmp_path, caplog):
    folder = tmp_path / "run"
    run_state.save_run_state(folder, a_state())
    leftover = folder / "snapshot-000002"
    leftover.mkdir()
    (leftover / ".optimizer.safetensors.0a1b2c3d.partial").write_bytes(b"half")
    (leftover / "adapters.safetensors").write_bytes(b"whole but unused")
    (folder / ".run.json.deadbeef.partial").write_bytes(b"{")
    with caplog.at_level(logging.WARNING):
        run_state.load_run_state(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["run.json", "snapshot-000001"]
    assert "interrupted save" in caplog.text


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("damaged", ["state.json", "adapters.safetensors", "epochs.safetensors", "optimizer.safetensors"])
def test_a_damaged_or_crafted_file_is_refused_naming_resume_from_and_the_file(tmp_path, damaged):
    folder = tmp_path / "run"
    run_state.save_run_state(folder, a_state())
    marker = tmp_path / "code-ran"
    (folder / "snapshot-000001" / damaged).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(errors.SettingsError, match=rf"resume_from: .*{damaged}"):
        run_state.load_run_state(folder)
    assert not marker.exists()


@pytest.mark.parametrize("record", [
    {"format": "loralab-training-state", "version": 99, "run_id": "x", "snapshot": "snapshot-000001"},
    {"format": "loralab-training-state", "version": 2, "run_id": "x", "snapshot": "../../../input"},
    {"format": "something else"},
])
def test_an_unknown_layout_or_a_snapshot_name_with_a_path_is_refused(tmp_path, record):
    folder = tmp_path / "run"
    run_state.save_run_state(folder, a_state())
    (folder / "run.json").write_text(json.dumps(record))
    with pytest.raises(errors.SettingsError, match=r"resume_from: .*run\.json"):
        run_state.load_run_state(folder)


def test_a_state_of_the_older_pickle_format_is_refused_without_unpickling(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "state.json").write_text("{}")
    (folder / "optimizer.pt").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(errors.SettingsError, match="pickle"):
        run_state.load_run_state(folder)
    assert not marker.exists()


def test_no_module_of_the_pack_unpickles(tmp_path):
    """Every torch.load in the pack asks for weights only; nothing calls pickle.load."""
    sources = [path for folder in ("trainer", "nodes", "loralab_cli") for path in (runtime.REPO_ROOT / folder).rglob("*.py")]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "pickle.load" not in text and "weights_only=False" not in text, path
        for line in (line for line in text.splitlines() if "torch.load(" in line):
            assert "weights_only=True" in line, f"{path}: {line.strip()}"


# ---------------------------------------------------------------------- retention


@pytest.fixture
def sd15():
    return models.FAMILIES["sd15"]()


def test_a_finished_run_removes_its_state_unless_asked_to_keep_it(sd15, tmp_path, comfy_dirs):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    root = run_folders.state_root(comfy_dirs["output"])
    lora = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=1))[2]
    assert lora.state_dir is None and not any(root.iterdir())
    kept = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=1, keep_training_state=True))[2]
    assert [path for path in root.iterdir()] == [pathlib.Path(kept.state_dir)]
    assert run_state.load_run_state(pathlib.Path(kept.state_dir)).position.epoch == 2



def test_a_state_with_wrong_shapes_or_a_missing_file_is_refused_naming_the_file(sd15, tmp_path, comfy_dirs):
    import shutil

    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    kept = pathlib.Path(runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=1,
                                                                           keep_training_state=True))[2].state_dir)
    snapshot = json.loads((kept / "run.json").read_text())["snapshot"]
    cases = {"reshaped": "adapters.safetensors", "missing": "epochs.safetensors", "optimizer": "optimizer.safetensors"}
    for case, file_name in cases.items():
        copy = kept.with_name(case)
        shutil.copytree(kept, copy)
        target = copy / snapshot / file_name
        if case == "missing":
            target.unlink()
        else:
            tensors = safetensors.torch.load_file(str(target))
            safetensors.torch.save_file({key: torch.zeros(value.numel() + 1) if value.dim() else value
                                         for key, value in tensors.items()}, str(target))
        with pytest.raises(errors.SettingsError, match=rf"resume_from: .*{file_name}"):
            runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=2, resume_from=case))


def test_a_resume_at_another_global_batch_says_what_batch_size_continues_it(tmp_path, comfy_dirs):
    """The state counts global batches (batch_size x processes): a resume that would train another global batch
    names both and how to match them (a state from 2 processes at batch 1 resumes on 1 process at batch 2)."""
    sd15 = models.FAMILIES["sd15"]()
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    first = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(sd15, dataset, epochs=1, batch_size=1,
                                                                             keep_training_state=True))[2]
    with pytest.raises(errors.SettingsError, match=r"global batches of 1 samples \(batch_size x processes\); this one "
                                                   r"would train 2 \(2 x 1\): choose batch_size"):
        runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(sd15, dataset, epochs=2, batch_size=2,
                                                                         resume_from=first.state_dir))
