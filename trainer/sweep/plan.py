"""The Strength Sweep's plan: which strengths, seeds, epochs and prompts, and where each cell sits in the grid.

Pure values and parsing, no ComfyUI: the grid has strength across and epoch down, one block of
epochs x strengths per prompt (block rows) and seed (block columns). Cells are listed in the grid's
reading order, which is also the order of the node's `images` batch.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import SettingsError

MAX_VALUES_PER_AXIS = 100
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # KSampler's seed range
_SEPARATORS = re.compile(r"[,;\s]+")


@dataclass(frozen=True)
class SweepCell:
    """One image of the sweep: what it renders and where it goes."""

    index: int  # position in reading order (the `images` batch)
    row: int
    column: int
    prompt: str
    seed: int
    epoch: int
    strength: float

    @property
    def uses_base_model(self) -> bool:
        """Strength 0 is the model without the LoRA, whatever the epoch (LoraLoader returns its inputs)."""
        return self.strength == 0


@dataclass(frozen=True)
class SweepPlan:
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: tuple[int, ...]
    strengths: tuple[float, ...]
    recommended_epoch: int | None = None

    @property
    def rows(self) -> int:
        return len(self.prompts) * len(self.epochs)

    @property
    def columns(self) -> int:
        return len(self.seeds) * len(self.strengths)

    def cells(self) -> list[SweepCell]:
        """Every cell, left to right, top to bottom."""
        cells = []
        for prompt_index, prompt in enumerate(self.prompts):
            for epoch_index, epoch in enumerate(self.epochs):
                row = prompt_index * len(self.epochs) + epoch_index
                for seed_index, seed in enumerate(self.seeds):
                    for strength_index, strength in enumerate(self.strengths):
                        column = seed_index * len(self.strengths) + strength_index
                        cells.append(SweepCell(len(cells), row, column, prompt, seed, epoch, strength))
        return cells

    def render_groups(self) -> list[tuple[int, float, list[SweepCell]]]:
        """Cells grouped by (epoch, strength): one LoRA-patched model renders a whole group while it stays loaded."""
        groups: dict[tuple[int, float], list[SweepCell]] = {}
        for epoch in self.epochs:
            for strength in self.strengths:
                groups[(epoch, strength)] = []
        for cell in self.cells():
            groups[(cell.epoch, cell.strength)].append(cell)
        return [(epoch, strength, cells) for (epoch, strength), cells in groups.items()]

    def describe(self) -> str:
        return (f"{len(self.cells())} cells: {len(self.strengths)} strengths x {len(self.epochs)} epochs x "
                f"{len(self.seeds)} seeds x {len(self.prompts)} prompts")


def plan_sweep(prompts: str, seeds: str, epochs: str, strengths: str, kept_epochs: Iterable[int],
               recommended_epoch: int | None) -> SweepPlan:
    """The node's text inputs turned into a plan; every problem names the input and the fix."""
    return SweepPlan(parse_prompts(prompts), parse_seeds(seeds), resolve_epochs(epochs, kept_epochs, recommended_epoch),
                     parse_strengths(strengths), recommended_epoch)


# ---------------------------------------------------------------------------------------------- parsing


def parse_prompts(text: str) -> tuple[str, ...]:
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        raise SettingsError("prompts is empty: write one prompt per line (each line becomes a block of rows).")
    return prompts


def parse_strengths(text: str) -> tuple[float, ...]:
    """'0, 0.25, 0.5' or a range 'start:stop:step' (stop included), or both mixed: '0, 0.5:1:0.25'."""
    values: list[float] = []
    for token in _tokens(text, "strengths", "0, 0.5, 1 or 0:1:0.25"):
        if ":" in token:
            values += _float_range(token)
        else:
            values.append(_number(token, "strengths"))
    return _unique(values, "strengths")


def parse_seeds(text: str) -> tuple[int, ...]:
    """'1, 2, 3' or a range '1:4' (stop included)."""
    values: list[int] = []
    for token in _tokens(text, "seeds", "1, 2, 3 or 1:3"):
        parts = token.split(":")
        if len(parts) > 3:
            raise SettingsError(f"seeds: '{token}' is not a seed or a range start:stop[:step]; write e.g. 1, 2, 3 or 1:3.")
        numbers = [_integer(part, "seeds") for part in parts]
        if len(numbers) == 1:
            values.append(numbers[0])
            continue
        start, stop, step = numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 1
        if step <= 0 or stop < start:
            raise SettingsError(f"seeds: range '{token}' is empty; write start:stop with start <= stop and a positive step.")
        count = (stop - start) // step + 1
        if count > MAX_VALUES_PER_AXIS:
            raise SettingsError(f"seeds: range '{token}' gives {count} seeds; the limit is {MAX_VALUES_PER_AXIS}.")
        values += list(range(start, stop + 1, step))
    for seed in values:
        if not 0 <= seed <= MAX_SEED:
            raise SettingsError(f"seeds: {seed} is outside KSampler's seed range 0..{MAX_SEED}.")
    return _unique(values, "seeds")


def resolve_epochs(text: str, kept_epochs: Iterable[int], recommended_epoch: int | None) -> tuple[int, ...]:
    """'final', 'all', 'best' (the recommended epoch) or epoch numbers, mixed freely; rows go down in epoch order."""
    kept = sorted(kept_epochs)
    if not kept:
        raise SettingsError("The LoRA has no kept epoch to sweep; train it again (Train LoRA keeps at least the final epoch).")
    chosen: list[int] = []
    for token in _tokens(text, "epochs", "final, all, best or 4, 8"):
        word = token.lower()
        if word in ("final", "last"):
            chosen.append(kept[-1])
        elif word == "all":
            chosen += kept
        elif word == "best":
            if recommended_epoch is None:
                raise SettingsError("epochs: 'best' needs a recommended epoch, and this LoRA has none; list epoch numbers instead.")
            chosen.append(recommended_epoch)
        else:
            chosen.append(_integer(token, "epochs", hint="final, all, best or epoch numbers such as 4, 8"))
    missing = sorted({epoch for epoch in chosen if epoch not in kept})
    if missing:
        raise SettingsError(f"epochs: epoch {', '.join(map(str, missing))} was not kept; kept epochs are "
                            f"{', '.join(map(str, kept))}. Choose among those, or train with a smaller save_every_n_epochs "
                            "to keep more.")
    return tuple(sorted(set(chosen)))


def _tokens(text: str, name: str, example: str) -> list[str]:
    tokens = [token for token in _SEPARATORS.split(text.strip()) if token]
    if not tokens:
        raise SettingsError(f"{name} is empty; write e.g. {example}.")
    return tokens


def _number(token: str, name: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise SettingsError(f"{name}: '{token}' is not a number; write e.g. 0, 0.5, 1 or a range 0:1:0.25.") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}: '{token}' is not a finite number.")
    return value


def _integer(token: str, name: str, hint: str = "1, 2, 3") -> int:
    try:
        return int(token)
    except ValueError:
        raise SettingsError(f"{name}: '{token}' is not a whole number; write e.g. {hint}.") from None


def _float_range(token: str) -> list[float]:
    parts = token.split(":")
    if len(parts) != 3:
        raise SettingsError(f"strengths: range '{token}' needs start:stop:step, e.g. 0:1:0.1.")
    start, stop, step = (_number(part, "strengths") for part in parts)
    if step == 0 or (stop - start) / step < 0:
        raise SettingsError(f"strengths: range '{token}' never reaches {stop:g} with step {step:g}; "
                            "use a step that goes from start towards stop.")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_VALUES_PER_AXIS:
        raise SettingsError(f"strengths: range '{token}' gives {count} values; the limit is {MAX_VALUES_PER_AXIS}. "
                            "Use a larger step.")
    # Rounded so 0:1:0.1 gives 0.3, not 0.30000000000000004 (labels and LoraLoader widgets show decimals).
    return [round(start + index * step, 9) for index in range(count)]


def _unique(values: list, name: str) -> tuple:
    unique = tuple(dict.fromkeys(values))
    if len(unique) > MAX_VALUES_PER_AXIS:
        raise SettingsError(f"{name}: {len(unique)} values; the limit is {MAX_VALUES_PER_AXIS}.")
    return unique


# ---------------------------------------------------------------------------------------------- labels


def strength_label(strength: float) -> str:
    return "0 (base)" if strength == 0 else f"{strength:g}"


def epoch_label(epoch: int) -> str:
    return f"epoch {epoch}"
