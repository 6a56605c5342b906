"""Benchmark photo sets made from real photographs that installed packages ship.

Sources: scikit-image's bundled photos and, when installed, the photographs of
Debian's mate-backgrounds package and the large desktop wallpapers under
/usr/share/backgrounds and /usr/share/wallpapers. Each benchmark image is a
distinct, seeded variation (crop, scale, flip, colour) of a source, saved as a
JPEG at the requested size, so no image is fetched from anywhere.

Two kinds of 12 MP wallpaper sets differ in what costs a decoder time: "smooth"
photographs (sky, blur, gradients) compress to about 1 MB, "detailed" ones
(foliage, rock, texture) saved at high quality weigh 3 to 5 MB, and libjpeg's
entropy decoding, which draft mode does not skip, grows with the file's bytes.
"""

from __future__ import annotations

import glob
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from lookalike.demo import SAMPLE_PHOTOS, sample_photo

MATE_PHOTOS = "/usr/share/backgrounds/mate/nature/*.jpg"
WALLPAPERS = ("/usr/share/backgrounds/*.jpg", "/usr/share/wallpapers/*/contents/images*/*.jpg")
MIN_WALLPAPER_PIXELS = 6_000_000  # smaller sources would be upscaled to 12 MP: smooth whatever they show
DETAIL_PROBE = (1008, 756)  # a quarter-size JPEG encode ranks sources by detail, fast
DETAILED_BYTES_PER_PIXEL = 0.3  # at quality 95 on the probe: above this a source is "detailed"


def source_photos() -> list[Image.Image]:
    """Every real photo available: mate-backgrounds' (if installed) then scikit-image's colour ones."""
    sources = [Image.open(path).convert("RGB") for path in sorted(glob.glob(MATE_PHOTOS))]
    sources += [sample_photo(name) for name in SAMPLE_PHOTOS[:7]]
    return sources


def wallpaper_paths() -> list[str]:
    """Photographs of at least MIN_WALLPAPER_PIXELS among the installed wallpapers, one per picture."""
    paths: list[str] = []
    seen: set[int] = set()
    for pattern in WALLPAPERS:
        for path in sorted(glob.glob(pattern)):
            size = Path(path).stat().st_size
            with Image.open(path) as image:
                big = image.width * image.height >= MIN_WALLPAPER_PIXELS
            if big and size not in seen:  # the same picture is often shipped under several names
                seen.add(size)
                paths.append(path)
    return paths


def detail_of(image: Image.Image) -> float:
    """Bytes per pixel of a quality-95 JPEG of `image` at DETAIL_PROBE size: how much detail it has."""
    buffer = io.BytesIO()
    image.resize(DETAIL_PROBE, Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=95)
    return len(buffer.getvalue()) / (DETAIL_PROBE[0] * DETAIL_PROBE[1])


def wallpaper_sources(detailed: bool) -> list[Image.Image]:
    """The installed wallpapers with (or without) much detail; empty when none are installed."""
    sources = []
    for path in wallpaper_paths():
        image = Image.open(path).convert("RGB")
        if (detail_of(image) >= DETAILED_BYTES_PER_PIXEL) == detailed:
            sources.append(image)
    return sources


def variation(source: Image.Image, size: tuple[int, int], rng: np.random.Generator, least: float = 0.6) -> Image.Image:
    """A seeded crop/flip/colour variation of `source` (keeping at least `least` of each side), resized to `size`."""
    w, h = source.size
    keep = rng.uniform(least, 1.0)
    cw, ch = max(16, int(w * keep)), max(16, int(h * keep))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = source.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    return ImageEnhance.Color(image).enhance(float(rng.uniform(0.7, 1.3)))


def make_photo_set(folder: Path, count: int, size: tuple[int, int], quality: int = 90, seed: int = 1338) -> Path:
    """Write `count` JPEGs of `size` into `folder` (kept if already there) and return the folder."""
    return _write_set(folder, count, size, quality, seed, source_photos, least=0.6)


def make_wallpaper_set(
    folder: Path, count: int, detailed: bool, size: tuple[int, int] = (4032, 3024), seed: int = 1338
) -> Path | None:
    """A set of 12 MP wallpaper variations: detailed ones at quality 95, smooth ones at 90; None without sources.

    Crops keep at least 80% of each side, so a detailed source keeps its detail at 12 MP.
    """
    quality = 95 if detailed else 90
    try:
        return _write_set(folder, count, size, quality, seed, lambda: wallpaper_sources(detailed), least=0.8)
    except LookupError:
        return None


def _write_set(
    folder: Path, count: int, size: tuple[int, int], quality: int, seed: int, sources_of, least: float
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) == count:
        return folder
    for path in existing:
        path.unlink()
    rng = np.random.default_rng(seed)
    sources = sources_of()
    if not sources:
        raise LookupError("no source photographs installed")
    for number in range(count):
        source = sources[number % len(sources)]
        variation(source, size, rng, least).save(folder / f"img{number:06}.jpg", quality=quality)
    return folder
