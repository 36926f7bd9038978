"""kohya sd-scripts' settings as LoRA Lab node inputs: `--config_file` TOML, `--dataset_config` TOML and flags.

kohya's train_network.py flattens the sections of `--config_file` into its arguments (section names mean nothing,
a key that is not an argument is silently ignored) and lets flags on the command line win. Each key then goes
through the key table (kohya_keys.KOHYA_KEYS); a key that is not in it is refused by name unless its value is off
(false, 0, empty), which is what LoRA Lab trains anyway.
"""
from __future__ import annotations

import difflib
import pathlib
import tomllib
from typing import Any

from .kohya_keys import (COMMAND_LINE, KOHYA_KEYS, NO_DEFAULT, ORDER, TRAIN, KohyaConfigError,
                         KohyaRun, Settings, Value, is_off, path_from, where)

SUBSET_OPTIONS = ("caption_extension", "keep_tokens", "shuffle_caption", "flip_aug", "color_aug", "random_crop",
                  "caption_dropout_rate", "caption_prefix", "caption_suffix")




def read_config_file(path: pathlib.Path) -> Settings:
    """A `--config_file` TOML, flattened as kohya flattens it (each key remembers its file and section)."""
    data = _read_toml(path)
    settings: Settings = {}
    for section, content in data.items():
        if isinstance(content, dict):
            for key, value in content.items():
                settings[key] = Value(value, f"{path.name} [{section}]")
        else:
            settings[section] = Value(content, path.name)
    return settings


def read_dataset_config(path: pathlib.Path) -> Settings:
    """A `--dataset_config` TOML ([general] -> [[datasets]] -> [[datasets.subsets]], inherited downwards) as the
    settings of one Load Dataset: one training subset (or sibling N_name subsets) and at most one regularization one."""
    data = _read_toml(path)
    datasets = data.get("datasets", [])
    if len(datasets) != 1:
        raise KohyaConfigError(f"{path.name}: LoRA Lab trains one [[datasets]] per LoRA (found {len(datasets)}); "
                               "split it into one dataset config per LoRA.")
    general = {key: value for key, value in data.get("general", {}).items()}
    dataset = {**general, **{key: value for key, value in datasets[0].items() if key != "subsets"}}
    subsets = [{**dataset, **subset} for subset in datasets[0].get("subsets", [])]
    if not subsets:
        raise KohyaConfigError(f"{path.name}: the dataset has no [[datasets.subsets]] with an image_dir.")
    origin = f"{path.name} [[datasets]]"
    settings = {key: Value(value, origin) for key, value in dataset.items() if key not in SUBSET_OPTIONS}
    if "batch_size" in settings:  # kohya's own batch size in a dataset config
        settings["train_batch_size"] = settings.pop("batch_size")
    training = [subset for subset in subsets if not subset.get("is_reg")]
    regularization = [subset for subset in subsets if subset.get("is_reg")]
    for key in SUBSET_OPTIONS:
        values = {repr(subset.get(key)) for subset in subsets}
        if values == {"None"}:
            continue
        origin = f"{path.name} subsets"
        if len(values) == 1:
            settings[key] = Value(subsets[0][key], origin)
        elif key == "flip_aug" and _same_within(training, key) and _same_within(regularization, key):
            settings[key] = Value({"training": bool(training[0].get(key)),
                                   "regularization": bool(regularization[0].get(key))}, origin)
        else:
            raise KohyaConfigError(f"{path.name}: {key} differs between subsets; LoRA Lab applies it to the whole "
                                   f"dataset{' (flip_aug: or to all training / all regularization subsets)' if key == 'flip_aug' else ''}. "
                                   f"Give every subset the same {key} (in [general]).")
    settings.update(_placed(training, "image_dir", path, f"{path.name} subsets"))
    if len(regularization) > 1:
        raise KohyaConfigError(f"{path.name}: LoRA Lab reads one regularization subset; put the regularization "
                               "images in N_name folders under one folder and give that folder.")
    for subset in regularization:
        settings.update(_placed([subset], "reg_image_dir", path, f"{path.name} subsets", regularization=True))
    return settings


def _same_within(subsets: list[dict[str, Any]], key: str) -> bool:
    return len({bool(subset.get(key)) for subset in subsets}) <= 1


def _placed(subsets: list[dict[str, Any]], key: str, path: pathlib.Path, origin: str,
            regularization: bool = False) -> Settings:
    """Load Dataset's path (and repeats, class tokens) for subsets: one folder as it is, several only as the kohya
    N_name subfolders of one parent (their names then carry the repeats and class tokens)."""
    if not subsets:
        raise KohyaConfigError(f"{path.name}: the dataset has no training subset (every subset has is_reg = true).")
    for subset in subsets:
        if "image_dir" not in subset:
            raise KohyaConfigError(f"{path.name}: a subset has no image_dir (LoRA Lab does not read metadata_file).")
    folders = [pathlib.Path(str(subset["image_dir"])) for subset in subsets]
    if len(subsets) == 1:
        subset = subsets[0]
        repeats, tokens = subset.get("num_repeats", 1), subset.get("class_tokens", "")
        if regularization:  # Load Dataset reads a regularization folder at 1 repeat with the dataset's class tokens
            if _named_as(folders[0], repeats, tokens):
                return {key: Value(str(folders[0].parent), origin)}
            if repeats != 1:
                raise KohyaConfigError(f"{path.name}: the regularization subset has num_repeats {repeats}; LoRA Lab "
                                       f"reads it at 1 unless its folder is named {repeats}_<class tokens>.")
            return {key: Value(str(folders[0]), origin)}
        return {key: Value(str(folders[0]), origin), "num_repeats": Value(repeats, origin),
                "class_tokens": Value(tokens, origin)}
    parents = {folder.parent for folder in folders}
    named = all(_named_as(folder, subset.get("num_repeats", 1), subset.get("class_tokens", ""))
                for folder, subset in zip(folders, subsets))
    if len(parents) != 1 or not named:
        raise KohyaConfigError(f"{path.name}: several subsets are read only as kohya N_name folders of one parent "
                               "folder (e.g. parent/10_sks dog, parent/5_dog), where each folder name gives the subset's "
                               "num_repeats and class_tokens. Move them so, or train one subset per LoRA.")
    return {key: Value(str(parents.pop()), origin)}


def _named_as(folder: pathlib.Path, repeats: Any, tokens: Any) -> bool:
    number, underscore, name = folder.name.partition("_")
    return bool(underscore) and number.isdigit() and int(number) == repeats and (not tokens or name == tokens)


def _read_toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise KohyaConfigError(f"{path}: cannot read the config ({error.strerror}).") from None
    except tomllib.TOMLDecodeError as error:
        raise KohyaConfigError(f"{path}: not a valid TOML file ({error}).") from None


# ---------------------------------------------------------------- conversion


def convert(settings: Settings, name: str, device_type: str | None = None) -> KohyaRun:
    """Node inputs for kohya `settings`; every refusal is collected and raised together.

    `device_type` is where the command will train ("cpu", "cuda"...); None when converting for a workflow.
    """
    run = KohyaRun(name)
    settings = dict(settings)
    problems = []
    for key in settings:
        if key in KOHYA_KEYS:
            continue
        if is_off(settings[key].value):
            run.notes.append(f"{where(key, settings)} = {settings[key].value!r} is ignored: LoRA Lab has no such "
                             "setting, and off is what it trains.")
        else:
            problems.append(_unknown(key, settings))
    ordered = [key for key in ORDER if key in KOHYA_KEYS] + [key for key in KOHYA_KEYS if key not in ORDER]
    for key in ordered:
        entry = KOHYA_KEYS[key]
        if key in settings:
            value = settings[key].value
        elif entry.kohya_default is not NO_DEFAULT:
            value = entry.kohya_default
        else:
            continue
        try:
            entry.convert(value, key, settings, run)
        except KohyaConfigError as error:
            problems.append(str(error))
    if (TRAIN, "epochs") not in run.inputs and not any("max_train" in problem for problem in problems):
        problems.append("max_train_epochs is not set: LoRA Lab counts training in epochs (kohya's default is 1600 "
                        "steps); add max_train_epochs = N.")
    if problems:
        raise KohyaConfigError(f"{name}: " + "\n  ".join(["cannot be trained as kohya would:"] + problems))
    if device_type is not None:
        _fit_to_device(run, device_type)
    return run


def _fit_to_device(run: KohyaRun, device_type: str) -> None:
    """What needs a GPU becomes its CPU equivalent, with a note, so a config written for a rented GPU runs here."""
    precision = run.get(TRAIN, "mixed_precision")
    if device_type == "cpu" and precision in ("fp16", "bf16"):
        run.inputs[(TRAIN, "mixed_precision")] = "fp32"
        run.notes.append(f"mixed_precision {precision}: this run is on the CPU, where {precision} is emulated and many "
                         "times slower (and fp16 needs a GPU's loss scaling), so it trains in fp32; the same config "
                         f"on a GPU trains in {precision}.")
    if device_type != "cuda" and run.get(TRAIN, "optimizer") == "AdamW8bit":
        run.inputs[(TRAIN, "optimizer")] = "AdamW"
        run.notes.append(f"optimizer_type AdamW8bit needs an NVIDIA GPU (bitsandbytes); on {device_type} it trains "
                         "with AdamW, the same maths with full-precision optimizer state.")


def _unknown(key: str, settings: Settings) -> str:
    value = settings[key].value
    close = difflib.get_close_matches(key, KOHYA_KEYS, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return (f"{where(key, settings)} = {value!r} is not a setting LoRA Lab reads (or not a kohya setting at all), and "
            f"it would change what kohya trains; remove it or train this config with kohya.{hint}")


def merge(*layers: Settings) -> Settings:
    """Later layers win: config file, then dataset config (kohya ignores train_data_dir then), then flags."""
    merged: Settings = {}
    for layer in layers:
        merged.update(layer)
    return merged


def parse_flags(words: list[str]) -> Settings:
    """kohya flags as they come after the command's own options: `--key value`, `--key v1 v2`, or a bare `--flag`."""
    settings: Settings = {}
    key = None
    values: list[str] = []

    def close() -> None:
        if key is not None:
            settings[key] = Value(True if not values else values[0] if len(values) == 1 and key != "network_args"
                                  else values, COMMAND_LINE)

    for word in words:
        if word.startswith("--"):
            close()
            name, equals, value = word[2:].partition("=")
            key, values = name.replace("-", "_"), ([value] if equals else [])
        elif key is None:
            raise KohyaConfigError(f"{word!r}: expected a kohya flag such as --network_dim 32.")
        else:
            values.append(word)
    close()
    return {key: Value(_scalar(value.value), value.origin) for key, value in settings.items()}


def _scalar(value: Any) -> Any:
    """A flag's text typed as TOML would type it (numbers, true/false); anything else stays text."""
    if not isinstance(value, str):
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def load_run(config: pathlib.Path | None, dataset_config: pathlib.Path | None, flags: Settings,
             device_type: str | None = None) -> KohyaRun:
    """One LoRA's node inputs from its config files and the command line's kohya flags."""
    layers = []
    if config is not None:
        layers.append(read_config_file(config))
    dataset_path = dataset_config
    if dataset_path is None and config is not None and "dataset_config" in layers[0]:
        dataset_path = path_from(layers[0]["dataset_config"].value, "dataset_config", layers[0])
    if dataset_path is not None:
        dataset = read_dataset_config(dataset_path)
        base = {key: value for key, value in (layers[0] if layers else {}).items()
                if key not in ("train_data_dir", "reg_data_dir", "dataset_config")}
        layers = [base, dataset]
    layers.append(flags)
    name = config.name if config is not None else "the command line"
    return convert(merge(*layers), name, device_type)

