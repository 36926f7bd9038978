"""Files LoRA Lab reads and writes: LoRA safetensors and their metadata, imports, atomic writes, PNGs."""
