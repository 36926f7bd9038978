"""The kohya key table: for each kohya sd-scripts key LoRA Lab reads, the node input it sets and how.

Every key means what it means to kohya (train_network.py's arguments, library/config_util.py's dataset schema).
Where kohya's default differs from the node's (alpha 1, no min-SNR weighting, `.caption` files...), a config that
leaves the key out gets kohya's default, so the run computes what kohya would. A key kohya has but LoRA Lab cannot
train is accepted only at the value LoRA Lab trains (else refused by name); one that cannot change the trained
LoRA is named in a note and ignored. The README's key table is generated from this one (`readme_table`).
"""
from __future__ import annotations

import math
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TRAIN, DATASET, SAVE, COMMAND = "Train LoRA", "Load Dataset", "Save LoRA", "command"
NODE_TYPES = {TRAIN: "LoraLabTrainLoRA", DATASET: "LoraLabLoadDataset", SAVE: "LoraLabSaveLoRA"}
COMMAND_LINE = "the command line"
NO_DEFAULT = object()
OPTIMIZERS = {"adamw": "AdamW", "adamw8bit": "AdamW8bit"}  # kohya's optimizer_type, lower-cased -> ours
SCHEDULERS = (  # the node's choices (tests/test_kohya_config.py holds them equal)
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
SAVE_PRECISIONS = {"float": "fp32", "fp16": "fp16", "bf16": "bf16"}
LYCORIS_ALGOS = {"lora": "LoCon", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}  # lycoris.kohya algo -> network
CAPTION_EXTENSIONS = (".txt", ".caption")
BUCKET_STEP = 64  # SD families' bucket grid (trainer.models.families)


class KohyaConfigError(ValueError):
    """A kohya setting LoRA Lab cannot train as kohya would; the message names it and says what to do."""


@dataclass(frozen=True)
class Value:
    """A kohya setting's value and where it was set (for messages)."""

    value: Any
    origin: str


Settings = dict[str, Value]


@dataclass
class KohyaRun:
    """One config's node inputs: `inputs[(node, input)]`, plus what the user should know about the conversion."""

    name: str
    inputs: dict[tuple[str, str], Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def node_inputs(self, node: str) -> dict[str, Any]:
        return {name: value for (owner, name), value in self.inputs.items() if owner == node}

    def get(self, node: str, name: str, default: Any = None) -> Any:
        return self.inputs.get((node, name), default)


Converter = Callable[[Any, str, Settings, KohyaRun], None]


@dataclass(frozen=True)
class KohyaKey:
    """One kohya key: what it sets (`target`, for the README), how (`convert`), kohya's value when it is absent."""

    name: str
    target: str
    convert: Converter
    kohya_default: Any = NO_DEFAULT
    note: str = ""


# ---------------------------------------------------------------- converters


def _to(node: str, name: str, kind: Callable[[Any], Any] = lambda value: value,
        also: tuple[str, str] | None = None) -> Converter:
    """The value, typed by `kind`, into one node input (and `also` another, e.g. Load Dataset's copy for its report)."""
    def convert(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
        typed = _typed(kind, value, key, settings)
        for target in [(node, name)] + ([also] if also else []):
            run.inputs[target] = typed
    return convert


def _typed(kind: Callable[[Any], Any], value: Any, key: str, settings: Settings) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError) as error:
        raise KohyaConfigError(f"{where(key, settings)}: {value!r} is not a valid value ({error}).") from None


def _number(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _whole(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError("expected a whole number")
    return int(float(value))


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError("expected true or false")
    return text == "true"


def _choice(choices: dict[str, str] | tuple[str, ...], what: str) -> Callable[[Any], str]:
    def pick(value: Any) -> str:
        text = str(value).strip()
        found = choices.get(text.lower()) if isinstance(choices, dict) else (text if text in choices else None)
        if found is None:
            raise ValueError(f"LoRA Lab trains {what} {', '.join(choices)}")
        return found
    return pick


def _accepting(accepted: Any, why: str) -> Converter:
    """A kohya setting LoRA Lab has no input for: its one value (what LoRA Lab does) passes, any other is refused."""
    def convert(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
        if _same(value, accepted):
            return
        raise KohyaConfigError(f"{where(key, settings)} = {value!r} would change the result and LoRA Lab cannot "
                               f"train it: {why}. Remove it (LoRA Lab uses {accepted!r}) or train this config with kohya.")
    return convert


def _ignored(why: str) -> Converter:
    """A setting that cannot change the trained LoRA here: named in a note, then ignored."""
    def convert(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
        if is_off(value):
            return
        run.notes.append(f"{where(key, settings)} is ignored: {why}.")
    return convert


def _same(value: Any, accepted: Any) -> bool:
    if isinstance(accepted, bool) or isinstance(value, bool):
        return value is accepted or str(value).lower() == str(accepted).lower()
    if isinstance(accepted, (int, float)):
        try:
            return float(value) == float(accepted)
        except (TypeError, ValueError):
            return False
    return value == accepted


def is_off(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


def _resolution(value: Any) -> int:
    """kohya's resolution: `512` or `"512,512"`; LoRA Lab trains square buckets of one side's area."""
    parts = [part.strip() for part in str(value).strip("()[] ").split(",")] if not isinstance(value, (int, list)) else (
        [value] if isinstance(value, int) else value)
    sides = {_whole(part) for part in parts}
    if len(sides) != 1:
        raise ValueError("LoRA Lab trains at a square resolution (buckets of its area); give one side, e.g. 512")
    return sides.pop()


_batch_size = _to(TRAIN, "batch_size", _whole, also=(DATASET, "batch_size"))


def _guide_batch_size(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    """`batch_size` in a --config_file is not a kohya argument (kohya trains such a config at batch 1)."""
    if "train_batch_size" in settings:
        run.notes.append(f"{where(key, settings)} is not a kohya argument; train_batch_size is set too and wins.")
        return
    _batch_size(value, key, settings, run)
    run.notes.append(f"{where(key, settings)} is not a kohya argument (kohya would silently train at batch 1); "
                     f"LoRA Lab trains at batch {value} as meant. Rename it train_batch_size to say so in kohya too.")


def _max_train_steps(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    if "max_train_epochs" in settings:
        run.notes.append(f"{where(key, settings)} is ignored: max_train_epochs is set and wins, as in kohya.")
        return
    raise KohyaConfigError(f"{where(key, settings)}: LoRA Lab counts training in epochs; set max_train_epochs "
                           "(steps per epoch = images x repeats / batch size) instead of max_train_steps.")


def _learning_rates(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    """kohya: learning_rate is the default of unet_lr and text_encoder_lr; the text encoder trains unless told not to.

    text_encoder_lr may be a list (kohya's lora.py uses its first value).
    """
    base = _typed(_number, value, key, settings)
    unet = _typed(_number, value_of(settings, "unet_lr", base), "unet_lr", settings)
    text_value = value_of(settings, "text_encoder_lr", base)
    text_value = text_value[0] if isinstance(text_value, list) and text_value else text_value
    text = _typed(_number, text_value, "text_encoder_lr", settings)
    if _typed(_flag, value_of(settings, "network_train_unet_only", False), "network_train_unet_only", settings):
        text = 0.0
    if _typed(_flag, value_of(settings, "network_train_text_encoder_only", False), "network_train_text_encoder_only",
              settings):
        unet = 0.0
    run.inputs[(TRAIN, "unet_lr")] = unet
    run.inputs[(TRAIN, "text_encoder_lr")] = text


def _read_with_another_key(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    """Read by the converter of the key it goes with (learning_rate, network_module), which always runs."""


def _warmup(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    """Warm-up in kohya's steps, scaled to this run's steps: the same number of images as kohya would warm up over.

    kohya counts steps of its own batch size (train_batch_size, 1 when the config only has the guide's
    `batch_size`); a run at another batch size takes fewer or more steps for the same images.
    """
    if isinstance(value, float) and not float(value).is_integer():
        raise KohyaConfigError(f"{where(key, settings)} is a fraction of the run; LoRA Lab's warmup_steps is a step "
                               "count: give the number of steps.")
    steps = _typed(_whole, value, key, settings)
    kohya_batch = _typed(_whole, value_of(settings, "train_batch_size", 1), "train_batch_size", settings)
    ours = run.get(TRAIN, "batch_size", kohya_batch)
    scaled = round(steps * kohya_batch / ours)
    run.inputs[(TRAIN, "warmup_steps")] = scaled
    if scaled != steps:
        run.notes.append(f"{where(key, settings)} counts kohya's steps of batch {kohya_batch}; at batch {ours} the "
                         f"same {steps * kohya_batch} images take {scaled} steps, so warmup_steps is {scaled}.")


def _network(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    """network_module and network_args together: networks.lora is LoRA, lycoris.kohya's `algo` picks the rest."""
    module = str(value).strip()
    args = _network_args(settings)
    if module == "networks.lora":
        if "algo" in args:
            raise KohyaConfigError(f"network_args algo={args['algo']} is an option of lycoris.kohya, but "
                                   f"{where(key, settings)} is networks.lora; set network_module = \"lycoris.kohya\".")
        network = "LoCon" if "conv_dim" in args else "LoRA"
        if network == "LoCon":
            run.notes.append(f"{where(key, settings)} with conv_dim trains the 3x3 convs too: LoRA Lab's LoCon "
                             "(same maths, saved with lycoris.kohya's key names).")
    elif module == "lycoris.kohya":
        algo = args.pop("algo", "lora").lower()
        if algo not in LYCORIS_ALGOS:
            raise KohyaConfigError(f"network_args algo={algo}: LoRA Lab trains the LyCORIS algos "
                                   f"{', '.join(LYCORIS_ALGOS)}; choose one of them or train this config with kohya.")
        network = LYCORIS_ALGOS[algo]
    else:
        raise KohyaConfigError(f"{where(key, settings)} = {module!r}: LoRA Lab trains networks.lora and "
                               "lycoris.kohya (algo=locon, loha or lokr in network_args).")
    for name, target in (("conv_dim", "conv_rank"), ("conv_alpha", "conv_alpha")):
        if name in args:
            kind = _whole if name == "conv_dim" else _number
            run.inputs[(TRAIN, target)] = _typed(kind, args.pop(name), "network_args", settings)
    if args:
        raise KohyaConfigError(f"network_args {', '.join(f'{k}={v}' for k, v in args.items())}: LoRA Lab has no such "
                               "network option (it reads algo, conv_dim and conv_alpha); remove it or train with kohya.")
    run.inputs[(TRAIN, "network")] = network


def _network_args(settings: Settings) -> dict[str, str]:
    raw = value_of(settings, "network_args", [])
    items = raw.split() if isinstance(raw, str) else list(raw)
    args = {}
    for item in items:
        name, equals, value = str(item).partition("=")
        if not equals:
            raise KohyaConfigError(f"network_args {item!r}: expected name=value, e.g. \"algo=loha\".")
        args[name.strip()] = value.strip()
    return args


def _optimizer(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    name = str(value).strip() or "AdamW"
    if name.lower() not in OPTIMIZERS:
        raise KohyaConfigError(
            f"{where(key, settings)} = {name!r}: LoRA Lab trains kohya's {', '.join(OPTIMIZERS.values())} with "
            "kohya's own defaults; its other optimizers use other defaults than kohya's, which would change the "
            "result. Choose one of those, or use the node's optimizer input in a workflow knowing it differs.")
    run.inputs[(TRAIN, "optimizer")] = OPTIMIZERS[name.lower()]


def _save_model_as(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    if str(value).strip().lower() != "safetensors":
        raise KohyaConfigError(f"{where(key, settings)} = {value!r}: LoRA Lab writes safetensors only (no pickle); "
                               "set save_model_as = \"safetensors\".")


def _sample_prompts(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    path = path_from(value, key, settings)
    if path.suffix.lower() != ".txt":
        raise KohyaConfigError(f"{where(key, settings)}: LoRA Lab reads kohya's .txt prompt files (one prompt per "
                               f"line with --n --w --h --d --l --s); {path.name} is not one.")
    try:
        run.inputs[(TRAIN, "sample_prompts")] = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KohyaConfigError(f"{where(key, settings)}: cannot read {path} ({error}).") from None


def _path_to(node: str, name: str) -> Converter:
    def convert(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
        run.inputs[(node, name)] = str(path_from(value, key, settings))
    return convert


def path_from(value: Any, key: str, settings: Settings) -> pathlib.Path:
    """A path as kohya reads it: relative to the folder the command runs in."""
    text = str(value).strip()
    if not text:
        raise KohyaConfigError(f"{where(key, settings)} is empty.")
    return pathlib.Path(text).expanduser().absolute()


def _safetensors_file(name: str, what: str) -> Converter:
    """A model file the command loads: single-file .safetensors only (no pickle, no diffusers folder or hub id)."""
    def convert(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
        path = path_from(value, key, settings)
        if path.suffix.lower() not in (".safetensors", ".sft"):
            raise KohyaConfigError(f"{where(key, settings)} = {str(value)!r}: LoRA Lab loads a single-file .safetensors "
                                   f"{what} (no diffusers folder, Hugging Face id or pickled .ckpt); convert it, or "
                                   "point at the .safetensors file.")
        run.inputs[(COMMAND, name)] = str(path)
    return convert


def _buckets_on(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    if not _typed(_flag, value, key, settings):
        raise KohyaConfigError(f"{where(key, settings)} = false: LoRA Lab always trains in aspect-ratio buckets "
                               "(kohya's enable_bucket = true); remove the key or set it to true.")


def _bucket_side(which: int) -> Converter:
    """min/max_bucket_reso: LoRA Lab's buckets span half to twice the resolution (kohya's 256/1024 at 512)."""
    def convert(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
        resolution = _typed(_resolution, value_of(settings, "resolution", 512), "resolution", settings)
        expected = _bucket_limits(resolution)[which]
        if _typed(_whole, value, key, settings) != expected:
            raise KohyaConfigError(f"{where(key, settings)} = {value}: LoRA Lab's buckets at resolution {resolution} "
                                   f"span {_bucket_limits(resolution)[0]} to {_bucket_limits(resolution)[1]} px "
                                   f"(kohya's 256/1024 scaled to the resolution); set {key} = {expected} or remove it.")
    return convert


def _bucket_limits(resolution: int) -> tuple[int, int]:
    from trainer.data.buckets import default_side_limits  # pure maths, importable without ComfyUI

    return default_side_limits(resolution, BUCKET_STEP)


def _flip(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    """One flip_aug for the dataset, or (a dataset config whose subsets differ) one per kind of subset."""
    if isinstance(value, dict):
        for kind, flip in value.items():
            run.inputs[(COMMAND, f"flip_{kind}")] = _typed(_flag, flip, key, settings)
        return
    run.inputs[(TRAIN, "flip_augment")] = _typed(_flag, value, key, settings)


def _caption_extension(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    text = str(value).strip()
    text = text if text.startswith(".") else f".{text}"
    if text not in CAPTION_EXTENSIONS:
        raise KohyaConfigError(f"{where(key, settings)} = {value!r}: LoRA Lab reads captions from "
                               f"{' or '.join(CAPTION_EXTENSIONS)} files; rename the caption files or the setting.")
    run.inputs[(DATASET, "caption_extension")] = text


def _save_every(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    every = _typed(_whole, value or 0, key, settings)
    run.inputs[(TRAIN, "save_every_n_epochs")] = every
    run.inputs[(SAVE, "epochs")] = "all" if every else "final"


def _alpha(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    alpha = _typed(_number, value, key, settings)
    if alpha <= 0:  # kohya: alpha 0 or None means alpha = rank; the node's 0 means rank / 2
        alpha = float(run.get(TRAIN, "rank", KOHYA_DEFAULT_RANK))
    run.inputs[(TRAIN, "alpha")] = alpha


def _min_snr(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    run.inputs[(TRAIN, "min_snr_gamma")] = 0.0 if value is None else _typed(_number, value, key, settings)


def _checked_later(value: Any, key: str, settings: Settings, run: KohyaRun) -> None:
    """v2 / v_parameterization: ComfyUI reads the model type from the checkpoint; the command checks they agree."""
    run.inputs[(COMMAND, key)] = _typed(_flag, value, key, settings)


def value_of(settings: Settings, key: str, default: Any) -> Any:
    return settings[key].value if key in settings else default


def where(key: str, settings: Settings) -> str:
    origin = settings[key].origin if key in settings else "kohya's default"
    return f"{key} ({origin})"


# ---------------------------------------------------------------- the table


def _ignored_keys(why: str, *names: str) -> list[KohyaKey]:
    return [KohyaKey(name, "(ignored)", _ignored(why)) for name in names]


KOHYA_DEFAULT_LEARNING_RATE = 2e-6
KOHYA_DEFAULT_RANK = 4
KOHYA_DEFAULT_NETWORK = "networks.lora"

_KEYS = [
    # model
    KohyaKey("pretrained_model_name_or_path", "command: checkpoint", _safetensors_file("checkpoint", "checkpoint"),
             note="a .safetensors checkpoint file"),
    KohyaKey("vae", "command: VAE", _safetensors_file("vae", "VAE"),
             note="a .safetensors VAE file, used instead of the checkpoint's"),
    KohyaKey("v2", "command: checked", _checked_later, note="ComfyUI detects it from the checkpoint; a mismatch is refused"),
    KohyaKey("v_parameterization", "command: checked", _checked_later,
             note="ComfyUI detects it from the checkpoint; a mismatch is refused"),
    # dataset
    KohyaKey("train_data_dir", "Load Dataset.path", _path_to(DATASET, "path"),
             note="a folder of N_name subfolders (or of images), as in kohya"),
    KohyaKey("reg_data_dir", "Load Dataset.regularization_path", _path_to(DATASET, "regularization_path")),
    KohyaKey("image_dir", "Load Dataset.path", _path_to(DATASET, "path"), note="dataset config: the training subset"),
    KohyaKey("reg_image_dir", "Load Dataset.regularization_path", _path_to(DATASET, "regularization_path"),
             note="dataset config: the subset with is_reg = true"),
    KohyaKey("num_repeats", "Load Dataset.repeats", _to(DATASET, "repeats", _whole), 1,
             note="dataset config; N_name folders carry their own"),
    KohyaKey("class_tokens", "Load Dataset.class_tokens", _to(DATASET, "class_tokens", str), ""),
    KohyaKey("resolution", "Train LoRA.resolution, Load Dataset.base_resolution", _to(TRAIN, "resolution", _resolution, also=(DATASET, "base_resolution")), note="512 or \"512,512\" (square only)"),
    KohyaKey("train_batch_size", "Train LoRA.batch_size (and Load Dataset's)", _batch_size, 1),
    KohyaKey("batch_size", "Train LoRA.batch_size (and Load Dataset's)", _guide_batch_size,
             note="not a kohya argument in --config_file (kohya trains at batch 1): applied as meant, with a note; "
                  "in a dataset config it is kohya's batch size"),
    KohyaKey("enable_bucket", "(always on)", _buckets_on, note="LoRA Lab always buckets; false is refused"),
    KohyaKey("min_bucket_reso", "(checked)", _bucket_side(0), note="must be half the resolution (256 at 512)"),
    KohyaKey("max_bucket_reso", "(checked)", _bucket_side(1), note="must be twice the resolution (1024 at 512)"),
    KohyaKey("bucket_reso_steps", "(checked)", _accepting(BUCKET_STEP, "LoRA Lab's SD buckets step by 64 px")),
    KohyaKey("bucket_no_upscale", "(refused if true)", _accepting(False, "LoRA Lab scales every image to its bucket")),
    KohyaKey("caption_extension", "Load Dataset.caption_extension", _caption_extension, ".caption"),
    KohyaKey("keep_tokens", "Train LoRA.keep_tokens", _to(TRAIN, "keep_tokens", _whole), 0),
    KohyaKey("shuffle_caption", "Train LoRA.caption_shuffle", _to(TRAIN, "caption_shuffle", _flag), False),
    KohyaKey("caption_dropout_rate", "Train LoRA.caption_dropout", _to(TRAIN, "caption_dropout", _number), 0.0),
    KohyaKey("flip_aug", "Train LoRA.flip_augment", _flip, False,
             note="a dataset config may flip only the regularization subset, or only the training one (the command "
                  "flips those images; a workflow cannot)"),
    KohyaKey("validation_split", "Train LoRA.validation_split", _to(TRAIN, "validation_split", _number), 0.0),
    KohyaKey("color_aug", "(refused if true)", _accepting(False, "LoRA Lab has no colour augmentation")),
    KohyaKey("random_crop", "(refused if true)", _accepting(False, "LoRA Lab centre-crops to the bucket")),
    KohyaKey("cache_latents", "(ignored)", _ignored("LoRA Lab always encodes each image once")),
    KohyaKey("cache_latents_to_disk", "(ignored)", _ignored("LoRA Lab keeps latents in memory")),
    KohyaKey("max_data_loader_n_workers", "(ignored)", _ignored("it changes speed only")),
    KohyaKey("persistent_data_loader_workers", "(ignored)", _ignored("it changes speed only")),
    # network
    KohyaKey("network_module", "Train LoRA.network", _network, KOHYA_DEFAULT_NETWORK,
             note="networks.lora (with conv_dim: LoCon) or lycoris.kohya with algo=locon|loha|lokr"),
    KohyaKey("network_args", "Train LoRA.network, conv_rank, conv_alpha", _read_with_another_key,
             note="algo, conv_dim, conv_alpha; others are refused"),
    KohyaKey("network_dim", "Train LoRA.rank", _to(TRAIN, "rank", _whole), KOHYA_DEFAULT_RANK),
    KohyaKey("network_alpha", "Train LoRA.alpha", _alpha, 1.0, note="kohya's default is 1 (not rank / 2)"),
    # optimisation
    KohyaKey("learning_rate", "Train LoRA.unet_lr and text_encoder_lr", _learning_rates, KOHYA_DEFAULT_LEARNING_RATE,
             note="the default of both, as in kohya (the text encoder trains unless network_train_unet_only)"),
    KohyaKey("unet_lr", "Train LoRA.unet_lr", _read_with_another_key),
    KohyaKey("text_encoder_lr", "Train LoRA.text_encoder_lr", _read_with_another_key),
    KohyaKey("network_train_unet_only", "Train LoRA.text_encoder_lr = 0", _read_with_another_key),
    KohyaKey("network_train_text_encoder_only", "Train LoRA.unet_lr = 0", _read_with_another_key),
    KohyaKey("optimizer_type", "Train LoRA.optimizer", _optimizer, "AdamW", note="AdamW or AdamW8bit"),
    KohyaKey("optimizer_args", "(refused unless empty)",
             _accepting([], "LoRA Lab's optimizers take kohya's default arguments")),
    KohyaKey("lr_scheduler", "Train LoRA.lr_scheduler", _to(TRAIN, "lr_scheduler", _choice(SCHEDULERS, "lr_scheduler")),
             "constant"),
    KohyaKey("lr_warmup_steps", "Train LoRA.warmup_steps", _warmup, 0,
             note="scaled to the run's batch size: the same number of images as in kohya"),
    KohyaKey("lr_scheduler_num_cycles", "(checked)", _accepting(1, "LoRA Lab's schedules have one cycle")),
    KohyaKey("lr_scheduler_power", "(checked)", _accepting(1.0, "LoRA Lab's polynomial schedule has power 1")),
    KohyaKey("max_train_epochs", "Train LoRA.epochs (and Load Dataset's epochs)",
             _to(TRAIN, "epochs", _whole, also=(DATASET, "epochs")), note="required"),
    KohyaKey("max_train_steps", "(refused without max_train_epochs)", _max_train_steps),
    KohyaKey("gradient_accumulation_steps", "Train LoRA.gradient_accumulation",
             _to(TRAIN, "gradient_accumulation", _whole), 1),
    KohyaKey("gradient_checkpointing", "Train LoRA.gradient_checkpointing", _to(TRAIN, "gradient_checkpointing", _flag),
             note="memory only; LoRA Lab's default is on"),
    KohyaKey("mixed_precision", "Train LoRA.mixed_precision", _to(TRAIN, "mixed_precision", _choice(PRECISIONS, "mixed_precision")), "no",
             note="no = fp32; fp16/bf16 on a CPU become fp32 with a note"),
    KohyaKey("full_fp16", "(refused if true)", _accepting(False, "LoRA Lab keeps the adapter in fp32")),
    KohyaKey("full_bf16", "(refused if true)", _accepting(False, "LoRA Lab keeps the adapter in fp32")),
    KohyaKey("seed", "Train LoRA.seed", _to(TRAIN, "seed", _whole), note="absent: 42 (kohya draws a random seed)"),
    KohyaKey("noise_offset", "Train LoRA.noise_offset", _to(TRAIN, "noise_offset", _number), 0.0),
    KohyaKey("min_snr_gamma", "Train LoRA.min_snr_gamma", _min_snr, None, note="absent: off, as in kohya"),
    KohyaKey("max_grad_norm", "(checked)", _accepting(1.0, "LoRA Lab clips gradients at norm 1.0")),
    KohyaKey("clip_skip", "(checked)", _accepting(1, "LoRA Lab trains on the text encoder's last layer")),
    KohyaKey("max_token_length", "(checked)", _accepting(75, "LoRA Lab encodes captions as ComfyUI does")),
    KohyaKey("prior_loss_weight", "(checked)", _accepting(1.0, "LoRA Lab weighs regularization images 1.0")),
    KohyaKey("loss_type", "(checked)", _accepting("l2", "LoRA Lab trains with the l2 loss")),
    # output
    KohyaKey("output_dir", "command: output folder", _path_to(COMMAND, "output_dir"),
             note="LoRA files, loss chart, dataset report, training state and samples go here"),
    KohyaKey("output_name", "Save LoRA.filename_prefix", _to(SAVE, "filename_prefix", str), "last"),
    KohyaKey("save_model_as", "(checked)", _save_model_as, note="safetensors only"),
    KohyaKey("save_precision", "Save LoRA.dtype", _to(SAVE, "dtype", _choice(SAVE_PRECISIONS, "save_precision")),
             "float"),
    KohyaKey("save_every_n_epochs", "Train LoRA.save_every_n_epochs, Save LoRA.epochs", _save_every, 0,
             note="each kept epoch is written as NAME-00000N.safetensors, as kohya names them"),
    KohyaKey("save_state", "Train LoRA.keep_training_state", _to(TRAIN, "keep_training_state", _flag), False),
    KohyaKey("resume", "Train LoRA.resume_from", _to(TRAIN, "resume_from", str),
             note="the training state printed when a run was cancelled (kohya's accelerate state folders are not read)"),
    KohyaKey("save_last_n_epochs", "(ignored)", _ignored("LoRA Lab never deletes the LoRA files it wrote")),
    KohyaKey("sample_prompts", "Train LoRA.sample_prompts", _sample_prompts, note="a kohya .txt prompt file"),
    KohyaKey("sample_every_n_epochs", "Train LoRA.sample_every_n_epochs", _to(TRAIN, "sample_every_n_epochs", _whole)),
    KohyaKey("sample_sampler", "(ignored)", _ignored("samples are rendered with euler (the trained LoRA is the same)")),
    KohyaKey("training_comment", "(ignored)", _ignored("LoRA Lab's metadata records the settings themselves")),
    *_ignored_keys("LoRA Lab draws its own loss chart", "logging_dir", "log_with", "log_prefix"),
    *_ignored_keys("ComfyUI picks the attention kernel; it changes speed only", "xformers", "sdpa", "mem_eff_attn"),
    *_ignored_keys("ComfyUI manages memory", "lowram", "highvram"),
    KohyaKey("vae_batch_size", "(ignored)", _ignored("it changes speed only")),
    KohyaKey("no_half_vae", "(ignored)", _ignored("ComfyUI picks the VAE's precision")),
]
KOHYA_KEYS: dict[str, KohyaKey] = {key.name: key for key in _KEYS}
# Converted first: other keys read what these set (rank before alpha, batch size before warm-up).
ORDER = ("resolution", "train_batch_size", "batch_size", "network_dim", "network_module")


def readme_table() -> str:
    """The README's kohya key table, generated from KOHYA_KEYS (tests/test_kohya_config.py checks the README has it)."""
    lines = ["| kohya key | LoRA Lab | when absent | notes |", "|---|---|---|---|"]
    for key in _KEYS:
        default = "" if key.kohya_default is NO_DEFAULT else f"`{key.kohya_default!r}`"
        lines.append(f"| `{key.name}` | {key.target} | {default} | {key.note} |")
    return "\n".join(lines)
