"""Pixel signatures: what they keep close (re-encodes, resizes) and what they tell apart (edits, other photos)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lookalike.demo import sample_photo
from lookalike.signatures import (
    SIGNATURE_BYTES,
    SignatureError,
    compute_signature,
    crop_tolerant_correlation,
    estimate_jpeg_quality,
    signature_distance,
)


def pixels(image: Image.Image) -> np.ndarray:
    """The 224 x 224 pixels ingest decodes (whole picture squashed, bilinear)."""
    return np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))


def jpeg(image: Image.Image, quality: int) -> tuple[Image.Image, bytes]:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())), buffer.getvalue()


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return sample_photo("coffee")


def test_signature_is_1024_bytes_and_the_same_every_time(coffee: Image.Image) -> None:
    first = compute_signature(pixels(coffee))
    assert len(first) == SIGNATURE_BYTES
    assert compute_signature(pixels(coffee).copy()) == first


def test_re_encoded_and_resized_copies_stay_within_a_grey_level_or_two(coffee: Image.Image) -> None:
    original = compute_signature(pixels(coffee))
    reencoded = compute_signature(pixels(jpeg(coffee, 80)[0]))
    resized = compute_signature(
        pixels(coffee.resize((coffee.width // 2, coffee.height // 2), Image.Resampling.LANCZOS))
    )
    assert signature_distance(original, reencoded) < 2.5
    assert signature_distance(original, resized) < 2.5


def test_edits_and_other_photos_are_further(coffee: Image.Image) -> None:
    original = compute_signature(pixels(coffee))
    brighter = compute_signature(pixels(ImageEnhance.Brightness(coffee).enhance(1.25)))
    w, h = coffee.size
    cropped = compute_signature(pixels(coffee.crop((w // 12, h // 12, w, h))))
    other = compute_signature(pixels(sample_photo("chelsea")))
    assert signature_distance(original, brighter) > 8
    assert signature_distance(original, cropped) > 8
    assert signature_distance(original, other) > 30


def test_crop_tolerant_correlation_lines_up_crops_and_turns_but_not_other_photos(coffee: Image.Image) -> None:
    original = compute_signature(pixels(coffee))
    w, h = coffee.size
    cropped = compute_signature(pixels(coffee.crop((w // 10, h // 20, w - w // 20, h))))
    turned = compute_signature(pixels(coffee.rotate(4, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))))
    darker = compute_signature(pixels(ImageEnhance.Brightness(coffee).enhance(0.7)))
    others = [compute_signature(pixels(sample_photo(name))) for name in ("chelsea", "astronaut", "rocket")]
    cropped_match, turned_match, darker_match = crop_tolerant_correlation(original, [cropped, turned, darker])
    assert cropped_match > 0.95
    assert darker_match > 0.95  # correlation ignores brightness
    assert turned_match > 0.8  # a turn is matched less well (only 2.5 and 5 degree turns are tried)
    assert crop_tolerant_correlation(original, others).max() < 0.6


def test_jpeg_quality_is_read_from_the_file(coffee: Image.Image) -> None:
    assert estimate_jpeg_quality(jpeg(coffee, 15)[1]) in range(13, 18)  # tables are rounded, so +-2 at low quality
    assert estimate_jpeg_quality(jpeg(coffee, 90)[1]) == 90
    png = io.BytesIO()
    coffee.save(png, format="PNG")
    assert estimate_jpeg_quality(png.getvalue()) is None


def test_bad_shapes_raise() -> None:
    with pytest.raises(SignatureError):
        compute_signature(np.zeros((224, 224), dtype=np.uint8))
    with pytest.raises(SignatureError):
        compute_signature(np.zeros((100, 100, 3), dtype=np.uint8))
    with pytest.raises(SignatureError):
        signature_distance(b"\0" * 10, b"\0" * SIGNATURE_BYTES)


def test_metadata_fields_are_counted_from_the_header() -> None:
    from PIL.PngImagePlugin import PngInfo

    from lookalike.signatures import count_metadata_fields

    photo = sample_photo("astronaut")
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Camera maker", "Camera model"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:01 10:00:00"
    text = PngInfo()
    text.add_text("Title", "an astronaut")

    def saved(fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        photo.save(buffer, fmt, **options)
        return buffer.getvalue()

    assert count_metadata_fields(saved("JPEG", quality=90, exif=exif)) == 3
    assert count_metadata_fields(saved("JPEG", quality=90)) == 0
    assert count_metadata_fields(saved("PNG", pnginfo=text)) == 1
    assert count_metadata_fields(b"not an image") == 0
