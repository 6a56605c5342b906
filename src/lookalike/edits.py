"""Seeded image edits in two tiers: the copy-detection benchmark's queries and `lookalike eval`'s copies.

Every edit is a function `(photo, rng, others) -> PIL image`: `photo` is the
original (RGB), `rng` a seeded numpy generator, `others` a callable returning an
unrelated RGB photo (for pastes and mosaics). The same seed gives the same edit.

mild: crops of 50-90% of the area, resizes, JPEG 30-70, flips, colour shifts,
blur, small rotations, a caption, a border.
hard: a photo pasted onto an unrelated image at 20-50% of its area, crops that
keep 10-30% of the area, 90/180/270 degree turns, tilts of 20-30 degrees,
perspective warps, pixelation under 100 px, JPEG around 10, memes, 2x2 and 3x3
mosaics, fake browser and phone-app screenshots with the photo at 15-55% of the
screen, and pairs of these.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

Others = Callable[[], Image.Image]
Edit = Callable[[Image.Image, np.random.Generator, Others], Image.Image]

WORDS = [
    "when",
    "the",
    "original",
    "is",
    "somewhere",
    "and",
    "nobody",
    "can",
    "find",
    "it",
    "anymore",
    "wait",
    "for",
    "it",
    "best",
    "day",
    "ever",
]


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(0, 256, 3))
    return red, green, blue


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _crop_area(image: Image.Image, rng: np.random.Generator, area: float) -> Image.Image:
    """A crop keeping `area` of the pixels, aspect ratio jittered, placed at random."""
    w, h = image.size
    aspect = _u(rng, 0.75, 1.33)
    cw = min(w, int(round(w * math.sqrt(area) * math.sqrt(aspect))))
    ch = min(h, int(round(w * h * area / max(cw, 1))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def _text(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int, fill: str, outline: str | None = None
) -> None:
    draw.text(
        xy, text, fill=fill, font_size=size, stroke_width=max(1, size // 12) if outline else 0, stroke_fill=outline
    )


def _words(rng: np.random.Generator, count: int) -> str:
    return " ".join(rng.choice(WORDS, count)).upper()


# --- mild ------------------------------------------------------------------------


def crop(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return _crop_area(photo, rng, _u(rng, 0.5, 0.9))


def resize(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    scale = _u(rng, 0.3, 1.5)
    w, h = photo.size
    return photo.resize((max(32, int(w * scale)), max(32, int(h * scale * _u(rng, 0.9, 1.1)))))


def jpeg(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return _jpeg(photo, int(rng.integers(30, 71)))


def flip(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return ImageOps.mirror(photo) if rng.random() < 0.8 else ImageOps.flip(photo)


def colour(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    image = ImageEnhance.Color(photo).enhance(_u(rng, 0.2, 1.8))
    image = ImageEnhance.Brightness(image).enhance(_u(rng, 0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(_u(rng, 0.7, 1.3))
    tint = Image.new("RGB", image.size, _colour(rng))
    return Image.blend(image, tint, _u(rng, 0.0, 0.2))


def blur(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return photo.filter(ImageFilter.GaussianBlur(_u(rng, 1.0, 3.0) * max(photo.size) / 640))


def small_rotation(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return photo.rotate(_u(rng, -10, 10), resample=Image.Resampling.BILINEAR, expand=rng.random() < 0.5)


def caption(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    image = photo.copy()
    draw = ImageDraw.Draw(image)
    size = max(12, image.height // 12)
    y = int(image.height * (0.05 if rng.random() < 0.5 else 0.82))
    _text(draw, (int(image.width * 0.05), y), _words(rng, 4), size, "white", "black")
    return image


def border(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    pad = int(max(photo.size) * _u(rng, 0.03, 0.12))
    return ImageOps.expand(photo, border=pad, fill=_colour(rng))


# --- hard ------------------------------------------------------------------------


def paste(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    background = others().copy()
    bw, bh = background.size
    area = _u(rng, 0.2, 0.5) * bw * bh
    scale = math.sqrt(area / (photo.width * photo.height))
    pw, ph = min(bw, max(16, int(photo.width * scale))), min(bh, max(16, int(photo.height * scale)))
    x, y = int(rng.integers(0, bw - pw + 1)), int(rng.integers(0, bh - ph + 1))
    background.paste(photo.resize((pw, ph)), (x, y))
    return background


def small_crop(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return _crop_area(photo, rng, _u(rng, 0.1, 0.3))


def turn(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return photo.transpose(
        [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270][int(rng.integers(0, 3))]
    )


def tilt(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    angle = _u(rng, 20, 30) * (1 if rng.random() < 0.5 else -1)
    fill = _colour(rng) if rng.random() < 0.5 else (0, 0, 0)
    return photo.rotate(angle, resample=Image.Resampling.BICUBIC, expand=rng.random() < 0.5, fillcolor=fill)


def perspective(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    w, h = photo.size
    jitter = _u(rng, 0.1, 0.25)
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(x + _u(rng, -jitter, jitter) * w, y + _u(rng, -jitter, jitter) * h) for x, y in corners]
    coefficients = _perspective_coefficients(corners, moved)
    return photo.transform((w, h), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC)


def _perspective_coefficients(target: list[tuple[int, int]], source: list[tuple[float, float]]) -> list[float]:
    rows = []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    rhs = np.array([c for point in source for c in point], dtype=np.float64)
    return list(np.linalg.solve(np.array(rows, dtype=np.float64), rhs))


def pixelate(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    side = int(rng.integers(24, 100))
    small = photo.copy()
    small.thumbnail((side, side))
    if rng.random() < 0.5:
        return small
    return small.resize(photo.size, Image.Resampling.NEAREST)


def jpeg10(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return _jpeg(photo, int(rng.integers(6, 14)))


def meme(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    image = ImageOps.mirror(photo) if rng.random() < 0.5 else photo.copy()
    w, h = image.size
    bar = int(h * _u(rng, 0.12, 0.25))
    canvas = Image.new("RGB", (w, h + bar * 2), "white" if rng.random() < 0.6 else "black")
    canvas.paste(image, (0, bar))
    draw = ImageDraw.Draw(canvas)
    ink = "black" if canvas.getpixel((0, 0)) == (255, 255, 255) else "white"
    _text(draw, (int(w * 0.04), int(bar * 0.25)), _words(rng, 3), max(12, bar // 2), ink)
    _text(draw, (int(w * 0.04), h + bar + int(bar * 0.25)), _words(rng, 3), max(12, bar // 2), ink)
    for _ in range(int(rng.integers(1, 5))):  # emoji-like faces
        r = int(min(w, h) * _u(rng, 0.05, 0.12))
        cx, cy = int(rng.integers(r, w - r)), int(bar + rng.integers(r, h - r))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 204, 0), outline="black", width=max(1, r // 10))
        draw.ellipse((cx - r // 2, cy - r // 3, cx - r // 4, cy), fill="black")
        draw.ellipse((cx + r // 4, cy - r // 3, cx + r // 2, cy), fill="black")
        draw.arc((cx - r // 2, cy, cx + r // 2, cy + r // 2), 0, 180, fill="black", width=max(1, r // 8))
    return ImageOps.expand(canvas, border=int(w * 0.02), fill=_colour(rng))


def _mosaic(photo: Image.Image, rng: np.random.Generator, others: Others, n: int) -> Image.Image:
    tile = int(rng.integers(160, 320))
    gap = int(rng.integers(0, 8))
    side = n * tile + (n + 1) * gap
    canvas = Image.new("RGB", (side, side), _colour(rng))
    slot = int(rng.integers(0, n * n))
    for i in range(n * n):
        source = photo if i == slot else others()
        picture = ImageOps.fit(source, (tile, tile)) if rng.random() < 0.5 else source.resize((tile, tile))
        canvas.paste(picture, (gap + (i % n) * (tile + gap), gap + (i // n) * (tile + gap)))
    return canvas


def mosaic2(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return _mosaic(photo, rng, others, 2)


def mosaic3(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    return _mosaic(photo, rng, others, 3)


def _screen(
    photo: Image.Image, rng: np.random.Generator, size: tuple[int, int], chrome: int, dark: bool
) -> Image.Image:
    """A flat UI frame with fake text lines and the photo at 15-55% of the screen."""
    w, h = size
    ui, ink = ((32, 32, 36), (200, 200, 200)) if dark else ((250, 250, 250), (60, 60, 60))
    screen = Image.new("RGB", size, ui)
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, w, chrome), fill=tuple(int(c) for c in rng.integers(180, 240, 3)))
    for y in range(chrome + 10, h - 10, int(rng.integers(18, 30))):  # text lines
        draw.rectangle((int(w * 0.05), y, int(w * _u(rng, 0.4, 0.95)), y + 6), fill=ink)
    area = _u(rng, 0.15, 0.55) * w * (h - chrome)
    scale = math.sqrt(area / (photo.width * photo.height))
    pw, ph = min(w - 8, int(photo.width * scale)), min(h - chrome - 8, int(photo.height * scale))
    x = int(rng.integers(4, w - pw - 3))
    y = int(rng.integers(chrome + 4, h - ph - 3))
    screen.paste(photo.resize((pw, ph)), (x, y))
    return screen


def browser(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    size = [(1280, 720), (1366, 768), (1024, 640)][int(rng.integers(0, 3))]
    shot = _screen(photo, rng, size, chrome=int(rng.integers(50, 90)), dark=rng.random() < 0.3)
    return _jpeg(shot, int(rng.integers(60, 90)))


def phone(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    size = [(540, 1170), (480, 960), (600, 1200)][int(rng.integers(0, 3))]
    shot = _screen(photo, rng, size, chrome=int(rng.integers(60, 120)), dark=rng.random() < 0.5)
    return _jpeg(shot, int(rng.integers(60, 90)))


MILD: dict[str, Edit] = {
    "crop": crop,
    "resize": resize,
    "jpeg": jpeg,
    "flip": flip,
    "colour": colour,
    "blur": blur,
    "small_rotation": small_rotation,
    "caption": caption,
    "border": border,
}
HARD_SINGLE: dict[str, Edit] = {
    "paste": paste,
    "small_crop": small_crop,
    "turn": turn,
    "tilt": tilt,
    "perspective": perspective,
    "pixelate": pixelate,
    "jpeg10": jpeg10,
    "meme": meme,
    "mosaic2": mosaic2,
    "mosaic3": mosaic3,
    "browser": browser,
    "phone": phone,
}
# Pairs: a geometric edit of the photo first, then a frame or a degradation around it.
PAIR_FIRST = ["small_crop", "turn", "tilt", "perspective", "meme"]
PAIR_SECOND = ["paste", "browser", "phone", "jpeg10", "mosaic2", "pixelate"]


def pair(photo: Image.Image, rng: np.random.Generator, others: Others) -> Image.Image:
    first = PAIR_FIRST[int(rng.integers(0, len(PAIR_FIRST)))]
    second = PAIR_SECOND[int(rng.integers(0, len(PAIR_SECOND)))]
    if first == "small_crop":  # two compounding losses of area would leave nothing: keep 30-60% first
        inner = _crop_area(photo, rng, _u(rng, 0.3, 0.6))
    else:
        inner = HARD_SINGLE[first](photo, rng, others)
    return HARD_SINGLE[second](inner, rng, others)


HARD: dict[str, Edit] = {**HARD_SINGLE, "pair": pair}


def apply_edit(family: str, photo: Image.Image, seed: int, others: Others) -> Image.Image:
    """Apply the edit `family` (a key of MILD or HARD) with its own seed; returns an RGB image."""
    edit = MILD.get(family) or HARD[family]
    return edit(photo.convert("RGB"), np.random.default_rng(seed), others).convert("RGB")
