"""The network table: one entry per adapter type (LoRA, LoCon, LoHa, LoKr) with everything that differs.

An entry says which peft config builds it, whether it adapts 3x3 convs, how its layers are stored in a file
(trainer/files/network_layouts.py, which also recognises and normalises files on import) and what kohya's
metadata calls it. Train LoRA's `network` choices are this table's names: adding a network (DoRA, say) is one
entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import peft

from ..errors import SettingsError
from ..files.network_layouts import LOHA, LOKR, LORA, FileLayout

KOHYA_LORA_MODULE = "networks.lora"  # kohya sd-scripts' own network
LYCORIS_MODULE = "lycoris.kohya"


@dataclass(frozen=True)
class Network:
    name: str  # the node's choice, TrainedLora.network
    peft_config: Callable[[int, float, list[str]], peft.PeftConfig]  # (rank, alpha, target module names)
    trains_convs: bool  # adapts 3x3 convs too (at conv_rank)
    layout: FileLayout
    network_module: str  # kohya's ss_network_module
    lycoris_algo: str | None = None  # `algo` in ss_network_args

    def network_args(self) -> dict[str, str]:
        return {"algo": self.lycoris_algo} if self.lycoris_algo else {}


def _lora(rank: int, alpha: float, names: list[str]) -> peft.PeftConfig:
    return peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0)


def _loha(rank: int, alpha: float, names: list[str]) -> peft.PeftConfig:
    return peft.LoHaConfig(r=rank, alpha=alpha, target_modules=names, use_effective_conv2d=False)


def _lokr(rank: int, alpha: float, names: list[str]) -> peft.PeftConfig:
    return peft.LoKrConfig(r=rank, alpha=alpha, target_modules=names, use_effective_conv2d=False)


NETWORKS: dict[str, Network] = {network.name: network for network in (
    Network("LoRA", _lora, False, LORA, KOHYA_LORA_MODULE),
    Network("LoCon", _lora, True, LORA, LYCORIS_MODULE, "locon"),  # LyCORIS: LoHa and LoKr train the convs too
    Network("LoHa", _loha, True, LOHA, LYCORIS_MODULE, "loha"),
    Network("LoKr", _lokr, True, LOKR, LYCORIS_MODULE, "lokr"),
)}


def network_names() -> tuple[str, ...]:
    return tuple(NETWORKS)


def network(name: str) -> Network:
    if name not in NETWORKS:
        raise SettingsError(f"network '{name}' is not one of {', '.join(NETWORKS)}.")
    return NETWORKS[name]


def layouts() -> list[FileLayout]:
    """Every file layout a network uses, once each, in table order."""
    return list({id(entry.layout): entry.layout for entry in NETWORKS.values()}.values())


def network_for_file(layout: FileLayout, has_convs: bool) -> Network:
    """The network a file in `layout` was trained as: the one that adapts convs exactly when the file does
    (a kohya LoRA file with 3x3 convs is a LoCon), else the first network with that layout."""
    candidates = [entry for entry in NETWORKS.values() if entry.layout is layout]
    return next((entry for entry in candidates if entry.trains_convs == has_convs), candidates[0])
