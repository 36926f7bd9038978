"""Train LoRA in this process, killed with SIGKILL at one step of its second training-state save (end of epoch 2).

    python killed_training.py OUTPUT_FOLDER DATASET_FOLDER STEP SETTINGS_JSON

STEP: `writing` (the new snapshot is half written), `before_switch` (it is complete, run.json still names the
old one), `after_switch` (run.json names the new one, the old one is still there), `removing_old` (the old
one is half deleted). A Python audit hook watches the real file operations and kills the process at the
chosen one: nothing in the code under test is changed, and a killed process runs no clean-up.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from harness import models, runtime, training_data  # noqa: E402

SECOND_SNAPSHOT, FIRST_SNAPSHOT = "snapshot-000002", "snapshot-000001"


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def watcher(step: str):
    """An audit hook that kills this process at `step` of the save that writes SECOND_SNAPSHOT."""
    seen = {"run_json_renames": 0, "removed_old": 0, "switched": False}

    def hook(event: str, args: tuple) -> None:
        if event == "os.kill":  # the kill itself is audited too
            return
        if seen["switched"]:
            kill()  # the first file operation after run.json was replaced
        if event == "open" and step == "writing":
            path = os.fspath(args[0]) if isinstance(args[0], (str, os.PathLike)) else ""
            if f"{os.sep}{SECOND_SNAPSHOT}{os.sep}.state.json." in path:
                kill()
        elif event == "os.rename" and os.path.basename(os.fspath(args[1])) == "run.json":
            seen["run_json_renames"] += 1  # 1: created (no snapshot), 2: first snapshot, 3: second snapshot
            if seen["run_json_renames"] == 3:
                if step == "before_switch":
                    kill()
                seen["switched"] = step == "after_switch"
        elif (event == "os.remove" and step == "removing_old" and seen["run_json_renames"] >= 3
              and f"{os.sep}{FIRST_SNAPSHOT}{os.sep}" in os.fspath(args[0])):
            seen["removed_old"] += 1
            if seen["removed_old"] == 2:  # one file of the old snapshot is gone already
                kill()

    return hook


def main() -> None:
    output, dataset_folder, step, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    runtime.boot()
    import folder_paths

    folder_paths.set_output_directory(output)
    loader = runtime.pack("trainer.data.loading")
    dataset = loader.load_dataset(pathlib.Path(dataset_folder), repeats=1, base_resolution=64).dataset
    bundle = models.FAMILIES["sd15"]()
    sys.addaudithook(watcher(step))
    runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(bundle, dataset, **settings))
    sys.exit("the training finished: the kill never happened")


if __name__ == "__main__":
    main()
