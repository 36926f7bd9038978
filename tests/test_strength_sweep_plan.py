"""Strength Sweep inputs and grid layout, without a model: what users type becomes the grid they expect."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from harness import runtime

sweep = runtime.pack("trainer.sweep.plan")
grid_image = runtime.pack("trainer.sweep.grid")
SettingsError = runtime.pack("trainer.errors").SettingsError


@pytest.mark.parametrize("text,expected", [
    ("0, 0.25, 0.5, 0.75, 1.0", (0.0, 0.25, 0.5, 0.75, 1.0)),
    ("0 0.5\n1", (0.0, 0.5, 1.0)),
    ("0:1:0.1", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)),
    ("1:0:-0.5", (1.0, 0.5, 0.0)),
    ("0, 0.5:1:0.25, 1", (0.0, 0.5, 0.75, 1.0)),
    ("-0.5, 0", (-0.5, 0.0)),
])
def test_strengths_accept_lists_and_inclusive_ranges(text, expected):
    assert sweep.parse_strengths(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "strengths is empty"),
    ("0, half", "'half' is not a number"),
    ("0:1", "needs start:stop:step"),
    ("0:1:-0.1", "never reaches 1"),
    ("0:1:0", "never reaches 1"),
    ("0:10:0.01", "limit is 100"),
    ("nan", "not a finite number"),
])
def test_bad_strengths_name_the_input_and_the_fix(text, message):
    with pytest.raises(SettingsError, match=message):
        sweep.parse_strengths(text)


def test_seeds_accept_lists_and_ranges_within_ksampler_range():
    assert sweep.parse_seeds("1, 2, 3") == (1, 2, 3)
    assert sweep.parse_seeds("5:7, 1") == (5, 6, 7, 1)
    assert sweep.parse_seeds("0:10:5") == (0, 5, 10)
    for text, message in [("1.5", "not a whole number"), ("-1", "outside KSampler's seed range"),
                          ("3:1", "is empty"), ("0:1000", "limit is 100"), (" ", "seeds is empty")]:
        with pytest.raises(SettingsError, match=message):
            sweep.parse_seeds(text)


def test_epochs_resolve_keywords_and_lists_against_kept_epochs():
    kept = [2, 4, 6]
    assert sweep.resolve_epochs("final", kept, 4) == (6,)
    assert sweep.resolve_epochs("all", kept, 4) == (2, 4, 6)
    assert sweep.resolve_epochs("best", kept, 4) == (4,)
    assert sweep.resolve_epochs("6, best, 2", kept, 4) == (2, 4, 6)  # rows go down in epoch order
    with pytest.raises(SettingsError, match=r"epoch 3, 5 was not kept; kept epochs are 2, 4, 6.*save_every_n_epochs"):
        sweep.resolve_epochs("3, 5", kept, 4)
    with pytest.raises(SettingsError, match="'best' needs a recommended epoch"):
        sweep.resolve_epochs("best", kept, None)
    with pytest.raises(SettingsError, match="'latest' is not a whole number.*final, all, best"):
        sweep.resolve_epochs("latest", kept, 4)


def test_prompts_are_one_per_non_empty_line():
    assert sweep.parse_prompts("a cat\n\n  a dog  \n") == ("a cat", "a dog")
    with pytest.raises(SettingsError, match="prompts is empty"):
        sweep.parse_prompts("\n  \n")


def plan(**overrides):
    values = dict(prompts=("a cat", "a dog"), seeds=(1, 2), epochs=(2, 4), strengths=(0.0, 0.5, 1.0), recommended_epoch=4)
    values.update(overrides)
    return sweep.SweepPlan(**values)


def test_cells_are_in_reading_order_with_strength_across_and_epoch_down():
    cells = plan().cells()
    assert len(cells) == 2 * 2 * 2 * 3
    assert [cell.index for cell in cells] == list(range(24))
    assert [(cell.row, cell.column) for cell in cells] == [(row, column) for row in range(4) for column in range(6)]
    first_row = cells[:6]
    assert [(cell.seed, cell.strength) for cell in first_row] == [(1, 0.0), (1, 0.5), (1, 1.0), (2, 0.0), (2, 0.5), (2, 1.0)]
    assert {cell.epoch for cell in first_row} == {2} and {cell.prompt for cell in first_row} == {"a cat"}
    assert [(cells[row * 6].prompt, cells[row * 6].epoch) for row in range(4)] == [("a cat", 2), ("a cat", 4), ("a dog", 2), ("a dog", 4)]


def test_render_groups_cover_every_cell_once_per_epoch_and_strength():
    groups = plan().render_groups()
    assert [(epoch, strength) for epoch, strength, _ in groups] == [(2, 0.0), (2, 0.5), (2, 1.0), (4, 0.0), (4, 0.5), (4, 1.0)]
    indices = sorted(cell.index for _, _, cells in groups for cell in cells)
    assert indices == list(range(24))
    for epoch, strength, cells in groups:
        assert all(cell.epoch == epoch and cell.strength == strength for cell in cells)


def distinct_cells(count: int, size: int = 64) -> torch.Tensor:
    """Cells that differ from each other and from the white background."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand((count, size, size, 3), generator=generator) * 0.8


def test_grid_holds_every_cell_untouched_at_its_box():
    the_plan = plan()
    images = distinct_cells(24, size=128)
    grid, layout = grid_image.render_grid(the_plan, images)
    assert grid.shape == (1, layout.height, layout.width, 3) and layout.cell_scale == 1
    for cell in the_plan.cells():
        left, top, right, bottom = layout.cell_region(cell.index)
        assert torch.equal(grid[0, top:bottom, left:right], images[cell.index])
    # Blocks never overlap, strength grows to the right within a seed block and epoch downwards.
    boxes = layout.boxes
    assert len(set(boxes)) == 24
    assert boxes[0][0] < boxes[1][0] < boxes[2][0] < boxes[3][0] and boxes[0][1] < boxes[6][1] < boxes[12][1]
    assert boxes[3][0] - boxes[2][0] > 128, "seed blocks are separated by a gap"
    assert layout.width == boxes[5][0] + 128 + layout.font_size // 2


@pytest.mark.parametrize("width, height, scale", [(32, 32, 4), (64, 48, 3), (120, 200, 2)])
def test_small_cells_are_enlarged_by_a_whole_factor_in_the_grid_only(width, height, scale):
    """A 32 px toy-world image is shown as 128 px of clean 4x4 blocks; the `images` batch itself stays native."""
    the_plan = plan()
    images = torch.rand((24, height, width, 3), generator=torch.Generator().manual_seed(1)) * 0.8
    grid, layout = grid_image.render_grid(the_plan, images)
    assert layout.cell_scale == scale and (layout.cell_width, layout.cell_height) == (width * scale, height * scale)
    assert min(layout.cell_width, layout.cell_height) >= grid_image.MIN_CELL_SIDE
    for cell in the_plan.cells():
        left, top, right, bottom = layout.cell_region(cell.index)
        shown = grid[0, top:bottom, left:right]
        assert shown.shape == (height * scale, width * scale, 3)
        for dy in range(scale):
            for dx in range(scale):
                assert torch.equal(shown[dy::scale, dx::scale], images[cell.index]), "every pixel is a scale x scale block"
    details = grid_image.grid_metadata(the_plan, layout)
    assert details["cell_scale"] == scale and details["cells"][5]["box"] == list(layout.cell_region(5))
    assert layout.font_size == grid_image.font_size_for(layout.cell_width, layout.cell_height), "labels follow the shown size"


def ink(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Pixels that are clearly not background: drawn text."""
    region = image.crop(box).convert("L")
    return sum(1 for value in region.getdata() if value < 160)


def test_labels_are_drawn_in_the_margins_and_scale_with_the_cells():
    the_plan = plan()
    canvas, layout = grid_image.draw_labels(the_plan, 64, 64)
    first_left, first_top = layout.boxes[0]
    assert layout.font_size >= 14
    assert ink(canvas, (0, first_top, first_left, first_top + 64)) > 30, "epoch label at the left of the first row"
    assert ink(canvas, (first_left, 0, first_left + 64 * 3, first_top)) > 60, "seed and strength labels above the columns"
    _, big_layout = grid_image.draw_labels(the_plan, 512, 512)
    assert big_layout.font_size >= 40, "labels grow with the cells, so a downscaled grid stays readable"


def test_long_prompts_wrap_into_a_bounded_band():
    long_prompt = " ".join(["a very detailed photo of a red circle on a white table"] * 20)
    _, layout = grid_image.draw_labels(plan(prompts=(long_prompt,)), 64, 64)
    _, short_layout = grid_image.draw_labels(plan(prompts=("a cat",)), 64, 64)
    line = round(layout.font_size * 1.3)
    assert short_layout.boxes[0][1] < layout.boxes[0][1] <= short_layout.boxes[0][1] + 2 * line
    assert layout.width == short_layout.width


def test_grid_metadata_describes_each_cell_and_its_box():
    the_plan = plan()
    _, layout = grid_image.render_grid(the_plan, distinct_cells(24))
    details = grid_image.grid_metadata(the_plan, layout)
    assert details["strengths"] == [0.0, 0.5, 1.0] and details["recommended_epoch"] == 4
    cell = details["cells"][7]
    assert (cell["prompt"], cell["seed"], cell["epoch"], cell["strength"]) == (0, 1, 4, 0.5)
    assert cell["box"] == list(layout.cell_region(7))
