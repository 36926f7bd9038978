"""What LoRA Lab knows about ComfyUI's model families: detection, facts per family, layers to adapt."""
