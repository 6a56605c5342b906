"""Benchmark photo sets made from real photographs that installed packages ship.

Sources: scikit-image's bundled photos and, when installed, the photographs of
Debian's mate-backgrounds package. Each benchmark image is a distinct, seeded
variation (crop, scale, flip, colour) of a source, saved as a JPEG at the
requested size, so no image is fetched from anywhere.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from lookalike.demo import SAMPLE_PHOTOS, sample_photo

MATE_PHOTOS = "/usr/share/backgrounds/mate/nature/*.jpg"


def source_photos() -> list[Image.Image]:
    """Every real photo available: mate-backgrounds' (if installed) then scikit-image's colour ones."""
    sources = [Image.open(path).convert("RGB") for path in sorted(glob.glob(MATE_PHOTOS))]
    sources += [sample_photo(name) for name in SAMPLE_PHOTOS[:7]]
    return sources


def variation(source: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A seeded crop/flip/colour variation of `source`, resized to `size`."""
    w, h = source.size
    keep = rng.uniform(0.6, 1.0)
    cw, ch = max(16, int(w * keep)), max(16, int(h * keep))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = source.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    return ImageEnhance.Color(image).enhance(float(rng.uniform(0.7, 1.3)))


def make_photo_set(folder: Path, count: int, size: tuple[int, int], quality: int = 90, seed: int = 1338) -> Path:
    """Write `count` JPEGs of `size` into `folder` (kept if already there) and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) == count:
        return folder
    rng = np.random.default_rng(seed)
    sources = source_photos()
    for number in range(count):
        source = sources[number % len(sources)]
        variation(source, size, rng).save(folder / f"img{number:06}.jpg", quality=quality)
    return folder
