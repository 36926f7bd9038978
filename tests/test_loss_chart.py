"""The loss chart reads at a glance: round ticks, epochs on the x axis, the learning rate in its own labelled panel,
and the recommended epoch marked inside the plot (checked on the layout the renderer returns and on its pixels).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness import runtime

loss_chart = runtime.pack("trainer.sweep.loss_chart")
trained_lora = runtime.pack("trainer.training.trained_lora")

STEPS_PER_EPOCH = 25


def demo_like_lora(epochs: int = 6, recommended: int | None = 6, scheduler: str = "constant", validation: bool = False,
                   steps_per_epoch: int | None = STEPS_PER_EPOCH):
    """A run shaped like the toy-world demo's: a falling noisy loss, a constant 4e-3 learning rate."""
    last = epochs * STEPS_PER_EPOCH
    losses = [(step, 0.02 + 0.08 * math.exp(-step / 40) + 0.01 * math.sin(step * 1.7)) for step in range(1, last + 1)]
    if scheduler == "constant":
        rates = [(step, 4e-3) for step in range(1, last + 1)]
    else:
        rates = [(step, 1e-4 * 0.5 * (1 + math.cos(math.pi * step / last))) for step in range(1, last + 1)]
    kept = {epoch: trained_lora.EpochWeights(epoch, epoch * STEPS_PER_EPOCH, {}, 0.03) for epoch in range(2, epochs + 1, 2)}
    return trained_lora.TrainedLora(
        "sd15", "LoRA", 4, 2.0, None, None, kept, settings={"epochs": epochs, "lr_scheduler": scheduler},
        dataset_summary={"steps_per_epoch": steps_per_epoch} if steps_per_epoch else {}, loss_history=losses,
        learning_rate_history=rates, recommended_epoch=recommended,
        validation_history=[(epoch, 0.05 - 0.003 * epoch) for epoch in range(1, epochs + 1)] if validation else [])


def pixels_of(image, colour) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of the pixels painted exactly `colour`."""
    return np.nonzero((np.asarray(image) == np.array(colour, dtype=np.uint8)).all(axis=-1))


def assert_round(ticks) -> None:
    values = [tick.value for tick in ticks]
    spacing = values[1] - values[0]
    mantissa = spacing / 10 ** math.floor(math.log10(spacing))
    assert any(math.isclose(mantissa, factor) for factor in (1, 2, 2.5, 5)), values
    for tick in ticks:
        assert math.isclose(tick.value / spacing, round(tick.value / spacing), abs_tol=1e-6), values
        assert math.isclose(float(tick.label), tick.value, rel_tol=1e-9, abs_tol=1e-12), (tick.label, tick.value)
        assert len(tick.label.replace("e-", "").replace(".", "").lstrip("0")) <= 3, tick.label  # no 0.00626


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.00626, 0.0319, [0.0, 0.01, 0.02, 0.03, 0.04]),  # the odd ticks of the old chart, now round
    (0.0147, 0.1054, [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12]),
    (0.0, 4.6e-3, [0.0, 2.5e-3, 5e-3]),
])
def test_ticks_are_round_values_that_cover_the_data(low, high, expected):
    ticks = loss_chart.round_ticks(low, high, most=5 if high > 0.01 else 2)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low and ticks[-1] >= high


def test_the_learning_rate_has_its_own_labelled_panel_below_the_loss(artifacts_dir):
    image, layout = loss_chart.draw_loss_chart(demo_like_lora())
    image.save(artifacts_dir / "loss_chart.png")
    loss, rate = layout.loss, layout.learning_rate
    assert rate is not None and rate.box[1] > loss.box[3] + 10, "the panels are apart, rate below loss"
    assert rate.title == "learning rate (constant 4e-3)" and loss.title == "loss"
    assert_round(rate.ticks)
    assert rate.ticks[0].value == 0 and rate.ticks[-1].value >= 4e-3
    ys, xs = pixels_of(image, loss_chart.LEARNING_RATE)
    assert ys.size > 300 and ys.min() > loss.box[3], "the rate line and its title stay out of the loss panel"
    line = ys[(ys > rate.box[1]) & (ys < rate.box[3])]
    assert line.size > 300 and np.ptp(line) <= 2, "one flat line inside the rate panel: the constant rate"
    assert rate.box[1] + 4 < np.median(line) < rate.box[3] - 4, "not on a border, where it would read as one"


def test_the_x_axis_counts_epochs_with_a_tick_at_each_epoch_end():
    image, layout = loss_chart.draw_loss_chart(demo_like_lora())
    assert layout.x_title == f"epoch ({STEPS_PER_EPOCH} optimizer steps each)"
    assert [tick.label for tick in layout.x_ticks] == ["0", "1", "2", "3", "4", "5", "6"]
    assert [tick.value for tick in layout.x_ticks] == [epoch * STEPS_PER_EPOCH for epoch in range(7)]
    positions = [tick.position for tick in layout.x_ticks]
    assert positions[0] == layout.loss.box[0] and positions[-1] < layout.loss.box[2] - 10
    for tick in layout.x_ticks[1:-1]:  # the epoch ends show as lines through the loss panel
        column = np.asarray(image)[layout.loss.box[1] + 5:layout.loss.box[3] - 5, round(tick.position)]
        assert ((column == loss_chart.EPOCH_LINE).all(axis=-1)).sum() > 50, tick


def test_many_epochs_label_every_fifth_and_the_last():
    _, layout = loss_chart.draw_loss_chart(demo_like_lora(epochs=42, recommended=30))
    labelled = [tick.label for tick in layout.x_ticks if tick.label]
    assert labelled == ["0", "5", "10", "15", "20", "25", "30", "35", "40", "42"]
    assert len(layout.x_ticks) == 43


def test_without_the_epoch_length_the_kept_epochs_mark_the_x_axis():
    _, layout = loss_chart.draw_loss_chart(demo_like_lora(steps_per_epoch=None, recommended=None))
    assert layout.x_title == "epoch (150 optimizer steps)"
    assert [(tick.label, tick.value) for tick in layout.x_ticks] == [("0", 0), ("2", 50), ("4", 100), ("6", 150)]


@pytest.mark.parametrize("recommended", [6, 1, 4])
def test_the_recommended_epoch_is_a_line_and_a_label_inside_the_plot(recommended):
    image, layout = loss_chart.draw_loss_chart(demo_like_lora(recommended=recommended, validation=True,
                                                              scheduler="cosine"))
    left, top, right, bottom = layout.loss.box
    x = layout.recommended_x
    assert x == next(tick.position for tick in layout.x_ticks if tick.label == str(recommended))
    assert left < x < right - 10, "inside the plot, clear of its border"
    ys, xs = pixels_of(image, loss_chart.RECOMMENDED)
    in_line = ys[np.abs(xs - x) <= 1]
    assert in_line.min() <= top + 1 and in_line.max() >= bottom - 1, "the line spans the loss panel"
    label_left, label_top, label_right, label_bottom = layout.recommended_label
    assert left < label_left and label_right < right and top < label_top and label_bottom < bottom
    assert not label_left <= x <= label_right, "the label sits beside the line, not across it"


def test_loss_ticks_are_round(artifacts_dir):
    image, layout = loss_chart.draw_loss_chart(demo_like_lora(recommended=4, validation=True, scheduler="cosine"))
    image.save(artifacts_dir / "loss_chart_validation_cosine.png")
    assert_round(layout.loss.ticks)
    assert_round(layout.learning_rate.ticks)
    assert layout.learning_rate.title == "learning rate (cosine)"


def test_a_run_without_steps_says_so():
    lora = demo_like_lora()
    lora.loss_history = []
    image, layout = loss_chart.draw_loss_chart(lora)
    assert layout is None and image.size == (768, 432)


def test_with_no_epoch_end_known_the_x_axis_counts_optimizer_steps():
    lora = demo_like_lora(steps_per_epoch=None, recommended=None)
    lora.epochs, lora.settings = {}, {}
    _, layout = loss_chart.draw_loss_chart(lora)
    assert layout.x_title == "optimizer step"
    assert [tick.value for tick in layout.x_ticks] == [0, 50, 100, 150]
