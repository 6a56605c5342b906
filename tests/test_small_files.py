"""The second look at small files: edited copies of a small drawing agree with it, its siblings in a series don't."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookalike.duplicates import ImageFacts
from lookalike.small_files import FILE_CORRELATION, SmallFiles


def star_polygon(points: int, step: int, size: int = 100) -> Image.Image:
    """A drawing of a series: `points` points on a circle, each joined to the one `step` further, around a disc."""
    image = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(image)
    centre, radius = size / 2, size * 0.45
    corners = [
        (centre + radius * math.cos(2 * math.pi * k / points), centre + radius * math.sin(2 * math.pi * k / points))
        for k in range(points)
    ]
    for k in range(points):
        pen.line((corners[k], corners[(k + step) % points]), fill=(60, 60, 60), width=2)
    inner = radius * 0.4
    pen.ellipse(
        (centre - inner, centre - inner, centre + inner, centre + inner), fill="white", outline="black", width=2
    )
    return image


def shaded_star(points: int, step: int, size: int = 100) -> Image.Image:
    """A star polygon over a grey ramp: a drawing with many grey levels, which a tone curve bends unevenly."""
    ramp = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    return Image.blend(star_polygon(points, step, size), ramp, 0.5)


def toned(image: Image.Image, gamma: float = 1.6) -> Image.Image:
    return Image.eval(image, lambda v: round(255 * (v / 255) ** gamma))


def turned(image: Image.Image) -> Image.Image:
    return image.rotate(3, Image.Resampling.BICUBIC, fillcolor="white")


def watermarked(image: Image.Image) -> Image.Image:
    marked = image.copy()
    ImageDraw.Draw(marked).text((3, 86), "(c) 2026", fill=(120, 120, 120))
    return marked


def stored(image: Image.Image, path: Path, image_id: int = 1) -> ImageFacts:
    """The facts the catalog holds of `image` saved at `path`: a PNG, or a JPEG of quality 10 (heavy)."""
    heavy = path.suffix == ".jpg"
    image.save(path, **({"quality": 10} if heavy else {}))
    width, height = image.size
    return ImageFacts(
        image_id, str(path), path.stat().st_size, None, width, height, 0, jpeg_quality=10 if heavy else None
    )


@pytest.mark.parametrize(
    ("edit", "name"), [(toned, "toned.png"), (turned, "turned.png"), (watermarked, "marked.png"), (None, "heavy.jpg")]
)
def test_an_edited_copy_of_a_small_drawing_agrees_with_it(edit: Callable | None, name: str, tmp_path: Path) -> None:
    drawing = star_polygon(40, 15)
    original = stored(drawing, tmp_path / "star.png")
    copy = stored(edit(drawing) if edit else drawing, tmp_path / name, 2)

    assert SmallFiles.applies(original, copy)
    assert SmallFiles().agree(original, copy) and SmallFiles().agree(copy, original)


def test_a_strong_tone_curve_keeps_the_order_of_the_grey_levels_and_the_copy_agrees(tmp_path: Path) -> None:
    drawing = shaded_star(40, 15)
    original = stored(drawing, tmp_path / "star.png")
    copy = stored(toned(drawing, gamma=3.0), tmp_path / "toned.png", 2)
    sibling = stored(shaded_star(42, 15), tmp_path / "sibling.png", 3)
    grey = [np.asarray(Image.open(item.path).convert("L"), dtype=np.float32) for item in (original, copy)]
    # The levels of the copy are no straight function of the original's: a plain correlation falls short.
    assert np.corrcoef(grey[0].ravel(), grey[1].ravel())[0, 1] < FILE_CORRELATION

    assert SmallFiles().agree(original, copy) and SmallFiles().agree(copy, original)
    assert not SmallFiles().agree(original, sibling)


def test_a_sibling_drawing_of_the_series_does_not_agree(tmp_path: Path) -> None:
    star = stored(star_polygon(40, 15), tmp_path / "star-40.png")
    sibling = stored(star_polygon(42, 15), tmp_path / "star-42.png", 2)

    assert SmallFiles.applies(star, sibling)
    assert not SmallFiles().agree(star, sibling)


def test_files_gone_or_changed_leave_the_verdict_to_the_thumbnails(tmp_path: Path) -> None:
    star = stored(star_polygon(40, 15), tmp_path / "star-40.png")
    sibling = stored(star_polygon(42, 15), tmp_path / "star-42.png", 2)
    star_polygon(42, 15, size=120).save(sibling.path)  # no longer the size the catalog knows
    assert SmallFiles().agree(star, sibling)
    Path(sibling.path).unlink()
    assert SmallFiles().agree(star, sibling)


def test_only_small_files_of_one_size_are_compared(tmp_path: Path) -> None:
    small = ImageFacts(1, "a.png", 1, None, 100, 100, 0)
    assert not SmallFiles.applies(small, ImageFacts(2, "b.png", 1, None, 100, 90, 0))
    large = ImageFacts(3, "c.png", 1, None, 300, 200, 0)
    assert not SmallFiles.applies(large, ImageFacts(4, "d.png", 1, None, 300, 200, 0))
