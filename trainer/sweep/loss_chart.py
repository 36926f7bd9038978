"""The loss graph: training loss (raw and smoothed), validation loss per epoch and the learning rate, drawn with PIL.

Two panels share the x axis, which counts epochs (a tick and a faint line at each epoch's end): the loss on top,
the learning rate below on its own labelled scale, so a constant rate is not mistaken for a gridline. Ticks are
round values (1, 2, 2.5 or 5 times a power of ten). The recommended epoch is a green line with a boxed label
inside the plot, so the picture explains the recommendation in `TrainedLora.recommendation`. `draw_loss_chart`
also returns where everything went (`ChartLayout`), which the tests read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from ..training.trained_lora import TrainedLora

BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (228, 228, 228)
EPOCH_LINE = (205, 205, 205)
RAW = (170, 200, 235)
SMOOTHED = (25, 90, 190)
VALIDATION = (230, 120, 0)
LEARNING_RATE = (150, 70, 170)
RECOMMENDED = (0, 140, 70)
TICK_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)  # round tick spacings, times a power of ten
WHOLE_TICK_STEPS = (1.0, 2.0, 5.0, 10.0)  # for counts (steps, epochs)
END_INSET = 16  # pixels between the last step and the plot's right border, so a marker there stays visible

Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class Tick:
    value: float
    label: str
    position: float  # pixel: x for the x axis, y for a panel's scale


@dataclass(frozen=True)
class Panel:
    box: Box
    title: str
    ticks: tuple[Tick, ...]


@dataclass(frozen=True)
class ChartLayout:
    """Where the chart drew its panels, scales and markers, in pixels of the returned image."""

    loss: Panel
    learning_rate: Panel | None  # None when no learning rate was recorded
    x_title: str
    x_ticks: tuple[Tick, ...]  # epoch ends (or optimizer steps when the epoch length is unknown)
    recommended_x: float | None
    recommended_label: Box | None


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


def round_step(span: float, most: int, factors: tuple[float, ...] = TICK_STEPS) -> float:
    """The smallest round spacing (a factor times a power of ten) that splits `span` into at most `most` parts."""
    raw = span / most
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(factor * magnitude for factor in factors if factor * magnitude >= raw * (1 - 1e-9))


def round_ticks(low: float, high: float, most: int) -> list[float]:
    """Round tick values from a multiple of the spacing at or below `low` to one at or above `high`."""
    if not high > low:
        high = low + (abs(low) or 1.0) * 0.1
    step = round_step(high - low, most)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    digits = max(0, 3 - math.floor(math.log10(step)))  # drops the float noise of index * step
    return [round(index * step, digits) for index in range(first, last + 1)]


def tick_label(value: float, spacing: float) -> str:
    """A tick's text with no more digits than its spacing needs: 0.02, 0.025, 4e-3, 2.5e-5."""
    if value == 0:
        return "0"
    if spacing >= 0.01:
        decimals = max(0, -math.floor(math.log10(spacing) + 1e-9)) + (1 if f"{spacing:.1e}"[:3] == "2.5" else 0)
        return f"{value:.{decimals}f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def render_loss_chart(lora: TrainedLora, width: int = 768, height: int = 432) -> Image.Image:
    """The loss graph as an image (what Train LoRA's loss_graph output and its chart file show)."""
    return draw_loss_chart(lora, width, height)[0]


def draw_loss_chart(lora: TrainedLora, width: int = 768, height: int = 432) -> tuple[Image.Image, ChartLayout | None]:
    """The loss graph and its layout (None when no step was recorded: the image then says so)."""
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    steps = [step for step, _ in lora.loss_history]
    losses = [loss for _, loss in lora.loss_history]
    if not steps:
        draw.text((20, height // 2), "No training steps were recorded.", font=font, fill=AXIS)
        return canvas, None

    span = smoothing_span(len(losses))
    curve = smoothed(losses, span)
    validation = _validation_points(lora)
    rates = lora.learning_rate_history
    last_step = max(steps)
    left, right, bottom = 72, width - 24, height - 52
    loss_box: Box = (left, 40, right, bottom - 88 if rates else bottom)
    rate_box: Box | None = (left, bottom - 64, right, bottom) if rates else None

    def x_of(step: float) -> int:  # whole pixels, so one-pixel lines stay crisp
        return round(left + (right - END_INSET - left) * (step / last_step if last_step else 0.0))

    x_title, x_ticks = _x_axis(lora, last_step, x_of)
    for tick in x_ticks:  # epoch ends: a faint line through both panels
        for box in filter(None, (loss_box, rate_box)):
            draw.line([(tick.position, box[1]), (tick.position, box[3])], fill=EPOCH_LINE)

    loss_panel = _scale(draw, small, loss_box, "loss", losses + [loss for _, loss in validation], most=5)
    y_loss = _mapping(loss_panel)
    draw.line([(x_of(s), y_loss(v)) for s, v in zip(steps, losses)], fill=RAW, width=1)
    draw.line([(x_of(s), y_loss(v)) for s, v in zip(steps, curve)], fill=SMOOTHED, width=2)
    if validation:
        points = [(x_of(step), y_loss(loss)) for step, loss in validation]
        if len(points) > 1:
            draw.line(points, fill=VALIDATION, width=2)
        for x, y in points:
            draw.ellipse([(x - 4, y - 4), (x + 4, y + 4)], fill=VALIDATION)
    recommended_x, label_box = _recommended_marker(draw, small, lora, loss_box, x_of, last_step)

    rate_panel = None
    if rate_box is not None:
        peak = max(rate for _, rate in rates) or 1.0
        rate_panel = _scale(draw, small, rate_box, _rate_title(lora, rates), [0.0, peak * 1.15], most=2)
        y_rate = _mapping(rate_panel)
        points = [(x_of(step), y_rate(rate)) for step, rate in rates]
        draw.line(points if len(points) > 1 else points * 2, fill=LEARNING_RATE, width=2)
        draw.text((left, rate_box[1] - 17), rate_panel.title, font=small, fill=LEARNING_RATE)  # above its panel

    for box in filter(None, (loss_box, rate_box)):
        draw.rectangle(box, outline=AXIS)
    for tick in x_ticks:
        draw.line([(tick.position, bottom), (tick.position, bottom + 4)], fill=AXIS)
        if tick.label:
            _text_centred(draw, tick.label, small, tick.position, bottom + 6, AXIS)
    _text_centred(draw, x_title, small, (left + right) / 2, bottom + 24, AXIS)
    draw.text((8, loss_box[1] - 18), "loss", font=small, fill=AXIS)
    _legend(draw, font, left, span, bool(validation))
    layout = ChartLayout(loss_panel, rate_panel, x_title, tuple(x_ticks), recommended_x, label_box)
    return canvas, layout


def _scale(draw: ImageDraw.ImageDraw, font, box: Box, title: str, values: list[float], most: int) -> Panel:
    """A panel's vertical scale: round ticks spanning `values`, gridlines and labels on the left."""
    finite = [value for value in values if math.isfinite(value)] or [0.0, 1.0]
    ticks = round_ticks(min(finite), max(finite), most)
    spacing = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    low, high = ticks[0], ticks[-1]
    placed = []
    for value in ticks:
        y = box[3] - (box[3] - box[1]) * (value - low) / (high - low)
        placed.append(Tick(value, tick_label(value, spacing), y))
        draw.line([(box[0], y), (box[2], y)], fill=GRID)
        _text_right(draw, placed[-1].label, font, box[0] - 6, y - 7, AXIS)
    return Panel(box, title, tuple(placed))


def _mapping(panel: Panel):
    """value -> y pixel for a panel's scale."""
    low, high = panel.ticks[0], panel.ticks[-1]
    return lambda value: low.position + (high.position - low.position) * (value - low.value) / (high.value - low.value)


def _x_axis(lora: TrainedLora, last_step: int, x_of) -> tuple[str, list[Tick]]:
    """Ticks at epoch ends labelled with the epoch (every Nth when there are many); optimizer steps as a fallback."""
    ends = _epoch_ends(lora, last_step)
    if not ends:
        return "optimizer step", [Tick(step, str(step), x_of(step)) for step in _step_ticks(last_step)]
    every = 1 if len(ends) <= 12 else int(round_step(len(ends), 10, WHOLE_TICK_STEPS))
    ticks = [Tick(0, "0", x_of(0))]
    ticks += [Tick(step, str(epoch) if epoch % every == 0 or epoch == len(ends) else "", x_of(step))
              for epoch, step in ends]
    per_epoch = lora.dataset_summary.get("steps_per_epoch")
    steps = f"{per_epoch} optimizer steps each" if per_epoch else f"{last_step} optimizer steps"
    return f"epoch ({steps})", ticks


def _epoch_ends(lora: TrainedLora, last_step: int) -> list[tuple[int, float]]:
    epochs = int(lora.settings.get("epochs", 0) or max(lora.epochs, default=0))
    ends = [(epoch, _epoch_step(lora, epoch)) for epoch in range(1, epochs + 1)]
    return [(epoch, step) for epoch, step in ends if step is not None and 0 < step <= last_step]


def _recommended_marker(draw: ImageDraw.ImageDraw, font, lora: TrainedLora, box: Box, x_of,
                        last_step: int) -> tuple[float | None, Box | None]:
    """A green line at the recommended epoch's end, its label in a box inside the plot beside the line."""
    step = _epoch_step(lora, lora.recommended_epoch) if lora.recommended_epoch else None
    if step is None or step > last_step:
        return None, None
    x = x_of(step)
    draw.line([(x, box[1]), (x, box[3])], fill=RECOMMENDED, width=3)
    text = f"recommended: epoch {lora.recommended_epoch}"
    text_width = font.getlength(text)
    label_left = x + 8 if x + 8 + text_width + 12 <= box[2] - 2 else x - 8 - text_width - 12
    label: Box = (round(label_left), box[1] + 8, round(label_left + text_width + 12), box[1] + 28)
    draw.rectangle(label, fill=BACKGROUND, outline=RECOMMENDED, width=2)
    draw.text((label[0] + 6, label[1] + 3), text, font=font, fill=RECOMMENDED)
    return x, label


def _rate_title(lora: TrainedLora, rates: list[tuple[int, float]]) -> str:
    values = {rate for _, rate in rates}
    if len(values) == 1:
        rate = values.pop()
        return f"learning rate (constant {tick_label(rate, rate)})"
    scheduler = lora.settings.get("lr_scheduler")
    return f"learning rate ({scheduler})" if scheduler else "learning rate"


def _legend(draw: ImageDraw.ImageDraw, font, left: int, span: int, with_validation: bool) -> None:
    entries = [(f"training loss (smoothed over {span} steps)", SMOOTHED), ("raw", RAW)]
    if with_validation:
        entries.append(("validation loss", VALIDATION))
    x = left
    for text, colour in entries:
        draw.rectangle([(x, 12), (x + 14, 24)], fill=colour)
        draw.text((x + 20, 10), text, font=font, fill=AXIS)
        x += 20 + font.getlength(text) + 18


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


def _step_ticks(last_step: int) -> list[int]:
    if last_step <= 1:
        return [last_step]
    spacing = max(1, int(round_step(last_step, 6, WHOLE_TICK_STEPS)))
    return list(range(0, last_step + 1, spacing))


def _text_right(draw: ImageDraw.ImageDraw, text: str, font, right: float, top: float, fill) -> None:
    draw.text((right - font.getlength(text), top), text, font=font, fill=fill)


def _text_centred(draw: ImageDraw.ImageDraw, text: str, font, centre: float, top: float, fill) -> None:
    draw.text((centre - font.getlength(text) / 2, top), text, font=font, fill=fill)
