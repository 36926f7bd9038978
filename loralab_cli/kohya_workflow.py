"""`--kohya-config`: a kohya config's settings written into a workflow's Train LoRA, Load Dataset and Save LoRA nodes.

The same key table as the headless command (kohya_config.KOHYA_KEYS), so a config moves into a ComfyUI graph with
the values it trains with there. What a workflow decides itself (its model loader, the server's loras folder) is
left to the workflow and named in a note.
"""
from __future__ import annotations

import copy

from .kohya_keys import COMMAND, NODE_TYPES, KohyaRun
from .workflow import CliError, Workflow, describe_node, is_link

WORKFLOW_DECIDES = {
    "checkpoint": "the workflow loads its own model (pretrained_model_name_or_path is not applied)",
    "output_dir": "the server writes LoRAs into its loras folder (output_dir is not applied)",
}


def apply_kohya_run(workflow: Workflow, run: KohyaRun) -> tuple[Workflow, list[str]]:
    """A copy of `workflow` with the run's inputs set on every node of each type, and the notes to show."""
    per_subset = [name for (node, name) in run.inputs if node == COMMAND and name.startswith("flip_")]
    if per_subset:
        raise CliError(f"{run.name}: flip_aug differs between the dataset config's subsets; Load Dataset has no input "
                       "for that, so only `python -m loralab_cli train` can train it. Give every subset the same "
                       "flip_aug to use the config in a workflow.")
    result = copy.deepcopy(workflow)
    notes = list(run.notes)
    for node, class_type in NODE_TYPES.items():
        node_ids = [node_id for node_id, entry in result.items() if entry["class_type"] == class_type]
        inputs = run.node_inputs(node)
        if not node_ids:
            if node != "Save LoRA":
                raise CliError(f"--kohya-config: the workflow has no {node} ({class_type}) node to set.")
            notes.append(f"the workflow has no {node} node: {', '.join(inputs)} not applied")
            continue
        for node_id in node_ids:
            for name, value in inputs.items():
                current = result[node_id]["inputs"].get(name)
                if is_link(current):
                    notes.append(f"{describe_node(result, node_id)}: {name} is connected to another node; the "
                                 f"config's {value!r} is not applied")
                    continue
                result[node_id]["inputs"][name] = value
    notes += [WORKFLOW_DECIDES[name] for (node, name) in run.inputs if node == COMMAND and name in WORKFLOW_DECIDES]
    return result, notes
