"""The sample collection: real photos that scikit-image ships, and transformed copies of them.

Used by `lookalike demo`, the tests and the benchmarks, so that everything runs
offline on real photographs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from .errors import LookalikeError

# Photographs (not drawings or synthetic patterns) bundled with scikit-image.
SAMPLE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "camera",
    "moon",
    "coins",
    "brick",
    "grass",
    "gravel",
    "cell",
)


def sample_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos as an RGB Pillow image."""
    try:
        import skimage.data
    except ImportError:
        raise LookalikeError("the sample photos come from scikit-image: pip install 'lookalike[demo]'") from None
    pixels = getattr(skimage.data, name)()
    if pixels.dtype != np.uint8:
        pixels = (255 * (pixels.astype(np.float64) / max(float(pixels.max()), 1e-9))).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 8, h // 10, w - w // 10, h - h // 8))


def _colour_shift(image: Image.Image) -> Image.Image:
    warmer = Image.merge(
        "RGB", [band.point(lambda v, g=g: min(255, int(v * g))) for band, g in zip(image.split(), (1.12, 1.0, 0.85))]
    )
    return ImageEnhance.Contrast(ImageEnhance.Brightness(warmer).enhance(1.1)).enhance(1.15)


# Each transform returns a new picture of the same scene, as a user's copy would be.
TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop": _crop,
    "small": lambda im: im.resize((max(32, im.width // 3), max(32, im.height // 3)), Image.Resampling.LANCZOS),
    "jpeg20": lambda im: _jpeg(im, 20),
    "flip": ImageOps.mirror,
    "colour": _colour_shift,
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
}


def save_exif_rotated(image: Image.Image, path: Path) -> None:
    """Save the picture as a phone does: pixels stored sideways, EXIF orientation 6 saying how to turn them."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", quality=90, exif=exif)


def make_sample_collection(
    folder: Path, photos: tuple[str, ...] = SAMPLE_PHOTOS, transforms: tuple[str, ...] = ("crop", "small", "flip")
) -> list[Path]:
    """Write the originals (in nested folders, in several formats) and some transformed copies."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    formats = [("originals", "jpg"), ("originals/png", "png"), ("originals/webp", "webp")]
    for number, name in enumerate(photos):
        subfolder, extension = formats[number % len(formats)]
        path = folder / subfolder / f"{name}.{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        original = sample_photo(name)
        original.save(path, quality=92) if extension != "png" else original.save(path)
        written.append(path)
        for transform in transforms:
            copy_path = folder / "copies" / f"{name}-{transform}.jpg"
            copy_path.parent.mkdir(parents=True, exist_ok=True)
            TRANSFORMS[transform](original).save(copy_path, quality=88)
            written.append(copy_path)
    return written


def make_query(folder: Path, photo: str = "chelsea") -> Path:
    """A query the collection has never seen: a cropped, colour-shifted, recompressed copy of `photo`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"query-{photo}.jpg"
    _jpeg(_colour_shift(_crop(sample_photo(photo))), 40).save(path, quality=85)
    return path
