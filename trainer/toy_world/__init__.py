"""LoRA Lab's built-in "toy world": a tiny pretrained text-to-image model of coloured shapes, its scenes and a new concept."""
