"""Other strengths and placements of the duplicate edits, for the "variants" set of benchmarks/duplicates.py.

The labelled sets' edits are the ones the tiers are defined by; a held-out set will draw its own. These are
the same families pushed a little further or done another way: a caption at the bottom centre and a logo
instead of a corner label, crops of 10-13% per side or 15% off one side, turns of 5-7 degrees with black
fill, turns that grow the canvas or crop to fill it, stronger tone changes, black and white, a slight blur,
JPEG quality 30, and (same-image) a third-size copy at quality 40. Each copy is labelled with the tier a
person would give it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]


def _caption(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = rgb.size
    overlay = Image.new("RGBA", rgb.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((w // 2 - w // 8, h - h // 8, w // 2 + w // 8, h - h // 16), fill=(255, 255, 255, 120))
    draw.text((w // 2 - w // 10, h - h // 8 + 2), "sample photo", fill=(0, 0, 0, 200))
    return Image.alpha_composite(rgb.convert("RGBA"), overlay).convert("RGB")


def _logo(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = rgb.size
    radius = min(w, h) // 10
    overlay = Image.new("RGBA", rgb.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).ellipse((w - 3 * radius, radius, w - radius, 3 * radius), fill=(255, 0, 0, 150))
    return Image.alpha_composite(rgb.convert("RGBA"), overlay).convert("RGB")


def _crop_wide(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = rgb.size
    left, top, right, bottom = (float(x) for x in rng.uniform(0.10, 0.13, size=4))
    return rgb.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


def _crop_one_side(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    return rgb.crop((0, 0, round(rgb.width * 0.85), rgb.height))


def _turn_black(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(5, 7)) * (1 if rng.random() < 0.5 else -1)
    return rgb.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def _turn_grown(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(2, 5)) * (1 if rng.random() < 0.5 else -1)
    return rgb.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))


def _turn_and_crop(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Turned, then enlarged so that no fill shows, at the original size (an editor's straighten tool)."""
    angle = float(rng.uniform(2, 5)) * (1 if rng.random() < 0.5 else -1)
    w, h = rgb.size
    radians = math.radians(abs(angle))
    zoom = math.cos(radians) + math.sin(radians) * max(w / h, h / w)
    half_w, half_h = w / zoom / 2, h / zoom / 2
    box = (round(w / 2 - half_w), round(h / 2 - half_h), round(w / 2 + half_w), round(h / 2 + half_h))
    turned = rgb.rotate(angle, resample=Image.Resampling.BICUBIC).crop(box)
    return turned.resize((w, h), Image.Resampling.BICUBIC)


def _strong_tone(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(rgb).enhance(0.65)).enhance(1.3)


def _black_and_white(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    return rgb.convert("L").convert("RGB")


def _blur(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    return rgb.filter(ImageFilter.GaussianBlur(2))


def _unchanged(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    return rgb


def _third_size(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    return rgb.resize((max(16, rgb.width // 3), max(16, rgb.height // 3)), Image.Resampling.LANCZOS)


# name: (tier, edit, JPEG quality the copy is saved at)
VARIANT_EDITS: dict[str, tuple[str, Edit, int]] = {
    "caption": ("near", _caption, 90),
    "logo": ("near", _logo, 90),
    "crop-10-13%": ("near", _crop_wide, 90),
    "crop-one-side-15%": ("near", _crop_one_side, 90),
    "turn-5-7-black": ("near", _turn_black, 90),
    "turn-grown": ("near", _turn_grown, 90),
    "turn-and-crop": ("near", _turn_and_crop, 90),
    "strong-tone": ("near", _strong_tone, 90),
    "black-and-white": ("near", _black_and_white, 90),
    "blur": ("near", _blur, 90),
    "jpeg-30": ("near", _unchanged, 30),
    "third-size-q40": ("same-image", _third_size, 40),
}
