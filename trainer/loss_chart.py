"""The loss graph: training loss (raw and smoothed), validation loss per epoch and the learning rate, drawn with PIL.

Loss and learning rate share the step axis; loss reads on the left scale, learning rate on the right.
Epoch ends are faint vertical lines and the recommended epoch is marked, so the picture explains the
recommendation in `TrainedLora.recommendation`.
"""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from .trained_lora import TrainedLora

BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (228, 228, 228)
RAW = (170, 200, 235)
SMOOTHED = (25, 90, 190)
VALIDATION = (230, 120, 0)
LEARNING_RATE = (120, 120, 120)
RECOMMENDED = (0, 140, 70)


def smoothing_span(count: int) -> int:
    """Steps the curve is averaged over: a twentieth of the run, so long runs and short runs both read well."""
    return max(1, count // 20)


def smoothed(values: list[float], span: int) -> list[float]:
    """Exponential moving average with span `span` (alpha = 2 / (span + 1)), debiased like TensorBoard's."""
    alpha = 2.0 / (span + 1)
    average, weight, result = 0.0, 0.0, []
    for value in values:
        average = (1 - alpha) * average + alpha * value
        weight = (1 - alpha) * weight + alpha
        result.append(average / weight)
    return result


def render_loss_chart(lora: TrainedLora, width: int = 768, height: int = 432) -> Image.Image:
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    steps = [step for step, _ in lora.loss_history]
    losses = [loss for _, loss in lora.loss_history]
    if not steps:
        draw.text((20, height // 2), "No training steps were recorded.", font=font, fill=AXIS)
        return canvas

    span = smoothing_span(len(losses))
    curve = smoothed(losses, span)
    validation = _validation_points(lora)
    left, right, top, bottom = 72, width - 78, 46, height - 44
    last_step = max(steps)

    def x_of(step: float) -> float:
        return left + (right - left) * (step / last_step if last_step else 0.0)

    low, high = _padded_range(losses + [loss for _, loss in validation])

    def y_of(loss: float) -> float:
        return bottom - (bottom - top) * (loss - low) / (high - low)

    # Grid, loss scale on the left, step scale at the bottom.
    for index in range(6):
        value = low + (high - low) * index / 5
        y = y_of(value)
        draw.line([(left, y), (right, y)], fill=GRID)
        _text_right(draw, f"{value:.3g}", small, left - 6, y - 7, AXIS)
    for step in _step_ticks(last_step):
        draw.line([(x_of(step), bottom), (x_of(step), bottom + 4)], fill=AXIS)
        _text_centred(draw, str(step), small, x_of(step), bottom + 6, AXIS)
    _text_centred(draw, "optimizer step", small, (left + right) / 2, bottom + 22, AXIS)
    draw.text((6, top - 20), "loss", font=small, fill=AXIS)

    # Epoch ends, and the recommended epoch.
    steps_per_epoch = lora.dataset_summary.get("steps_per_epoch")
    epochs = int(lora.settings.get("epochs", 0))
    if steps_per_epoch:
        for epoch in range(1, epochs + 1):
            step = epoch * steps_per_epoch
            if step <= last_step:
                draw.line([(x_of(step), top), (x_of(step), bottom)], fill=GRID)
    recommended_step = _epoch_step(lora, lora.recommended_epoch) if lora.recommended_epoch else None
    if recommended_step is not None and recommended_step <= last_step:
        x = x_of(recommended_step)
        draw.line([(x, top), (x, bottom)], fill=RECOMMENDED, width=2)
        _text_centred(draw, f"recommended: epoch {lora.recommended_epoch}", small, min(max(x, left + 80), right - 80), top + 2, RECOMMENDED)

    # Learning rate on its own scale (right), thin and grey so it is not read as a loss.
    rates = lora.learning_rate_history
    if rates:
        peak = max(rate for _, rate in rates) or 1.0
        rate_high = peak * 1.25

        def y_rate(rate: float) -> float:
            return bottom - (bottom - top) * rate / rate_high

        draw.line([(x_of(step), y_rate(rate)) for step, rate in rates], fill=LEARNING_RATE, width=1)
        for index in range(6):
            value = rate_high * index / 5
            draw.text((right + 6, y_rate(value) - 7), f"{value:.1e}", font=small, fill=LEARNING_RATE)
        draw.text((right + 6, top - 20), "learning rate", font=small, fill=LEARNING_RATE)

    # Raw loss, then its smoothed curve on top, then validation loss per epoch.
    draw.line([(x_of(s), y_of(v)) for s, v in zip(steps, losses)], fill=RAW, width=1)
    draw.line([(x_of(s), y_of(v)) for s, v in zip(steps, curve)], fill=SMOOTHED, width=2)
    if validation:
        points = [(x_of(step), y_of(loss)) for step, loss in validation]
        if len(points) > 1:
            draw.line(points, fill=VALIDATION, width=2)
        for x, y in points:
            draw.ellipse([(x - 4, y - 4), (x + 4, y + 4)], fill=VALIDATION)
    draw.rectangle([(left, top), (right, bottom)], outline=AXIS)

    legend = [(f"training loss (smoothed over {span} steps)", SMOOTHED), ("raw", RAW)]
    if validation:
        legend.append(("validation loss", VALIDATION))
    if rates:
        legend.append(("learning rate", LEARNING_RATE))
    x = left
    for text, colour in legend:
        draw.rectangle([(x, 12), (x + 14, 24)], fill=colour)
        draw.text((x + 20, 10), text, font=font, fill=AXIS)
        x += 20 + font.getlength(text) + 18
    return canvas


def _validation_points(lora: TrainedLora) -> list[tuple[float, float]]:
    points = []
    for epoch, loss in lora.validation_history:
        step = _epoch_step(lora, epoch)
        if step is not None and math.isfinite(loss):
            points.append((step, loss))
    return points


def _epoch_step(lora: TrainedLora, epoch: int) -> float | None:
    """The optimizer step at which `epoch` ended."""
    if epoch in lora.epochs:
        return lora.epochs[epoch].step
    steps_per_epoch = lora.dataset_summary.get("steps_per_epoch")
    return epoch * steps_per_epoch if steps_per_epoch else None


def _padded_range(values: list[float]) -> tuple[float, float]:
    finite = [value for value in values if math.isfinite(value)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    margin = (high - low) * 0.05 or abs(high) * 0.05 or 0.05
    return low - margin, high + margin


def _step_ticks(last_step: int) -> list[int]:
    if last_step <= 1:
        return [last_step]
    raw = last_step / 6
    magnitude = 10 ** math.floor(math.log10(raw))
    spacing = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw)
    return [int(spacing * index) for index in range(int(last_step // spacing) + 1)]


def _text_right(draw: ImageDraw.ImageDraw, text: str, font, right: float, top: float, fill) -> None:
    draw.text((right - font.getlength(text), top), text, font=font, fill=fill)


def _text_centred(draw: ImageDraw.ImageDraw, text: str, font, centre: float, top: float, fill) -> None:
    draw.text((centre - font.getlength(text) / 2, top), text, font=font, fill=fill)
