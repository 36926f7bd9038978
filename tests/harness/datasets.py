"""Generated datasets: a small clean one for training tests and demos, and one with every problem
users' folders really have (for the loader and report tests). Also tiny real captioners (a WD14-shaped
ONNX tagger and a transformers BLIP) to put in a `models/captioners` folder.

Images are coloured shapes drawn with PIL, so they are deterministic, tiny and distinct from one
another; captions describe what is drawn.
"""
from __future__ import annotations

import io
import pathlib
import random
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 40),
           "purple": (140, 60, 180), "orange": (240, 130, 30), "black": (20, 20, 20), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle", "ring", "bar", "cross")


def draw_shape(size: tuple[int, int], shape: str, colour: str, background: str, seed: int) -> Image.Image:
    """A flat-colour shape at a seeded position and size on a flat background."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, COLOURS[background])
    draw = ImageDraw.Draw(image)
    extent = rng.uniform(0.3, 0.5) * min(size)
    cx, cy = rng.uniform(extent, width - extent), rng.uniform(extent, height - extent)
    box = (cx - extent, cy - extent, cx + extent, cy + extent)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - extent), (cx - extent, cy + extent), (cx + extent, cy + extent)], fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(extent / 3)))
    elif shape == "bar":
        draw.rectangle((0, cy - extent / 3, width, cy + extent / 3), fill=fill)
    elif shape == "cross":
        draw.rectangle((cx - extent / 4, cy - extent, cx + extent / 4, cy + extent), fill=fill)
        draw.rectangle((cx - extent, cy - extent / 4, cx + extent, cy + extent / 4), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    return image


def photo_like(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth colour gradient with sensor-like noise: reads as a photograph, not a drawing."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60], axis=2)
    noisy = base + rng.normal(0, 14, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_sample_dataset(folder: pathlib.Path, *, count: int = 8, size: int = 64, repeats: int = 2,
                        name: str = "ohwx shape", trigger: str = "ohwx", seed: int = 0,
                        with_captions: bool = True) -> pathlib.Path:
    """A clean kohya dataset: `folder/<repeats>_<name>/shape_NN.png` (+ .txt captions starting with the trigger).

    Returns `folder`, the path Load Dataset takes.
    """
    subfolder = folder / f"{repeats}_{name}"
    subfolder.mkdir(parents=True, exist_ok=True)
    colours = list(COLOURS)
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        colour = colours[(index * 3) % len(colours)]
        background = colours[(index * 3 + 5) % len(colours)]
        if background == colour:
            background = "white" if colour != "white" else "black"
        image = draw_shape((size, size), shape, colour, background, seed * 1000 + index)
        image.save(subfolder / f"shape_{index:02d}.png")
        if with_captions:
            caption = f"{trigger}, {colour} {shape}, {background} background"
            (subfolder / f"shape_{index:02d}.txt").write_text(caption + "\n", encoding="utf-8")
    return folder


@dataclass
class ProblemDataset:
    """Where make_problem_dataset put each case, so tests can look for them in the report."""

    root: pathlib.Path
    main_folder: pathlib.Path  # kohya folder with a full-width name, 5 repeats
    second_folder: pathlib.Path  # kohya folder, 2 repeats
    files: dict[str, pathlib.Path] = field(default_factory=dict)
    usable_main: int = 0
    usable_second: int = 0
    unreadable: tuple[str, ...] = ("corrupt", "truncated", "zero_byte", "bomb")


def make_problem_dataset(base: pathlib.Path, *, size: int = 512) -> ProblemDataset:
    """A kohya dataset with every case Load Dataset must survive, under a path with spaces, Japanese,
    full-width characters and symbols."""
    root = base / "データセット　テスト (v2) #1 & co"
    main = root / "5_ｏｈｗｘ　少女"
    second = root / "2_背景 scenery"
    for folder in (main, second, root / "backup"):
        folder.mkdir(parents=True)
    files: dict[str, pathlib.Path] = {}

    def add(key: str, path: pathlib.Path, caption: str | bytes | None = "default") -> pathlib.Path:
        files[key] = path
        if caption == "default":
            caption = f"ohwx, {key.replace('_', ' ')}, simple background"
        if isinstance(caption, str):
            path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        elif isinstance(caption, bytes):
            path.with_suffix(".txt").write_bytes(caption)
        return path

    colours = list(COLOURS)
    for index in range(6):
        draw_shape((size, size), SHAPES[index], colours[index], "white", index).save(
            add(f"good_{index}", main / f"good {index} (ok) #{index}.png"))
    # Colour and bit-depth variants training must convert correctly.
    cmyk = draw_shape((size, size), "square", "red", "white", 11).convert("CMYK")
    cmyk.save(add("cmyk", main / "cmyk.jpg"), quality=95)
    gradient = np.tile(np.linspace(0, 65535, size, dtype=np.float64), (size, 1)).astype(np.uint16)
    Image.fromarray(gradient).save(add("grey16", main / "grey16.png"))
    write_png16_rgba(add("rgba16", main / "rgba16.png"), size, size, (65535, 0, 0, 32768))
    transparent = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).ellipse((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill=(30, 60, 200, 255))
    transparent.save(add("alpha", main / "alpha.png"))
    draw_shape((size, size), "triangle", "green", "yellow", 12).convert("P", palette=Image.Palette.ADAPTIVE).save(
        add("palette", main / "palette.png"))
    rotated = draw_shape((size * 3 // 2, size), "bar", "purple", "white", 13)  # stored landscape, shown portrait
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(add("exif_rotated", main / "exif rotated.jpg"), exif=exif.tobytes(), quality=95)
    # Captions in the encodings users have.
    draw_shape((size, size), "circle", "orange", "blue", 14).save(
        add("sjis", main / "sjis.png", "ohwx, 猫耳, 制服, 笑顔\n".encode("cp932")))
    draw_shape((size, size), "ring", "black", "yellow", 15).save(
        add("bom", main / "bom.png", "\ufeffohwx, ring, yellow background\r\n".encode("utf-8")))
    long_caption = "ohwx, " + ", ".join(f"detailed tag number {n}" for n in range(40))
    draw_shape((size, size), "cross", "green", "purple", 16).save(add("long_caption", main / "long.png", long_caption))
    draw_shape((size, size), "circle", "yellow", "black", 17).save(add("no_caption", main / "no caption.png", None))
    draw_shape((size, size), "square", "blue", "orange", 18).save(
        add("no_trigger", main / "no trigger.png", "blue square, orange background"))
    # A near-duplicate pair: one drawing saved twice, the second re-encoded and resized.
    duplicate = draw_shape((size, size), "triangle", "red", "green", 19)
    duplicate.save(add("duplicate_a", main / "dup a.png"))
    duplicate.resize((size * 9 // 8, size * 9 // 8)).save(add("duplicate_b", main / "dup b.jpg"), quality=85)
    draw_shape((size // 5, size // 5), "square", "purple", "yellow", 20).save(add("small", main / "small.png"))
    usable_main = sum(1 for path in files.values() if path.parent == main)
    # Files that must be skipped and named.
    add("zero_byte", main / "zero byte.png", None).touch()
    add("corrupt", main / "corrupt.jpg", None).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 20)
    full = io.BytesIO()
    draw_shape((size, size), "ring", "red", "white", 21).save(full, format="JPEG", quality=95)
    add("truncated", main / "truncated.jpg", None).write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    write_png_header_only(add("bomb", main / "bomb.png", None), 30000, 30000)
    # Files that are not training images at all.
    (main / "notes.md").write_text("shot list", encoding="utf-8")
    Image.new("RGB", (8, 8)).save(add("gif", main / "animation.gif", None))
    # Second folder: two photograph-like images among drawings mixes styles.
    for index in range(3):
        photo_like((size * 4 // 3, size), 30 + index).save(add(f"photo_{index}", second / f"photo_{index}.jpg"),
                                                            quality=92)
    draw_shape((size, size * 4 // 3), "circle", "blue", "white", 40).save(add("second_drawing", second / "drawing.png"))
    usable_second = sum(1 for path in files.values() if path.parent == second)
    # Not N_name: ignored with a notice.
    draw_shape((size, size), "bar", "red", "blue", 50).save(add("ignored", root / "backup" / "old.png", None))
    return ProblemDataset(root=root, main_folder=main, second_folder=second, files=files, usable_main=usable_main,
                          usable_second=usable_second)


def write_png16_rgba(path: pathlib.Path, width: int, height: int, rgba: tuple[int, int, int, int]) -> None:
    """A 16-bit-per-channel RGBA PNG of one colour (PIL cannot write these itself)."""
    pixel = struct.pack(">HHHH", *rgba)
    raw = b"".join(b"\x00" + pixel * width for _ in range(height))
    _write_png(path, width, height, bit_depth=16, colour_type=6, idat=zlib.compress(raw))


def write_png_header_only(path: pathlib.Path, width: int, height: int) -> None:
    """A PNG that claims to be width x height: what a decompression bomb looks like before decoding."""
    _write_png(path, width, height, bit_depth=8, colour_type=2, idat=zlib.compress(b"\x00" * 64))


def _write_png(path: pathlib.Path, width: int, height: int, *, bit_depth: int, colour_type: int, idat: bytes) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# The tiny WD14 tagger's selected_tags.csv: name, category, logit: constant, or "R"/"B" to follow that
# colour channel's mean (so a red image gets red_theme and a blue one blue_theme).
# The tiny tagger's selected_tags.csv rows: (name, category, logit), the logit constant or "R"/"B" to
# follow that colour channel's mean, so red images get red_theme and blue ones blue_theme.
TAG_ROWS = [
    ("general", 9, 5.0), ("sensitive", 9, -5.0), ("questionable", 9, -5.0), ("explicit", 9, -5.0),
    ("hatsune_miku", 4, 2.2),  # 0.90: above the character threshold
    ("other_character", 4, 0.4),  # 0.60: above the general threshold, below the character one
    ("1girl", 0, 2.9),  # 0.95
    ("red_theme", 0, "R"), ("blue_theme", 0, "B"),
    ("star_(symbol)", 0, 1.4),  # 0.80
    ("^_^", 0, 0.85),  # 0.70
    ("long_hair", 0, 0.0),  # 0.50
    ("faint_tag", 0, -1.4),  # 0.20: below every threshold
]


def make_tiny_wd14_tagger(folder: pathlib.Path, side: int = 64) -> None:
    """A WD14-shaped ONNX model: NHWC BGR 0-255 in, one sigmoid score per selected_tags.csv row out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((3, len(TAG_ROWS)), np.float32)
    bias = np.zeros(len(TAG_ROWS), np.float32)
    for index, (_, _, logit) in enumerate(TAG_ROWS):
        if logit in ("R", "B"):
            weights[2 if logit == "R" else 0, index] = 0.1  # BGR input: red is channel 2
            bias[index] = -12.5
        else:
            bias[index] = logit
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["mean", "weights"], ["scaled"]),
         helper.make_node("Add", ["scaled", "bias"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["output"])],
        "tiny_wd14",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", side, side, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(TAG_ROWS)])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    rows = ["tag_id,name,category,count"]
    rows += [f"{i},{name},{category},{100 - i}" for i, (name, category, _) in enumerate(TAG_ROWS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


BLIP_WORDS = ["a", "red", "blue", "square", "circle", "on", "white", "background", "shape", "picture", "of", "the"]
BLIP_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def make_tiny_blip(folder: pathlib.Path) -> None:
    """A tiny random BLIP with a 12-word BERT vocabulary, saved as a transformers folder.

    Special tokens are biased away in the LM head so generation always yields words (12 of them).
    """
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    folder.mkdir(parents=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(BLIP_SPECIAL + BLIP_WORDS) + "\n", encoding="utf-8")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizer(str(vocab), bos_token="[DEC]"))
    config = BlipConfig(
        text_config=dict(vocab_size=len(BLIP_SPECIAL) + len(BLIP_WORDS), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=37, encoder_hidden_size=32, bos_token_id=5,
                         pad_token_id=0, sep_token_id=3, eos_token_id=3, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[: len(BLIP_SPECIAL)] = -100.0
    model.generation_config.max_new_tokens = 12
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def make_tiny_florence(folder: pathlib.Path) -> None:
    """A tiny random Florence-2 (transformers-native classes) with a letters-only byte-level vocabulary.

    Its generation_config suppresses the special tokens and asks for 5 to 12 tokens, so the caption is
    always a few letters and quick to generate.
    """
    import json

    import torch
    from transformers import (BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, GenerationConfig)

    folder.mkdir(parents=True)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)] + ["Ġ", "."]  # Ġ: byte-level BPE's space
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(special + letters)}),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = BartTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              extra_special_tokens={"image_token": "<image>"})
    # 32 px through one stride-4 stage: 8 x 8 patches plus one pooled token.
    image_processor = CLIPImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False, image_seq_length=65)
    config = Florence2Config(
        text_config=dict(model_type="bart", vocab_size=len(special) + len(letters), max_position_embeddings=512,
                         encoder_layers=1, encoder_ffn_dim=8, decoder_layers=1, decoder_ffn_dim=8,
                         encoder_attention_heads=1, decoder_attention_heads=1, d_model=8, eos_token_id=2,
                         bos_token_id=0, pad_token_id=1, decoder_start_token_id=2, forced_bos_token_id=0),
        vision_config=dict(depths=[1], patch_size=[7], patch_stride=[4], patch_padding=[3], patch_prenorm=[False],
                           embed_dim=[16], num_heads=[1], num_groups=[1], window_size=12, projection_dim=8),
        image_token_id=4,
    )
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(min_new_tokens=5, max_new_tokens=12, suppress_tokens=[0, 1, 3, 4],
                                               decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    model.save_pretrained(folder)
    Florence2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def stock_server_base(base: pathlib.Path, checkpoint_name: str) -> pathlib.Path:
    """A ComfyUI base folder holding what the example pipeline needs: the random SD1.5 checkpoint (linked,
    under the name the workflow asks for) and the tiny WD14 tagger. Returns `base`."""
    from .models import detectable_sd15_checkpoint

    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (base / "models" / "checkpoints" / checkpoint_name).symlink_to(detectable_sd15_checkpoint())
    make_tiny_wd14_tagger(base / "models" / "captioners" / "wd-vit-tagger-v3")
    return base
