"""ComfyUI V1 node classes: thin adapters that turn widget values into trainer/ calls."""
from .auto_caption import AutoCaption
from .load_dataset import LoadDataset
from .load_demo_model import EmptyLatent, LoadDemoModel
from .load_lora import LoadLoRA
from .save_lora import SaveLoRA
from .strength_sweep import StrengthSweep
from .train_lora import TrainLoRA

_NODES = {
    "LoraLabLoadDataset": (LoadDataset, "Load Dataset (LoRA Lab)"),
    "LoraLabAutoCaption": (AutoCaption, "Auto Caption (LoRA Lab)"),
    "LoraLabTrainLoRA": (TrainLoRA, "Train LoRA (LoRA Lab)"),
    "LoraLabSaveLoRA": (SaveLoRA, "Save LoRA (LoRA Lab)"),
    "LoraLabLoadLoRA": (LoadLoRA, "Load LoRA (LoRA Lab)"),
    "LoraLabStrengthSweep": (StrengthSweep, "Strength Sweep (LoRA Lab)"),
    "LoraLabLoadDemoModel": (LoadDemoModel, "Load Demo Model (LoRA Lab)"),
    "LoraLabEmptyLatent": (EmptyLatent, "Empty Latent (LoRA Lab)"),
}

NODE_CLASS_MAPPINGS = {node_id: node_class for node_id, (node_class, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: display for node_id, (_, display) in _NODES.items()}
