"""Pictures of a trained LoRA: the strength sweep, its grid, epoch samples and the loss chart."""
