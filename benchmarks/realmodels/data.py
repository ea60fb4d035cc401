"""Rendered text data for the real-model benchmark: pages with boxes, line crops with strings, rotations.

Everything is drawn with Pillow and the DejaVu fonts of this machine, from words and numbers whose
characters every recognizer's dictionary here covers: varied fonts, sizes, text and background colours,
noise, slight rotation. Item ``i`` of a split is drawn from its own generator seeded ``(split seed, i)``,
so the first N items are the same whatever N is asked. ``calib`` and ``eval`` use different split seeds:
calibration never sees an evaluation image.

Images are BGR uint8 arrays (what the clients read with OpenCV). ``cached`` keeps a drawn set under
``out/realmodels/`` (gitignored): drawing 300 crops takes seconds, reading them back milliseconds.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "out" / "realmodels"
SPLITS = {"eval": 20_240_917, "calib": 7}
# Part of the cache's file names: a change to the drawing must not be served an old set.
VERSION = 3
# An annotator's box is looser than the ink: each side grows by this fraction of the line's height.
BOX_MARGIN = 0.15
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
# Slanted and extra-light cuts included: variety is the point. The math font has no plain Latin text.
FONT_GLOB = "DejaVu*.ttf"
FONT_SKIP = ("Math",)

WORDS = (  # noqa: SIM905 (a paragraph reads better than 200 quoted words)
    "the of and to in is for on that with as by this from at are be or an was it not which have one all "
    "were their can has more also new other some time when only may into than its two first been would "
    "who people state made after over most world such year many under where between these years city "
    "during while high part used system number group school three music series order national house "
    "water center company game history based government river against early family later public "
    "station team known second league each around among days market price total invoice order account "
    "receipt amount balance paper report daily office street avenue road north south east west summer "
    "winter spring autumn green black white yellow orange purple silver garden window kitchen coffee "
    "letter number module channel signal model layer output input vector matrix engine driver camera "
    "Monday Tuesday Friday Sunday January March April August October London Paris Berlin Tokyo Madrid "
    "Total Price Date Name Phone Email Address Room Floor Level Gate Track Page Item Qty Unit Tax Net"
).split()


@dataclass
class Page:
    """A page image and its text lines: each a 4-point polygon (clockwise from top-left) and its string."""

    image: np.ndarray
    boxes: list[np.ndarray]
    texts: list[str]


@dataclass
class Crop:
    """A cropped text line, its string, and how it was rotated (degrees counter-clockwise: 0, 90, ...)."""

    image: np.ndarray
    text: str
    angle: int = 0


def fonts() -> list[Path]:
    for folder in FONT_DIRS:
        found = sorted(p for p in folder.glob(FONT_GLOB) if not any(s in p.name for s in FONT_SKIP))
        if found:
            return found
    raise FileNotFoundError(f"no DejaVu fonts in {', '.join(map(str, FONT_DIRS))} (apt install fonts-dejavu)")


def phrase(rng: np.random.Generator, max_words: int, min_words: int = 1) -> str:
    """``min_words`` to ``max_words`` tokens: words (some capitalised or upper case) and numbers, prices,
    dates."""
    tokens = []
    for _ in range(int(rng.integers(min_words, max_words + 1))):
        kind = rng.random()
        if kind < 0.18:
            tokens.append(_number(rng))
        else:
            word = str(rng.choice(WORDS))
            style = rng.random()
            tokens.append(word.upper() if style < 0.1 else word.capitalize() if style < 0.35 else word)
    return " ".join(tokens)


def _number(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return str(int(rng.integers(0, 100_000)))
    if kind == 1:
        return f"{rng.uniform(0, 1000):.2f}"
    if kind == 2:
        return (
            f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1990, 2030))}"
        )
    if kind == 3:
        return f"{int(rng.integers(0, 100))}%"
    return f"{int(rng.integers(10, 99))}-{int(rng.integers(1000, 9999))}"


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(text, background): dark on light mostly, light on dark sometimes, always with a clear contrast."""
    light = tuple(int(v) for v in rng.integers(170, 256, 3))
    dark = tuple(int(v) for v in rng.integers(0, 90, 3))
    return (light, dark) if rng.random() < 0.15 else (dark, light)


def _font(rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    choices = fonts()
    return ImageFont.truetype(str(choices[int(rng.integers(0, len(choices)))]), size)


def _finish(image: Image.Image, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Optional blur, Gaussian noise, then BGR uint8."""
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, noise, pixels.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(pixels, 0, 255).astype(np.uint8)[:, :, ::-1])


def line_crop(rng: np.random.Generator, max_aspect: float = 6.4, min_words: int = 1) -> Crop:
    """One text line of ``min_words`` or more tokens, cropped with a small margin, slightly rotated; words
    are dropped from the end until it is no wider than ``max_aspect`` times its height (the recognizer's
    client pads to 320 x 48 below 6.67; wider crops it would squeeze)."""
    size = int(rng.integers(22, 44))
    font = _font(rng, size)
    text = phrase(rng, 3, min_words)
    margin_x, margin_y = int(size * rng.uniform(0.15, 0.45)), int(size * rng.uniform(0.12, 0.35))
    while True:
        left, top, right, bottom = font.getbbox(text)
        width, height = right - left + 2 * margin_x, bottom - top + 2 * margin_y
        if width <= max_aspect * height or text.count(" ") < min_words:
            break
        text = text.rsplit(" ", 1)[0]
    ink, paper = _colours(rng)
    image = Image.new("RGB", (width, height), paper)
    ImageDraw.Draw(image).text((margin_x - left, margin_y - top), text, font=font, fill=ink)
    angle = float(rng.uniform(-2.0, 2.0))
    image = image.rotate(angle, resample=Image.BILINEAR, expand=False, fillcolor=paper)
    return Crop(_finish(image, rng, float(rng.uniform(0, 10))), text)


def page(
    rng: np.random.Generator, size: tuple[int, int] = (640, 640), lines: tuple[int, int] = (4, 9)
) -> Page:
    """A page (W, H) with several separated text lines at random places, rotated a little as a whole; the
    boxes are each line's ink box grown by ``BOX_MARGIN``, rotated with the page."""
    width, height = size
    ink, paper = _colours(rng)
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    boxes, texts = [], []
    y = int(rng.integers(20, 60))
    for _ in range(int(rng.integers(*lines))):
        font_size = int(rng.integers(18, 40))
        font = _font(rng, font_size)
        text = phrase(rng, 4)
        left, top, right, bottom = font.getbbox(text)
        while right - left > width - 80 and " " in text:
            text = text.rsplit(" ", 1)[0]
            left, top, right, bottom = font.getbbox(text)
        if y + bottom - top > height - 30 or right - left > width - 80:
            break
        x = int(rng.integers(30, max(31, width - 30 - (right - left))))
        colour = ink if rng.random() < 0.8 else _colours(rng)[0] if paper[0] > 128 else ink
        draw.text((x - left, y - top), text, font=font, fill=colour)
        pad = BOX_MARGIN * (bottom - top)
        x0, y0, x1, y1 = x - pad, y - pad, x + right - left + pad, y + bottom - top + pad
        boxes.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32))
        texts.append(text)
        y += bottom - top + int(font_size * rng.uniform(0.8, 2.5))
    angle = float(rng.uniform(-3.0, 3.0))
    image = image.rotate(angle, resample=Image.BILINEAR, expand=False, fillcolor=paper)
    boxes = [_rotate_points(b, angle, (width / 2, height / 2)) for b in boxes]
    return Page(_finish(image, rng, float(rng.uniform(0, 8))), boxes, texts)


def _rotate_points(points: np.ndarray, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """Where PIL's ``rotate(degrees)`` (counter-clockwise on screen, y down) moves these points."""
    theta = math.radians(degrees)
    cx, cy = centre
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    x = cx + dx * math.cos(theta) + dy * math.sin(theta)
    y = cy - dx * math.sin(theta) + dy * math.cos(theta)
    return np.stack([x, y], axis=1).astype(np.float32)


def document(rng: np.random.Generator, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A document-like page (W, H): dense left-aligned paragraphs in one font, dark on light."""
    width, height = size
    paper = tuple(int(v) for v in rng.integers(200, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    font_size = int(rng.integers(14, 24))
    font = _font(rng, font_size)
    margin = int(rng.integers(20, 50))
    y = margin
    while y < height - margin - font_size:
        words = []
        while True:
            candidate = " ".join([*words, phrase(rng, 1)])
            if font.getlength(candidate) > width - 2 * margin:
                break
            words = candidate.split(" ")
        if rng.random() < 0.12:
            words = words[: max(1, len(words) // 2)]  # a paragraph's last line
        draw.text((margin, y), " ".join(words), font=font, fill=ink)
        y += int(font_size * rng.uniform(1.3, 1.8))
    image = image.rotate(float(rng.uniform(-2, 2)), resample=Image.BILINEAR, fillcolor=paper)
    return _finish(image, rng, float(rng.uniform(0, 6)))


def rotate(image: np.ndarray, angle: int) -> np.ndarray:
    """``image`` turned counter-clockwise by a multiple of 90 degrees."""
    return np.ascontiguousarray(np.rot90(image, k=angle // 90))


# ---- the sets each task scores on ----------------------------------------------------------------
def det_pages(split: str, n: int) -> list[Page]:
    return [page(_rng(split, "det", i)) for i in range(n)]


def rec_crops(split: str, n: int) -> list[Crop]:
    return [line_crop(_rng(split, "rec", i)) for i in range(n)]


def cls_crops(split: str, n: int) -> list[Crop]:
    """Line crops of two words or more (a lone short word upside down is often a word too), every other one
    turned upside down (label 180)."""
    out = []
    for i in range(n):
        crop = line_crop(_rng(split, "cls", i), max_aspect=8.0, min_words=2)
        angle = 180 * (i % 2)
        out.append(Crop(rotate(crop.image, angle), crop.text, angle))
    return out


def orient_pages(split: str, n: int) -> list[Crop]:
    """Documents turned by 0, 90, 180 and 270 degrees in turn."""
    out = []
    for i in range(n):
        angle = 90 * (i % 4)
        out.append(Crop(rotate(document(_rng(split, "orient", i)), angle), "", angle))
    return out


SETS: dict[str, Callable[[str, int], list]] = {
    "det": det_pages,
    "rec": rec_crops,
    "cls": cls_crops,
    "orient": orient_pages,
}


def _rng(split: str, task: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return np.random.default_rng([SPLITS[split], sorted(SETS).index(task), index])


def cached(task: str, split: str, n: int, folder: Path = CACHE) -> list:
    """``SETS[task](split, n)``, drawn once and kept in ``folder``; a longer cached set serves a prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{task}-{split}-v{VERSION}"
    for path in sorted(folder.glob(f"{stem}-*.pkl"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        if int(path.stem.rsplit("-", 1)[1]) >= n:
            with path.open("rb") as f:
                return pickle.load(f)[:n]
    items = SETS[task](split, n)
    path = folder / f"{stem}-{n}.pkl"
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as f:
        pickle.dump(items, f, protocol=pickle.HIGHEST_PROTOCOL)
    temporary.replace(path)
    return items
