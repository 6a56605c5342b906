"""Thumbnail alignment: crops, turns, a turn and crop and watermark boxes line a copy up with its original;
other photos stay apart."""

from __future__ import annotations

import math

import pytest
from PIL import Image, ImageDraw, ImageEnhance

from lookalike.demo import sample_photo
from lookalike.signatures import compute_signature
from lookalike.thumbnail_alignment import (
    crop_tolerant_correlation,
    differs_locally,
    grown_canvas_correlation,
    grown_canvas_turn,
    looks_cropped,
    watermark_masked_correlation,
)
from pictures import jpeg, pixels


def test_a_corner_watermark_is_left_out_of_the_correlation(coffee: Image.Image) -> None:
    marked = coffee.convert("RGB")
    w, h = marked.size
    ImageDraw.Draw(marked).rectangle((w - w // 5 - 4, 4, w - 4, 4 + h // 12), fill="black")
    original, copy = compute_signature(pixels(coffee)), compute_signature(pixels(marked))
    others = [compute_signature(pixels(sample_photo(name))) for name in ("chelsea", "astronaut", "rocket")]
    whole = crop_tolerant_correlation(original, [copy], crops=False)[0]
    masked = watermark_masked_correlation(original, [copy])[0]
    assert masked > 0.99 > whole
    assert watermark_masked_correlation(original, others).max() < 0.6


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


def test_a_wide_photo_turned_is_matched_as_a_turn_of_the_picture_itself() -> None:
    """A wide picture is squeezed into a square thumbnail, where its turn is a turn with a shear; the turned
    copy's corners show the fill colour, which is left out."""
    wide = sample_photo("astronaut").convert("RGB").resize((900, 450), Image.Resampling.LANCZOS)
    original = compute_signature(pixels(wide))
    turned = compute_signature(pixels(wide.rotate(5, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))))
    as_a_square = crop_tolerant_correlation(original, [turned], crops=False, aspect=1.0)[0]
    as_a_wide_picture = crop_tolerant_correlation(original, [turned], crops=False, aspect=2.0)[0]
    assert as_a_wide_picture > 0.97
    assert as_a_wide_picture > as_a_square + 0.02
    others = [
        compute_signature(pixels(sample_photo(name).convert("RGB").resize((900, 450))))
        for name in ("coffee", "chelsea")
    ]
    assert crop_tolerant_correlation(original, others, crops=False, aspect=2.0).max() < 0.6


def test_a_watermark_differs_in_one_place_and_a_re_encode_everywhere_a_little(coffee: Image.Image) -> None:
    marked = coffee.convert("RGB")
    w, h = marked.size
    ImageDraw.Draw(marked).rectangle((4, h - h // 14 - 4, 4 + w // 5, h - 4), fill=(40, 40, 40))
    original = compute_signature(pixels(coffee))
    watermarked = compute_signature(pixels(marked))
    reencoded = compute_signature(pixels(jpeg(coffee, 75)[0]))
    assert differs_locally(original, watermarked)  # all of the difference is in one corner
    assert not differs_locally(original, reencoded)
    assert not differs_locally(original, original)


def test_a_crop_that_kept_the_aspect_ratio_is_told_from_a_resize(coffee: Image.Image) -> None:
    w, h = coffee.size
    original = compute_signature(pixels(coffee))
    resized = compute_signature(pixels(coffee.resize((w * 2 // 3, h * 2 // 3), Image.Resampling.LANCZOS)))
    cropped = compute_signature(pixels(coffee.crop((w // 16, h // 16, w - w // 16, h - h // 16))))
    aspect = w / h
    assert looks_cropped(original, cropped, aspect)
    assert not looks_cropped(original, resized, aspect)


def test_a_photo_turned_and_cropped_to_fill_its_frame_still_lines_up() -> None:
    """An editor's "turn and crop": turned 3.5 degrees, then enlarged so that no fill shows."""
    wide = sample_photo("astronaut").convert("RGB").resize((900, 450), Image.Resampling.LANCZOS)
    angle = math.radians(3.5)
    zoom = math.cos(angle) + math.sin(angle) * 2.0  # the enlargement that fills a 2:1 frame again
    w, h = wide.size
    half_w, half_h = w / zoom / 2, h / zoom / 2
    box = (round(w / 2 - half_w), round(h / 2 - half_h), round(w / 2 + half_w), round(h / 2 + half_h))
    turned = wide.rotate(3.5, resample=Image.Resampling.BICUBIC).crop(box).resize((w, h), Image.Resampling.BICUBIC)
    original = compute_signature(pixels(wide))
    others = [compute_signature(pixels(sample_photo(name).resize((w, h)))) for name in ("coffee", "chelsea")]
    assert crop_tolerant_correlation(original, [compute_signature(pixels(turned))], crops=False, aspect=2.0)[0] > 0.88
    assert crop_tolerant_correlation(original, others, crops=False, aspect=2.0).max() < 0.6


@pytest.mark.parametrize("size", [(900, 450), (500, 500)])
def test_a_photo_turned_on_a_grown_canvas_lines_up_with_the_picture_it_holds(size: tuple[int, int]) -> None:
    """ImageMagick's -rotate grows the canvas to hold the whole turned picture: the copy is turned and framed.
    The turn is told by the two sizes (for a square picture, only while the canvas is not scaled)."""
    picture = sample_photo("astronaut").convert("RGB").resize(size, Image.Resampling.LANCZOS)
    grown = picture.rotate(3, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    assert grown_canvas_turn(grown.size, picture.size) == pytest.approx(3, abs=0.3)
    assert grown_canvas_turn(picture.size, picture.size) is None  # no turn: nothing to undo
    original = compute_signature(pixels(picture))
    canvas = compute_signature(pixels(grown))
    others = [compute_signature(pixels(sample_photo(name).resize(size))) for name in ("coffee", "chelsea")]
    assert grown_canvas_correlation(canvas, [original], grown.size, [size])[0] > 0.95
    assert crop_tolerant_correlation(canvas, [original], aspect=grown.width / grown.height)[0] < 0.95
    assert grown_canvas_correlation(canvas, others, grown.size, [size, size]).max() < 0.6
