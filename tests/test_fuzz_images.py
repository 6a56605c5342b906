"""Property-based fuzzing of the image loader: damaged real files never raise anything but ImageDecodeError.

Seeds are real photos (scikit-image's) saved as JPEG, PNG, TIFF, WebP and GIF with EXIF and tags; Hypothesis
flips bits, truncates, splices garbage, writes garbage EXIF entries, TIFF tags and PNG chunks. Every example
must decode to model pixels or raise ImageDecodeError, within bounded memory: a 4 MP pixel limit, Python
allocations under PY_PEAK_BYTES per example (tracemalloc) and the process's peak RSS growing by less than
RSS_GROWTH_BYTES over each test. Sized for CI: a few hundred examples per strategy, no deadline.
"""

from __future__ import annotations

import functools
import io
import resource
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin
from skimage import data

from lookalike import images
from lookalike.errors import ImageDecodeError
from lookalike.images import decode_bytes, decode_file

SIZE = 32
MAX_MEGAPIXELS = 4
PY_PEAK_BYTES = 64 << 20
RSS_GROWTH_BYTES = 1 << 30
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@functools.cache
def seeds() -> dict[str, bytes]:
    """Small real photos in every format the loader reads, with EXIF and tags to damage."""
    chelsea = Image.fromarray(data.chelsea()).resize((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera maker"
    exif[0x011A] = 72.0
    out = {}
    for name, fmt, params in [
        ("jpeg", "JPEG", {"quality": 85, "exif": exif}),
        ("progressive", "JPEG", {"quality": 85, "progressive": True}),
        ("png", "PNG", {"exif": exif}),
        ("webp", "WEBP", {"quality": 80, "exif": exif}),
        ("gif", "GIF", {}),
        ("tiff", "TIFF", {"tiffinfo": _tiff_tags()}),
    ]:
        buffer = io.BytesIO()
        chelsea.save(buffer, fmt, **params)
        out[name] = buffer.getvalue()
    return out


def _tiff_tags() -> TiffImagePlugin.ImageFileDirectory_v2:
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[0x0112] = 6
    tags[0x010E] = "a description"
    return tags


def must_decode_or_refuse(data_: bytes) -> None:
    """The property: model pixels or ImageDecodeError, and bounded Python allocations."""
    tracemalloc.start()
    try:
        decoded = decode_bytes(data_, "fuzz.img", SIZE, max_megapixels=MAX_MEGAPIXELS)
        assert decoded.pixels.shape == (SIZE, SIZE, 3)
    except ImageDecodeError as error:
        assert error.reason
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PY_PEAK_BYTES


@pytest.fixture(autouse=True)
def bounded_rss():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    yield
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < RSS_GROWTH_BYTES


seed_names = st.sampled_from(sorted(seeds()))


@FUZZ
@given(seed_names, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=12))
def test_bit_flips(name, flips):
    raw = bytearray(seeds()[name])
    for position, bit in flips:
        raw[position % len(raw)] ^= 1 << bit
    must_decode_or_refuse(bytes(raw))


@FUZZ
@given(seed_names, st.integers(0, 10**6))
def test_truncations(name, cut):
    raw = seeds()[name]
    must_decode_or_refuse(raw[: cut % len(raw)])


@FUZZ
@given(seed_names, st.integers(0, 10**6), st.binary(min_size=1, max_size=64), st.booleans())
def test_spliced_garbage(name, position, garbage, replace):
    raw = seeds()[name]
    at = position % len(raw)
    must_decode_or_refuse(raw[:at] + garbage + raw[at + (len(garbage) if replace else 0) :])


# --- tags and chunks ---------------------------------------------------------------------------------------

KNOWN_TAGS = [0x0112, 0x011A, 0x011B, 0x0128, 0x010F, 0x0110, 0x0131, 0x0132, 0x8769, 0x8825, 0x0213, 0x9003, 0xA002]
entries = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(KNOWN_TAGS), st.integers(0, 0xFFFF)),
        st.integers(0, 14),  # TIFF types 1..12 and invalid ones
        st.integers(0, 2**32 - 1) | st.integers(0, 8),
        st.binary(min_size=4, max_size=4),
    ),
    min_size=1,
    max_size=8,
)


def exif_block(items: list[tuple[int, int, int, bytes]], big_endian: bool) -> bytes:
    order = ">" if big_endian else "<"
    ifd = struct.pack(order + "H", len(items)) + b"".join(
        struct.pack(order + "HHI", tag, kind, count) + value for tag, kind, count, value in items
    )
    head = b"MM\x00*" if big_endian else b"II*\x00"
    return b"Exif\x00\x00" + head + struct.pack(order + "I", 8) + ifd + b"\0\0\0\0"


@FUZZ
@given(st.sampled_from(["JPEG", "PNG", "WEBP"]), entries, st.booleans())
def test_garbage_exif(fmt, items, big_endian):
    # A valid orientation first: Pillow re-reads (and, in exif_transpose, re-writes) every tag only then.
    order = ">H" if big_endian else "<H"
    rotate = (0x0112, 3, 1, struct.pack(order, 6) + b"\0\0")
    buffer = io.BytesIO()
    image = Image.fromarray(data.chelsea()).resize((48, 32))
    image.save(buffer, fmt, exif=exif_block([rotate, *items], big_endian))
    must_decode_or_refuse(buffer.getvalue())


@FUZZ
@given(entries, st.integers(0, 50))
def test_garbage_tiff_tags(items, which):
    raw = bytearray(seeds()["tiff"])
    offset = struct.unpack_from("<I", raw, 4)[0]
    count = struct.unpack_from("<H", raw, offset)[0]
    for i, (tag, kind, number, value) in enumerate(items):
        entry = offset + 2 + 12 * ((which + i) % count)
        keep_tag = struct.unpack_from("<H", raw, entry)[0] if i % 2 else tag
        raw[entry : entry + 12] = struct.pack("<HHI", keep_tag, kind, number) + value
    must_decode_or_refuse(bytes(raw))


PNG_CHUNKS = [
    b"tEXt",
    b"zTXt",
    b"iTXt",
    b"eXIf",
    b"iCCP",
    b"pHYs",
    b"tRNS",
    b"PLTE",
    b"gAMA",
    b"sRGB",
    b"acTL",
    b"fcTL",
]


@FUZZ
@given(
    st.sampled_from(PNG_CHUNKS) | st.binary(min_size=4, max_size=4),
    st.binary(max_size=200) | st.builds(zlib.compress, st.binary(max_size=2000)),
    st.booleans(),
    st.booleans(),
)
def test_garbage_png_chunks(kind, payload, good_crc, before_data):
    raw = seeds()["png"]
    crc = zlib.crc32(kind + payload) if good_crc else 0
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
    at = raw.index(b"IDAT") - 4 if before_data else len(raw) - 12  # before the pixels, or before IEND
    must_decode_or_refuse(raw[:at] + chunk + raw[at:])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed_names, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=6), st.booleans())
def test_files_on_disk_behave_like_bytes(name, flips, streamed):
    """Read whole, or (streamed) identified through the header window then hashed and decoded from the file."""
    raw = bytearray(seeds()[name])
    for position, bit in flips:
        raw[position % len(raw)] ^= 1 << bit
    saved = images.IN_MEMORY_BYTES
    images.IN_MEMORY_BYTES = 100 if streamed else saved
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"fuzz.{name}"
            path.write_bytes(bytes(raw))
            try:
                from_file = decode_file(str(path), SIZE, max_megapixels=MAX_MEGAPIXELS)
            except ImageDecodeError as error:
                from_file = error
    finally:
        images.IN_MEMORY_BYTES = saved
    try:
        from_bytes = decode_bytes(bytes(raw), str(path), SIZE, max_megapixels=MAX_MEGAPIXELS)
    except ImageDecodeError as error:
        from_bytes = error
    assert type(from_file) is type(from_bytes)
    if isinstance(from_file, ImageDecodeError):
        assert from_file.reason == from_bytes.reason
    else:
        assert from_file.content_hash == from_bytes.content_hash
        assert (from_file.pixels == from_bytes.pixels).all()
