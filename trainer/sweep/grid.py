"""The Strength Sweep's labelled grid: strength across, epoch down, a block per seed (across) and prompt (down).

Labels are drawn with PIL at a size that follows the cell size (at least 14 px), so they stay readable
when the grid is viewed whole. The cells are pasted as float tensors, untouched, so a cell of the grid
is exactly the image in the `images` batch; cells smaller than MIN_CELL_SIDE (the toy world's 32 px) are
first enlarged by a whole factor, nearest neighbour, so each of their pixels becomes a clean square block.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .plan import SweepPlan, epoch_label, strength_label

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (100, 100, 100)
BEST = (0, 120, 60)
BAND = (232, 232, 232)
MIN_FONT, MAX_FONT = 14, 64
MAX_PROMPT_LINES = 3
MIN_CELL_SIDE = 128  # smaller cells are enlarged in the grid image: a 32 px image is a speck next to its labels


@dataclass(frozen=True)
class GridLayout:
    """Where everything lies in the grid image; `boxes` are the cells' top-left corners in reading order.

    `cell_width`/`cell_height` are the cells' size in the grid, `cell_scale` times the sampled images' size.
    """

    width: int
    height: int
    cell_width: int
    cell_height: int
    font_size: int
    boxes: tuple[tuple[int, int], ...]
    cell_scale: int = 1

    def cell_region(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of cell `index`, for cropping."""
        left, top = self.boxes[index]
        return left, top, left + self.cell_width, top + self.cell_height


def font_size_for(cell_width: int, cell_height: int) -> int:
    """About a twelfth of the cell, so labels scale with the images and remain legible in a thumbnail."""
    return max(MIN_FONT, min(MAX_FONT, min(cell_width, cell_height) // 12))


def cell_scale_for(image_width: int, image_height: int) -> int:
    """The whole factor that brings the shorter side of a cell to at least MIN_CELL_SIDE (1 for larger images)."""
    return max(1, -(-MIN_CELL_SIDE // min(image_width, image_height)))


def render_grid(plan: SweepPlan, images: torch.Tensor) -> tuple[torch.Tensor, GridLayout]:
    """The labelled grid as a ComfyUI IMAGE [1, H, W, 3]; `images` is the sweep's batch in reading order."""
    count, image_height, image_width, _ = images.shape
    if count != len(plan.cells()):
        raise ValueError(f"render_grid got {count} images for a plan of {len(plan.cells())} cells")
    scale = cell_scale_for(image_width, image_height)
    canvas, layout = draw_labels(plan, image_width * scale, image_height * scale)
    layout = replace(layout, cell_scale=scale)
    grid = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).to(images.dtype)
    cells = images.cpu().repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    for index, (left, top) in enumerate(layout.boxes):
        grid[top:top + layout.cell_height, left:left + layout.cell_width] = cells[index]
    return grid[None], layout


def draw_labels(plan: SweepPlan, cell_width: int, cell_height: int) -> tuple[Image.Image, GridLayout]:
    """The grid's background with every label, and its layout; the cells are left blank."""
    size = font_size_for(cell_width, cell_height)
    font = _font(size)
    pad = size // 2
    line = round(size * 1.3)
    gap = pad
    strengths, epochs, seeds, prompts = len(plan.strengths), len(plan.epochs), len(plan.seeds), len(plan.prompts)

    row_titles = [epoch_label(epoch) for epoch in plan.epochs] + ["strength"]
    left = int(max(font.getlength(text) for text in row_titles)) + 2 * pad
    content_width = plan.columns * cell_width + (seeds - 1) * gap
    wrapped = [_wrap(f"prompt: {prompt}", font, content_width + left - 2 * pad) for prompt in plan.prompts]
    band = max(len(lines) for lines in wrapped) * line + pad
    header = 2 * line + pad

    def column_x(column: int) -> int:
        return left + (column // strengths) * gap + column * cell_width

    def row_y(row: int) -> int:
        block = row // epochs
        return header + (block + 1) * band + block * gap + row * cell_height

    width = left + content_width + pad
    height = header + prompts * band + (prompts - 1) * gap + plan.rows * cell_height + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    # Column headers: the seed over each block, the strength over each column.
    for seed_index, seed in enumerate(plan.seeds):
        block_left = column_x(seed_index * strengths)
        block_width = strengths * cell_width
        _centred(draw, f"seed {seed}", font, block_left, block_width, pad // 2, TEXT)
        draw.line([(block_left, line), (block_left + block_width - 1, line)], fill=MUTED, width=1)
        for strength_index, strength in enumerate(plan.strengths):
            column = seed_index * strengths + strength_index
            text = strength_label(strength)
            _centred(draw, text, _fitting_font(text, size, cell_width - 4), column_x(column), cell_width, line + pad // 2,
                     MUTED if strength == 0 else TEXT)
    draw.text((left - pad - font.getlength("strength"), line + pad // 2), "strength", font=font, fill=MUTED)

    # A band with the prompt above each prompt block, then the epoch of each row at the left.
    for prompt_index, lines in enumerate(wrapped):
        top = row_y(prompt_index * epochs) - band
        draw.rectangle([(0, top), (width - 1, top + band - pad // 2)], fill=BAND)
        for line_index, text in enumerate(lines):
            draw.text((pad, top + pad // 4 + line_index * line), text, font=font, fill=TEXT)
        for epoch_index, epoch in enumerate(plan.epochs):
            top = row_y(prompt_index * epochs + epoch_index)
            label_top = top + max(0, (cell_height - 2 * line) // 2)
            draw.text((pad, label_top), epoch_label(epoch), font=font, fill=TEXT)
            if epoch == plan.recommended_epoch:
                draw.text((pad, label_top + line), "best", font=font, fill=BEST)

    boxes = tuple((column_x(cell.column), row_y(cell.row)) for cell in plan.cells())
    return canvas, GridLayout(width, height, cell_width, cell_height, size, boxes)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (no system fonts needed)."""
    return ImageFont.load_default(size=size)


def _fitting_font(text: str, size: int, max_width: int):
    """The largest font, from `size` down to 10 px, that fits `text` into `max_width`."""
    for candidate in range(size, 9, -1):
        font = _font(candidate)
        if font.getlength(text) <= max_width:
            return font
    return _font(10)


def _centred(draw: ImageDraw.ImageDraw, text: str, font, left: int, width: int, top: int, fill) -> None:
    draw.text((left + (width - font.getlength(text)) / 2, top), text, font=font, fill=fill)


def _wrap(text: str, font, max_width: float) -> list[str]:
    """Greedy word wrap to `max_width`, at most MAX_PROMPT_LINES lines (the last one ends with ... when cut)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    if len(lines) > MAX_PROMPT_LINES:
        last = lines[MAX_PROMPT_LINES - 1]
        while last and font.getlength(last + " ...") > max_width:
            last = last[:-1]
        lines = lines[:MAX_PROMPT_LINES - 1] + [last + " ..."]
    return lines


def grid_metadata(plan: SweepPlan, layout: GridLayout) -> dict:
    """What each cell of the grid shows and where it lies, for the PNG's text chunk (tools and tests read it)."""
    return {
        "prompts": list(plan.prompts), "seeds": list(plan.seeds), "epochs": list(plan.epochs),
        "strengths": list(plan.strengths), "recommended_epoch": plan.recommended_epoch, "cell_scale": layout.cell_scale,
        "cells": [{"index": cell.index, "prompt": plan.prompts.index(cell.prompt), "seed": cell.seed, "epoch": cell.epoch,
                   "strength": cell.strength, "box": list(layout.cell_region(cell.index))} for cell in plan.cells()],
    }
