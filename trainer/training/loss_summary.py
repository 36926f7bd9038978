"""A short, plain-language account of a finished run."""
from __future__ import annotations

from .trained_lora import TrainedLora


def loss_summary(lora: TrainedLora, warning: str = "") -> str:
    losses = [loss for _, loss in lora.loss_history]
    lines = []
    if warning:
        lines.append(f"WARNING: {warning}")
    if losses:
        window = max(1, len(losses) // 10)
        start, end = sum(losses[:window]) / window, sum(losses[-window:]) / window
        lines.append(f"{lora.network} rank {lora.rank} on {lora.family}: {len(losses)} steps, "
                     f"loss {start:.4f} -> {end:.4f} (mean of first/last {window} steps)")
    for epoch, value in lora.validation_history:
        lines.append(f"epoch {epoch}: validation loss {value:.4f}")
    lines.append(f"kept epochs: {', '.join(str(e) for e in sorted(lora.epochs))}")
    lines.append(f"recommended epoch: {lora.recommended_epoch} ({lora.recommendation})")
    lines.append(f"training time: {lora.finished_at - lora.started_at:.0f} s")
    return "\n".join(lines)
