"""Custom socket types and the category every LoRA Lab node shares."""

DATASET = "LORALAB_DATASET"
LORA = "LORALAB_LORA"
CATEGORY = "LoRA Lab"
