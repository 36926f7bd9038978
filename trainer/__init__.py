"""The torch core of LoRA Lab: knows ComfyUI's model objects, nothing of nodes."""
