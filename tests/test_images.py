"""Decoding image files into model-ready RGB pixels: sizes, hashes, orientation, modes, formats, failures."""

from __future__ import annotations

import functools
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import threading
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin
from skimage import data

from lookalike import images
from lookalike.errors import ImageDecodeError
from lookalike.images import (
    DecodedImage,
    compute_content_hash,
    decode_bytes,
    decode_file,
    open_image,
    read_file_bytes,
    resize_for_model,
    to_rgb,
)
from lookalike.pixel_budget import BYTES_PER_PIXEL

SIZE = 224
ORIENTATION = 0x0112


# --- helpers -------------------------------------------------------------------------


def photo(name: str = "chelsea") -> Image.Image:
    """One of scikit-image's bundled photos as a Pillow image."""
    return Image.fromarray(getattr(data, name)())


def save(image: Image.Image, path: Path, fmt: str | None = None, **params) -> Path:
    image.save(path, fmt, **params)
    return path


def model_view(image: Image.Image) -> np.ndarray:
    """What the model should see for an upright RGB image: the whole picture at SIZE x SIZE."""
    return resize_for_model(image.convert("RGB"), SIZE).astype(np.int16)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@functools.cache
def large_jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    """A real photo blown up to a camera-sized JPEG (cached: encoding 12 Mpx takes a moment)."""
    exif = Image.Exif()
    if orientation != 1:
        exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    photo("coffee").resize((width, height), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


# --- what decode_file returns ----------------------------------------------------------


def test_decode_file_gives_model_pixels_and_original_size(tmp_path):
    path = save(photo("chelsea"), tmp_path / "cat.jpg", quality=95)

    decoded = decode_file(str(path), SIZE)

    assert isinstance(decoded, DecodedImage)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape == (SIZE, SIZE, 3)
    assert (decoded.width, decoded.height) == (451, 300)
    assert mean_abs(decoded.pixels, model_view(photo("chelsea"))) < 4


def test_content_hash_is_the_hash_of_the_file_bytes(tmp_path):
    path = save(photo("coffee"), tmp_path / "coffee.png")

    assert decode_file(str(path), SIZE).content_hash == compute_content_hash(path.read_bytes())


def test_same_bytes_share_a_hash_and_different_bytes_do_not(tmp_path):
    original = save(photo("rocket"), tmp_path / "rocket.jpg", quality=90)
    (tmp_path / "copies").mkdir()
    copy = Path(shutil.copy(original, tmp_path / "copies" / "renamed.jpg"))
    reencoded = save(photo("rocket"), tmp_path / "rocket-q80.jpg", quality=80)

    hash_of = {path: decode_file(str(path), SIZE).content_hash for path in (original, copy, reencoded)}

    assert hash_of[original] == hash_of[copy]
    assert hash_of[original] != hash_of[reencoded]


def test_decode_bytes_matches_decode_file(tmp_path):
    path = save(photo("astronaut"), tmp_path / "astronaut.webp")

    from_bytes = decode_bytes(path.read_bytes(), "upload.webp", SIZE)
    from_file = decode_file(str(path), SIZE)

    assert from_bytes.content_hash == from_file.content_hash
    assert (from_bytes.width, from_bytes.height) == (from_file.width, from_file.height)
    assert np.array_equal(from_bytes.pixels, from_file.pixels)


# --- EXIF orientation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "stored_as", "fmt"),
    [
        (6, Image.Transpose.ROTATE_90, "JPEG"),  # camera held upright: 6 says "turn 90 degrees clockwise"
        (8, Image.Transpose.ROTATE_270, "JPEG"),  # 8 says "turn 90 degrees counter-clockwise"
        (6, Image.Transpose.ROTATE_90, "PNG"),  # PNG carries EXIF too (eXIf chunk)
    ],
)
def test_exif_orientation_is_applied(tmp_path, tag, stored_as, fmt):
    upright = photo("chelsea")  # 451 x 300, landscape
    stored = upright.transpose(stored_as)  # 300 x 451 on disk
    exif = Image.Exif()
    exif[ORIENTATION] = tag
    path = save(stored, tmp_path / f"rotated.{fmt.lower()}", fmt, exif=exif)

    decoded = decode_file(str(path), SIZE)

    assert (decoded.width, decoded.height) == (451, 300)
    upright_error = mean_abs(decoded.pixels, model_view(upright))
    assert upright_error < 6
    assert mean_abs(decoded.pixels, model_view(stored)) > 5 * upright_error


def test_orientation_and_full_size_survive_draft_mode():
    jpeg = large_jpeg(4032, 3024, orientation=6)  # a portrait photo stored landscape, as phones do

    decoded = decode_bytes(jpeg, "phone.jpg", SIZE)

    assert (decoded.width, decoded.height) == (3024, 4032)  # full resolution, upright
    upright = Image.open(io.BytesIO(jpeg)).transpose(Image.Transpose.ROTATE_270)
    assert mean_abs(decoded.pixels, model_view(upright)) < 4


# --- pixel modes -------------------------------------------------------------------------


def test_16_bit_grey_png_is_not_white(tmp_path):
    camera = data.camera()
    deep = save(Image.fromarray(camera.astype(np.uint16) * 257), tmp_path / "deep.png")
    plain = save(Image.fromarray(camera), tmp_path / "plain.png")
    with Image.open(deep) as check:
        assert check.mode == "I;16"

    deep_pixels = decode_file(str(deep), SIZE).pixels

    assert mean_abs(deep_pixels, decode_file(str(plain), SIZE).pixels) < 2


def test_dark_16_bit_grey_stays_dark(tmp_path):
    camera = data.camera()
    dark = camera.astype(np.uint16)  # the same picture using only the bottom 1/256 of the 16-bit range
    path = save(Image.fromarray(dark), tmp_path / "dark.png")

    pixels = decode_file(str(path), SIZE).pixels

    assert pixels.mean() < 2  # as a viewer shows it: almost black, not stretched into a normal photo
    assert camera.mean() > 100


def test_palette_image_keeps_its_colours():
    coffee = photo("coffee")
    palette = coffee.quantize(colors=256, method=Image.Quantize.MEDIANCUT)

    rgb = to_rgb(palette)

    assert rgb.mode == "RGB"
    assert mean_abs(np.asarray(rgb), np.asarray(coffee)) < 8
    assert np.array_equal(np.asarray(rgb), np.asarray(palette.convert("RGB")))


def test_palette_transparency_becomes_white(tmp_path):
    quantized = photo("chelsea").quantize(colors=255)  # indices 0..254; 255 is free for "transparent"
    indices = np.array(quantized)
    indices[:, :200] = 255
    image = Image.fromarray(indices, "P")
    image.putpalette(quantized.getpalette() + [0, 0, 0])  # entry 255: black, but transparent
    path = save(image, tmp_path / "cutout.png", transparency=255)

    rgb = np.asarray(open_image(path.read_bytes(), str(path)))

    assert (rgb[:, :200] == 255).all()
    assert np.array_equal(rgb[:, 200:], np.asarray(quantized.convert("RGB"))[:, 200:])


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGBa", "La"])
def test_transparent_areas_become_white(mode):
    image = photo("astronaut").convert(mode[:-1].upper())
    alpha = np.full((512, 512), 255, np.uint8)
    alpha[:, :256] = 0
    image.putalpha(Image.fromarray(alpha))

    rgb = np.asarray(to_rgb(image.convert(mode)))  # RGBa and La: colour premultiplied by alpha

    assert (rgb[:, :256] == 255).all()
    opaque = np.asarray(image.convert("RGB"))[:, 256:]
    assert np.array_equal(rgb[:, 256:], opaque)
    assert opaque.mean() < 200  # the opaque half is the photo, not white


def test_colour_key_transparency_becomes_white(tmp_path):
    key = (0, 0, 0)
    pixels = np.array(photo("rocket"))
    pixels[:100] = key
    path = save(Image.fromarray(pixels), tmp_path / "keyed.png", transparency=key)

    rgb = np.asarray(open_image(path.read_bytes(), str(path)))

    is_key = (pixels == key).all(axis=2)
    assert is_key[:100].all()
    assert (rgb[is_key] == 255).all()
    assert np.array_equal(rgb[~is_key], pixels[~is_key])


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    coffee = photo("coffee")
    path = save(coffee.convert("CMYK"), tmp_path / "print.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"

    pixels = decode_file(str(path), SIZE).pixels

    assert mean_abs(pixels, model_view(coffee)) < 4  # inverted CMYK would be off by ~100


def test_grey_becomes_three_equal_channels():
    camera = data.camera()

    rgb = np.asarray(to_rgb(Image.fromarray(camera)))

    assert rgb.shape == (512, 512, 3)
    for channel in range(3):
        assert np.array_equal(rgb[..., channel], camera)


def test_one_bit_image_becomes_black_and_white():
    mask = data.camera() > 128

    rgb = np.asarray(to_rgb(Image.fromarray(mask).convert("1")))

    assert set(np.unique(rgb)) == {0, 255}
    assert np.array_equal(rgb[..., 1] == 255, mask)


@pytest.mark.parametrize("scale", [1 / 255, 1.0], ids=["0..1", "0..255"])
def test_float_grey_is_rescaled(scale):
    camera = data.camera()
    image = Image.fromarray((camera * scale).astype(np.float32))
    assert image.mode == "F"

    rgb = np.asarray(to_rgb(image)).astype(np.int16)

    assert np.abs(rgb[..., 0] - camera).max() <= 1


# --- file formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "tolerance"),
    [
        ("photo.jpg", {"quality": 90}, 4),
        ("photo.png", {}, 1),
        ("photo.webp", {"quality": 90}, 4),
        ("photo.gif", {}, 4),
        ("photo.bmp", {}, 1),
        ("photo.tiff", {}, 1),
        ("PHOTO.JPG", {"quality": 90}, 4),
        ("Photo.Png", {}, 1),
    ],
)
def test_formats_decode_to_the_same_picture(tmp_path, name, params, tolerance):
    rocket = photo("rocket")
    path = save(rocket, tmp_path / name, **params)

    decoded = decode_file(str(path), SIZE)

    assert (decoded.width, decoded.height) == (640, 427)
    assert mean_abs(decoded.pixels, model_view(rocket)) < tolerance
    assert mean_abs(decoded.pixels, model_view(photo("coffee").resize((640, 427)))) > 20


def test_animated_gif_uses_the_first_frame(tmp_path):
    first = photo("chelsea").resize((300, 200))
    second = photo("coffee").resize((300, 200))
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2

    pixels = decode_file(str(path), SIZE).pixels

    first_error = mean_abs(pixels, model_view(first))
    assert first_error < 10
    assert mean_abs(pixels, model_view(second)) > 4 * first_error


def test_multi_picture_jpeg_uses_the_first_picture(tmp_path):
    first, second = photo("astronaut"), photo("coffee").resize((512, 512))
    path = tmp_path / "stereo.jpg"
    first.save(path, "MPO", save_all=True, append_images=[second], quality=90)

    pixels = decode_file(str(path), SIZE).pixels

    first_error = mean_abs(pixels, model_view(first))
    assert first_error < 4
    assert mean_abs(pixels, model_view(second)) > 5 * first_error


# --- JPEG draft mode ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [(4032, 3024), (3024, 4032)])
def test_draft_decodes_a_large_jpeg_at_reduced_size(size):
    image = open_image(large_jpeg(*size), "big.jpg", min_size=SIZE)

    assert min(image.size) >= SIZE
    assert image.width * image.height <= size[0] * size[1] // 16  # scaled by 1/4 or more, not decoded whole


@pytest.mark.parametrize("size", [(4000, 300), (300, 4000), (4000, 460), (1800, 1791)])
def test_draft_never_gives_fewer_pixels_than_the_input(size):
    image = open_image(large_jpeg(*size), "odd.jpg", min_size=SIZE)

    assert min(image.size) >= SIZE
    assert (image.width > image.height) == (size[0] > size[1])


def test_draft_pixels_match_a_full_decode():
    jpeg = large_jpeg(4032, 3024)

    drafted = decode_bytes(jpeg, "big.jpg", SIZE).pixels
    full = resize_for_model(open_image(jpeg, "big.jpg"), SIZE)

    assert open_image(jpeg, "big.jpg").size == (4032, 3024)
    assert mean_abs(drafted, full) < 3
    assert cosine(drafted, full) > 0.999


# --- bad input ---------------------------------------------------------------------------


def decode_error(path: Path | str) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as caught:
        decode_file(str(path), SIZE)
    assert caught.value.path == str(path)
    return caught.value


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")

    assert "empty" in decode_error(path).reason


def test_truncated_jpeg_is_refused(tmp_path):
    whole = save(photo("coffee"), tmp_path / "whole.jpg", quality=90).read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(whole[: len(whole) // 2])

    assert "truncated" in decode_error(path).reason
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_text_file_named_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n")

    assert "not an image" in decode_error(path).reason


def test_eps_file_named_jpg_is_never_opened(tmp_path):
    path = tmp_path / "vector.jpg"
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
    with Image.open(path) as check:  # Pillow alone would hand it to Ghostscript
        assert check.format == "EPS"

    assert "not an image" in decode_error(path).reason


def test_pixel_limit_refuses_a_decompression_bomb(tmp_path):
    path = save(photo("chelsea"), tmp_path / "cat.png")  # 451 x 300 = 135,300 pixels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the refusal must not depend on the caller's warning filters
        with pytest.raises(ImageDecodeError) as caught:
            decode_file(str(path), SIZE, max_megapixels=0.1)

    assert "decompression bomb" in caught.value.reason
    assert decode_file(str(path), SIZE, max_megapixels=0.2).width == 451


def png_header(width: int, height: int) -> bytes:
    """The start of a real PNG claiming width x height grey pixels, cut before its pixel data."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, "PNG")
    data_ = bytearray(buffer.getvalue()[:33])  # signature + IHDR chunk
    data_[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    import zlib

    data_[29:33] = zlib.crc32(bytes(data_[12:29])).to_bytes(4, "big")
    return bytes(data_) + buffer.getvalue()[33:60]


@pytest.mark.parametrize("megapixels", [100, 250], ids=["pillow-warning-range", "beyond-pillow-error-range"])
def test_pixel_limit_is_settable_beyond_pillows_fixed_guard(megapixels):
    header = png_header(megapixels * 1000, 1000)  # legitimate sizes for scans and panoramas; data cut short

    with pytest.raises(ImageDecodeError) as refused:
        decode_bytes(header, "scan.png", SIZE, max_megapixels=megapixels - 1)
    with pytest.raises(ImageDecodeError) as allowed:
        decode_bytes(header, "scan.png", SIZE, max_megapixels=megapixels + 1)

    assert "decompression bomb" in refused.value.reason
    assert "decompression bomb" not in allowed.value.reason  # accepted, then found truncated
    assert "truncated" in allowed.value.reason


def test_pillows_guard_is_raised_never_lowered(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**12)

    decode_bytes(large_jpeg(640, 480), "small.jpg", SIZE, max_megapixels=1)

    assert Image.MAX_IMAGE_PIXELS == 10**12


def test_default_pixel_limit_follows_the_memory_available(monkeypatch):
    from lookalike import pixel_budget as budget

    monkeypatch.setattr(budget, "available_memory", lambda: 8 * 10**9)
    assert budget.default_max_megapixels() == pytest.approx(8e9 * budget.MEMORY_SHARE / budget.BYTES_PER_PIXEL / 1e6)
    assert budget.default_max_megapixels(concurrency=2) == pytest.approx(budget.default_max_megapixels() / 2)
    monkeypatch.setattr(budget, "available_memory", lambda: 10**8)
    assert budget.default_max_megapixels() == budget.MIN_DEFAULT_MEGAPIXELS
    monkeypatch.setattr(budget, "available_memory", lambda: None)
    assert budget.default_max_megapixels() == budget.PILLOW_DEFAULT_MEGAPIXELS


def test_memory_available_is_measured():
    from lookalike.pixel_budget import available_memory

    memory = available_memory()

    assert memory is None or 0 < memory < 2**50


@functools.cache
def huge_grey_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.camera()).resize((width, height)).save(buffer, "JPEG", quality=80, progressive=progressive)
    return buffer.getvalue()


def test_168_megapixel_jpeg_is_decoded_in_draft_mode():
    jpeg = huge_grey_jpeg(14_000, 12_000)  # 168 MP, as some clip-art renderings are: refused by Pillow's 89 MP guard

    decoded = decode_bytes(jpeg, "poster.jpg", SIZE, max_megapixels=20)  # draft mode decodes 1/8: 2.6 MP

    assert (decoded.width, decoded.height) == (14_000, 12_000)
    assert mean_abs(decoded.pixels, model_view(Image.fromarray(data.camera()))) < 4


def test_progressive_jpeg_counts_its_full_size_coefficients():
    baseline, progressive = huge_grey_jpeg(4032, 3024), huge_grey_jpeg(4032, 3024, progressive=True)

    assert decode_bytes(baseline, "base.jpg", SIZE, max_megapixels=3).width == 4032  # 1/4 scale: 0.8 MP
    with pytest.raises(ImageDecodeError) as caught:  # libjpeg keeps every coefficient of a progressive file
        decode_bytes(progressive, "prog.jpg", SIZE, max_megapixels=3)
    assert "decompression bomb" in caught.value.reason
    assert decode_bytes(progressive, "prog.jpg", SIZE, max_megapixels=8).width == 4032


# --- malformed tags (issue row 3) ----------------------------------------------------------


def exif_block(*entries: tuple[int, int, int, bytes]) -> bytes:
    """A little-endian EXIF block with one IFD of (tag, type, count, 4-byte value) entries, as written by hand."""
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0") for tag, kind, count, value in entries
    )
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"


ROTATE_6 = (ORIENTATION, 3, 1, struct.pack("<H", 6))


@pytest.mark.parametrize(
    "broken",
    [
        (0x011A, 2, 4, b"abc\0"),  # XResolution (a rational) as a string: TypeError in exif_transpose
        (0x011A, 1, 2, b"ab"),  # XResolution as bytes: TypeError
        (0x0128, 4, 1, struct.pack("<I", 70_000)),  # ResolutionUnit (a short) as a long: struct.error
    ],
    ids=["string-for-rational", "bytes-for-rational", "long-for-short"],
)
def test_malformed_exif_tags_do_not_cost_the_picture(broken):
    upright = photo("chelsea")
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif_block(ROTATE_6, broken))

    decoded = decode_bytes(buffer.getvalue(), "phone.jpg", SIZE)

    assert (decoded.width, decoded.height) == (451, 300)  # the orientation tag itself was readable
    assert mean_abs(decoded.pixels, model_view(upright)) < 6


@pytest.mark.parametrize(
    "orientation",
    [(ORIENTATION, 2, 2, b"6\0"), (ORIENTATION, 7, 2, b"\x06\x00"), (ORIENTATION, 3, 1, struct.pack("<H", 99))],
    ids=["string", "bytes", "out-of-range"],
)
def test_unreadable_orientation_is_ignored(orientation):
    buffer = io.BytesIO()
    photo("chelsea").save(buffer, "JPEG", quality=95, exif=exif_block(orientation))

    decoded = decode_bytes(buffer.getvalue(), "odd.jpg", SIZE)

    assert (decoded.width, decoded.height) == (451, 300)
    assert mean_abs(decoded.pixels, model_view(photo("chelsea"))) < 6


def test_malformed_tiff_tag_does_not_cost_the_picture(tmp_path):
    upright = photo("chelsea")
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[ORIENTATION] = 6
    path = save(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "scan.tif", tiffinfo=info)
    raw = bytearray(path.read_bytes())
    # Turn the ResolutionUnit entry (a short) into a long of 70,000: Pillow loads it, then cannot write it back.
    offset = struct.unpack_from("<I", raw, 4)[0]
    for i in range(struct.unpack_from("<H", raw, offset)[0]):
        entry = offset + 2 + 12 * i
        if struct.unpack_from("<H", raw, entry)[0] == 0x0128:
            struct.pack_into("<HII", raw, entry + 2, 4, 1, 70_000)
    path.write_bytes(bytes(raw))

    decoded = decode_file(str(path), SIZE)

    assert (decoded.width, decoded.height) == (451, 300)
    assert mean_abs(decoded.pixels, model_view(upright)) < 6


# --- files that are not what the scan saw (issue rows 1 and 2) --------------------------------


def test_fifo_swapped_in_after_the_scan_is_refused_without_blocking(tmp_path):
    path = tmp_path / "x.jpg"
    os.mkfifo(path)  # what a scan that saw a JPEG here finds when it reads
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(_decode_or_error(path)), daemon=True)

    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # blocked in open(): free it by opening the writing end, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
        pytest.fail("decode_file blocked on a FIFO")

    assert isinstance(outcome[0], ImageDecodeError)
    assert outcome[0].reason == "not a regular file"


def _decode_or_error(path: Path) -> object:
    try:
        return decode_file(str(path), SIZE)
    except ImageDecodeError as error:
        return error


@pytest.mark.parametrize("head", [b"", b"\xff\xd8\xff\xe0"], ids=["zeros", "jpeg-marker-then-zeros"])
def test_huge_file_is_refused_in_bounded_memory(tmp_path, monkeypatch, head):
    # Pillow skips junk after a JPEG marker one byte at a time: without a header window the marker case
    # scans the whole 1 GiB (minutes). A smaller window than the default keeps this test quick.
    monkeypatch.setattr(images, "HEADER_WINDOW_BYTES", 256 << 10)
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(1 << 30)  # 1 GiB, sparse: costs no disk

    tracemalloc.start()
    try:
        error = decode_error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert "not an image" in error.reason or "corrupt" in error.reason
    assert peak < 16 << 20  # never the whole file in memory


def test_big_file_is_hashed_and_decoded_from_disk(tmp_path, monkeypatch):
    path = save(photo("rocket"), tmp_path / "rocket.png")
    small = decode_file(str(path), SIZE)
    monkeypatch.setattr(images, "IN_MEMORY_BYTES", 1000)  # the streaming path, with a small real file

    streamed = decode_file(str(path), SIZE)

    assert streamed.content_hash == small.content_hash == compute_content_hash(path.read_bytes())
    assert np.array_equal(streamed.pixels, small.pixels)
    assert (streamed.width, streamed.height) == (640, 427)


def test_read_file_bytes_is_bounded_and_refuses_fifos(tmp_path):
    path = save(photo("chelsea"), tmp_path / "cat.jpg")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)

    assert read_file_bytes(str(path)) == path.read_bytes()
    with pytest.raises(ImageDecodeError, match="too large"):
        read_file_bytes(str(path), max_bytes=100)
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_file_bytes(str(fifo))


def test_unreadable_file_is_refused(tmp_path):
    path = save(photo("chelsea"), tmp_path / "locked.jpg")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that read any file")
        assert "cannot read" in decode_error(path).reason
    finally:
        path.chmod(0o644)


def test_folder_named_like_an_image_is_refused(tmp_path):
    path = tmp_path / "album.jpg"
    path.mkdir()

    assert "cannot read" in decode_error(path).reason


def test_vanished_file_is_refused(tmp_path):
    assert "vanished" in decode_error(tmp_path / "gone.jpg").reason


def test_decode_error_survives_pickling(tmp_path):
    error = decode_error(tmp_path / "gone.jpg")

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is ImageDecodeError
    assert (copy.path, copy.reason) == (error.path, error.reason)
    assert str(copy) == str(error) == f"{tmp_path / 'gone.jpg'}: {error.reason}"


def test_heic_photos_decode_when_pillow_heif_is_installed(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    from lookalike.files import scan_images

    pillow_heif.register_heif_opener()
    photo = Image.fromarray(data.chelsea())
    heic = tmp_path / "IMG_0001.HEIC"
    photo.save(heic, format="HEIF", quality=90)
    decoded = decode_file(str(heic), 224)
    assert (decoded.width, decoded.height) == photo.size
    upright = np.asarray(photo.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(decoded.pixels.astype(np.float64) - upright).mean() < 6
    assert [Path(entry.path).name for entry in scan_images(str(tmp_path))] == ["IMG_0001.HEIC"]


MEASURE = """
import sys
from lookalike.images import decode_file

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak (VmHWM) to the current RSS: imports do not count
before = status("VmRSS:")
decode_file(sys.argv[1], 224)
print(status("VmHWM:") - before)
"""


@pytest.mark.parametrize("mode", ["RGBA", "P", "RGB"])
def test_decoding_stays_within_bytes_per_pixel(tmp_path, mode):
    """BYTES_PER_PIXEL is what the pixel limit assumes: the peak RSS of a decode, in a fresh process (Linux)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    width, height = 4000, 3000
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[..., 3] = 128
    pixels[::7, :, 0] = 255
    image = Image.fromarray(pixels, "RGBA")
    if mode == "P":
        image = image.convert("RGB").quantize(colors=16)
        image.info["transparency"] = 0
    elif mode == "RGB":
        image = image.convert("RGB")
    path = save(image, tmp_path / "big.png", compress_level=1, **({"transparency": 0} if mode == "P" else {}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, env=env)

    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < BYTES_PER_PIXEL * width * height


def test_concurrent_decoding_leaves_the_warning_filters_as_they_were():
    """catch_warnings from several threads at once left an 'ignore everything' filter behind for good."""
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, "PNG")
    before = list(warnings.filters)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: decode_bytes(buffer.getvalue(), "x.png", 32), range(2000)))

    assert warnings.filters == before
