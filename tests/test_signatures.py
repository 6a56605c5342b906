"""Pixel signatures: what they keep close (re-encodes, resizes) and what they tell apart (edits, other photos)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from lookalike.demo import sample_photo
from lookalike.signatures import (
    SIGNATURE_BYTES,
    THUMBNAIL_BYTES,
    SignatureError,
    coarse_distance,
    colourfulness_differs,
    colours_differ,
    compute_signature,
    estimate_jpeg_quality,
    signature_distance,
)
from lookalike.thumbnail_alignment import crop_tolerant_correlation
from pictures import jpeg, pixels


def test_signature_is_a_grey_and_a_colour_thumbnail_and_the_same_every_time(coffee: Image.Image) -> None:
    first = compute_signature(pixels(coffee))
    assert len(first) == SIGNATURE_BYTES == 32 * 32 + 8 * 8 * 3
    assert compute_signature(pixels(coffee).copy()) == first


def test_colours_tell_a_recoloured_picture_from_a_toned_copy(coffee: Image.Image) -> None:
    original = compute_signature(pixels(coffee))
    red, green, blue = coffee.convert("RGB").split()
    recoloured = compute_signature(pixels(Image.merge("RGB", (blue, red, green))))  # other hues, same layout
    toned = ImageEnhance.Color(ImageEnhance.Brightness(coffee).enhance(1.2)).enhance(0.75)
    grey = coffee.convert("L").convert("RGB")
    assert colours_differ(original, recoloured)
    assert not colours_differ(original, compute_signature(pixels(toned)))
    assert not colours_differ(original, compute_signature(pixels(grey)))  # may be a black-and-white copy
    assert not colours_differ(original[:THUMBNAIL_BYTES], recoloured)  # stored before colour: grey alone decides


def test_a_black_and_white_copy_keeps_too_little_colour_to_be_the_same_picture(coffee: Image.Image) -> None:
    original = compute_signature(pixels(coffee))
    grey = compute_signature(pixels(coffee.convert("L").convert("RGB")))
    reencoded = compute_signature(pixels(jpeg(coffee, 75)[0]))
    assert colourfulness_differs(original, grey)
    assert not colourfulness_differs(original, reencoded)
    assert not colours_differ(original, grey)  # yet it may be a near duplicate: its layout is the original's


def test_signatures_stored_before_the_colour_thumbnail_still_compare(coffee: Image.Image) -> None:
    signature = compute_signature(pixels(coffee))
    darker = compute_signature(pixels(ImageEnhance.Brightness(coffee).enhance(0.8)))
    assert signature_distance(signature[:THUMBNAIL_BYTES], darker) == signature_distance(signature, darker)
    assert crop_tolerant_correlation(signature[:THUMBNAIL_BYTES], [darker])[0] > 0.99


def test_a_halved_line_drawing_is_closer_at_16_than_at_32_pixels() -> None:
    drawing = Image.new("RGB", (60, 60), "white")
    draw = ImageDraw.Draw(drawing)
    for offset in range(4, 56, 6):
        draw.line((offset, 4, 60 - offset, 56), fill="black", width=1)
    halved = drawing.resize((30, 30), Image.Resampling.LANCZOS)
    other = drawing.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(30, fillcolor="white")
    original, small = compute_signature(pixels(drawing)), compute_signature(pixels(halved))
    assert coarse_distance(original, small) < signature_distance(original, small) / 1.5
    assert coarse_distance(original, compute_signature(pixels(other))) > 2 * coarse_distance(original, small)


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
