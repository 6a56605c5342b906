"""The second look at small files: edited copies of a small drawing agree with it, its siblings in a series don't."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from lookalike.duplicates import ImageFacts
from lookalike.small_files import SmallFiles


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


def toned(image: Image.Image) -> Image.Image:
    return Image.eval(image, lambda v: round(255 * (v / 255) ** 1.6))


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
    assert SmallFiles().agree(original, copy)


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
