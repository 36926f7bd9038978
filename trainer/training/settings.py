"""Training settings: one validated, immutable value built from the node's inputs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import SettingsError
from ..finite import require_finite
from ..setting_fields import check_choices, setting
from .networks import Network, network, network_names
from .flow_matching import LOSS_WEIGHTINGS, TIMESTEP_SAMPLERS
from .optim import OPTIMIZERS, SCHEDULERS
from .precision import PRECISIONS


FAMILY_DEFAULT = "family default"


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that decides what a run computes: each field is also Train LoRA's input of that name, in
    this order (saved workflows depend on it). Defaults follow kohya's sd-scripts where sensible."""

    network: str = setting("LoRA", choices=network_names)
    rank: int = setting(16, min=1, max=256)
    alpha: float = setting(0.0, "0 = rank / 2", min=0.0, max=256.0, step=0.5)
    conv_rank: int = setting(8, "LoCon/LoHa/LoKr: rank of 3x3 convs", min=1, max=256)
    conv_alpha: float = setting(0.0, "0 = conv_rank / 2", min=0.0, max=256.0, step=0.5)
    epochs: int = setting(10, min=1, max=10000)
    batch_size: int = setting(1, min=1, max=64)
    gradient_accumulation: int = setting(1, min=1, max=256)
    resolution: int = setting(0, "0 = the model family's native size (512 SD1.5, 768 SD2-v, 1024 SDXL, 32 toy world); "
                                 "a multiple of 64 for SD models", min=0, max=4096, step=8)
    unet_lr: float = setting(1e-4, min=0.0, max=10.0, step=1e-6, round=False)
    text_encoder_lr: float = setting(0.0, "0 = text encoder frozen", min=0.0, max=10.0, step=1e-6, round=False)
    optimizer: str = setting("AdamW", choices=OPTIMIZERS)
    lr_scheduler: str = setting("constant", choices=SCHEDULERS)
    warmup_steps: int = setting(0, min=0, max=100000)
    mixed_precision: str = setting("auto", "auto: bf16 where the device computes it natively, fp16 with loss scaling "
                                           "on older NVIDIA GPUs, fp32 on CPU", choices=PRECISIONS)
    gradient_checkpointing: bool = setting(True)
    seed: int = setting(42, min=0, max=0xFFFFFFFF, widget={"control_after_generate": False})
    noise_offset: float = setting(0.0, min=0.0, max=1.0, step=0.01)
    min_snr_gamma: float = setting(5.0, "0 = off", min=0.0, max=20.0, step=0.5)
    caption_shuffle: bool = setting(False)
    keep_tokens: int = setting(1, min=0, max=32)
    caption_dropout: float = setting(0.0, min=0.0, max=1.0, step=0.01)
    flip_augment: bool = setting(False)
    save_every_n_epochs: int = setting(1, "Keep the adapter of every Nth epoch (0 = final only)", min=0, max=10000)
    validation_split: float = setting(0.0, min=0.0, max=0.5, step=0.05)
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0 = off), as kohya's default", node_input=False)
    # Flow-matching models only (Flux, Chroma, SD3): optional inputs, appended after the run options.
    timestep_sampling: str = setting(FAMILY_DEFAULT, "Flow-matching models: how noise levels are drawn, as kohya's "
                                     "timestep_sampling (family default: shift for Flux, sigmoid for Chroma, the "
                                     "model's own schedule for SD3)", choices=(FAMILY_DEFAULT, *TIMESTEP_SAMPLERS),
                                     optional=True)
    sigmoid_scale: float = setting(1.0, "Spread of the sigmoid, shift and flux_shift samplers (larger: closer to "
                                        "uniform)", min=0.1, max=10.0, step=0.1, optional=True)
    discrete_flow_shift: float = setting(0.0, "The shift sampler's shift (kohya's discrete_flow_shift): higher trains "
                                              "at more noise (0 = the family's: 3.1582 Flux, 2.2 Qwen-Image)",
                                         min=0.0, max=20.0, step=0.0001, optional=True)
    weighting_scheme: str = setting("none", "Flow-matching models: loss weight per noise level, the SD3 paper's "
                                            "densities", choices=LOSS_WEIGHTINGS, optional=True)
    guidance_scale: float = setting(1.0, "Flux dev: the guidance embedding's value while training (kohya's "
                                         "guidance_scale, 1.0); samples use FluxGuidance 3.5", min=0.0, max=100.0,
                                    step=0.1, optional=True)

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            if item.type == "float":
                require_finite(item.name, getattr(self, item.name))
        check_choices(self)
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
        if self.discrete_flow_shift < 0:
            raise SettingsError(f"discrete_flow_shift {self.discrete_flow_shift} is negative: use 0 for the family's "
                                "shift, or a positive shift (higher trains at more noise).")

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
    def network_type(self) -> Network:
        return network(self.network)

    @property
    def trains_convs(self) -> bool:
        return self.network_type.trains_convs

    @property
    def static_captions(self) -> bool:
        """Captions are the same every epoch, so text-encoder outputs can be cached."""
        return not self.caption_shuffle and self.caption_dropout == 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
