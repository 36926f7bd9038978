"""Training settings: one validated, immutable value built from the node's inputs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import SettingsError
from ..finite import require_finite

NETWORKS = ("LoRA", "LoCon", "LoHa", "LoKr")
OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Prodigy", "Adafactor", "SGD")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # auto: what the device computes natively (trainer.precision)


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that decides what a run computes. Defaults follow kohya's sd-scripts where sensible."""

    network: str = "LoRA"
    rank: int = 16
    alpha: float = 0.0  # 0 = rank / 2
    conv_rank: int = 8
    conv_alpha: float = 0.0  # 0 = conv_rank / 2
    epochs: int = 10
    batch_size: int = 1
    gradient_accumulation: int = 1
    resolution: int = 0  # 0 = the model family's native resolution
    unet_lr: float = 1e-4
    text_encoder_lr: float = 0.0  # 0 = text encoder frozen
    optimizer: str = "AdamW"
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = True
    seed: int = 42
    noise_offset: float = 0.0
    min_snr_gamma: float = 5.0  # 0 = off
    caption_shuffle: bool = False
    keep_tokens: int = 1
    caption_dropout: float = 0.0
    flip_augment: bool = False
    save_every_n_epochs: int = 1  # 0 = keep the final epoch only
    validation_split: float = 0.0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            if item.type == "float":
                require_finite(item.name, getattr(self, item.name))
        self._check_choice("network", NETWORKS)
        self._check_choice("optimizer", OPTIMIZERS)
        self._check_choice("lr_scheduler", SCHEDULERS)
        self._check_choice("mixed_precision", PRECISIONS)
        for name in ("rank", "conv_rank", "epochs", "batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1 (got {getattr(self, name)}).")
        if self.unet_lr <= 0 and self.text_encoder_lr <= 0:
            raise SettingsError("Both unet_lr and text_encoder_lr are 0, so nothing would train: set unet_lr (e.g. 1e-4).")
        if self.unet_lr > 0.1 and self.optimizer not in ("Prodigy",):
            raise SettingsError(f"unet_lr {self.unet_lr} is far too high for {self.optimizer} and would diverge; "
                                "LoRA learning rates are usually 1e-5 to 1e-3 (Prodigy uses 1.0).")
        if not 0 <= self.validation_split < 1:
            raise SettingsError(f"validation_split must be in [0, 1) (got {self.validation_split}).")
        if not 0 <= self.caption_dropout <= 1:
            raise SettingsError(f"caption_dropout must be in [0, 1] (got {self.caption_dropout}).")
        if self.resolution < 0:
            raise SettingsError(f"resolution {self.resolution} is negative: use 0 for the model's native size.")

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise SettingsError(f"{name} '{value}' is not one of {', '.join(choices)}.")

    @property
    def network_alpha(self) -> float:
        return self.alpha if self.alpha > 0 else self.rank / 2

    @property
    def network_conv_alpha(self) -> float:
        return self.conv_alpha if self.conv_alpha > 0 else self.conv_rank / 2

    @property
    def trains_text_encoder(self) -> bool:
        return self.text_encoder_lr > 0

    @property
    def trains_convs(self) -> bool:
        """LoCon adds the 3x3 convs; LoHa and LoKr train them too, as LyCORIS does."""
        return self.network != "LoRA"

    @property
    def static_captions(self) -> bool:
        """Captions are the same every epoch, so text-encoder outputs can be cached."""
        return not self.caption_shuffle and self.caption_dropout == 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any]) -> "TrainingSettings":
        """Settings from node inputs, ignoring inputs that are not settings (model, dataset...)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in inputs.items() if name in names})
