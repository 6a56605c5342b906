"""Decoding image files into RGB pixels ready for an embedder.

One function does the whole job for a file: read its bytes once (hashing them
on the way), decode only as many pixels as the model needs (JPEG draft mode),
apply the EXIF orientation, convert any mode to 8-bit RGB, and resize to the
model's input size. Failures raise `ImageDecodeError` with a reason a person
can act on; the caller decides whether to skip the file.

What a hostile or damaged file can cost is bounded: files are opened without
blocking and must be regular files, big files are identified from their header
and hashed as a stream instead of being read whole, and the pixels to decode are
checked against a limit derived from the memory available before any is decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from .errors import ImageDecodeError
from .files import HeaderWindow, hash_open_file, open_regular_file, read_all
from .files import read_file_bytes as read_file_bytes  # re-exported: render and the server read files via images
from .pixel_budget import default_max_megapixels

# Formats we open. EPS (Ghostscript) and the rest of Pillow's plugins are never
# tried, whatever the file claims to be. MPO (multi-picture JPEG) is not listed:
# Pillow registers no opener under that name (naming it raises KeyError for any
# file the others reject); the JPEG plugin opens MPO files itself.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF")
_DRAFT_FORMATS = ("JPEG", "MPO")
_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_HEIF_FORMATS = ("HEIF",)
_WHITE = (255, 255, 255)
DRAFT_OVERSAMPLING = 2  # see decode_file

IN_MEMORY_BYTES = 64 << 20  # files up to this size are read whole; bigger ones are decoded from the open file
HEADER_WINDOW_BYTES = 8 << 20  # how much of a big file identification may read (see HeaderWindow)
# A baseline JPEG decoded in draft mode needs memory for the scaled pixels only; libjpeg scales by 1/8 at most.
_MAX_DRAFT_AREA = 64
_pillow_limit_lock = threading.Lock()
_IGNORE_ALL = ("ignore", None, Warning, None, 0)  # what warnings.simplefilter("ignore") inserts
_ignoring_lock = threading.Lock()
_ignoring = 0  # decodes in progress, in any thread


@dataclass(frozen=True)
class DecodedImage:
    """The pixels of one file at the model's input size, and what was learnt reading it."""

    pixels: np.ndarray  # uint8, (size, size, 3)
    content_hash: str
    width: int  # of the original image, after EXIF orientation
    height: int


def compute_content_hash(data: bytes) -> str:
    """A hex digest of a file's bytes, used to recognise moved and copied files (decode_file's streamed path
    computes the same digest with hash_open_file)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# --- reading files ---------------------------------------------------------------------------------------


# --- how many pixels may be decoded -----------------------------------------------------------------------


def _pixel_limit(max_megapixels: float | None) -> int:
    megapixels = default_max_megapixels() if max_megapixels is None else max_megapixels
    if not megapixels > 0:
        raise ValueError(f"max_megapixels must be positive, not {max_megapixels}")
    return int(megapixels * 1e6)


def _let_pillow_open(limit: int) -> None:
    """Raise Pillow's process-wide bomb guard (MAX_IMAGE_PIXELS) so it never refuses what `limit` allows.

    Pillow checks every image header against a module-level constant (error beyond twice it); lookalike
    checks each file against its own limit before decoding, so Pillow's is only ever raised (never
    lowered, never disabled), to cover the header sizes of JPEGs that draft mode decodes at 1/8.
    """
    wanted = limit * _MAX_DRAFT_AREA // 2
    with _pillow_limit_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < wanted:
            Image.MAX_IMAGE_PIXELS = wanted


def _decode_cost(image: Image.Image, full_size: tuple[int, int]) -> int:
    """Pixels' worth of memory that decoding `image` (after any draft) will take.

    A baseline JPEG in draft mode costs only its scaled pixels; a progressive one also keeps every DCT
    coefficient of the full image (2 bytes a sample, up to 3 samples a pixel): about half a pixel's
    worth each, at BYTES_PER_PIXEL.
    """
    cost = image.width * image.height
    if image.format in _DRAFT_FORMATS and (image.info.get("progressive") or image.info.get("progression")):
        cost += full_size[0] * full_size[1] // 2
    elif image.format not in _DRAFT_FORMATS:
        cost = max(cost, full_size[0] * full_size[1])
    return cost


def _check_pixels(image: Image.Image, full_size: tuple[int, int], limit: int, path: str) -> None:
    cost = _decode_cost(image, full_size)
    if cost > limit:
        raise ImageDecodeError(
            path,
            f"too many pixels ({full_size[0]} x {full_size[1]}: {cost / 1e6:.0f} MP to decode, over the "
            f"limit of {limit / 1e6:.0f} MP set by max_megapixels), refused as a possible decompression bomb",
        )


# --- decoding --------------------------------------------------------------------------------------------


@contextmanager
def _warnings_ignored() -> Iterator[None]:
    """Ignore warnings while any thread decodes, and restore the filters exactly when the last one ends.

    warnings.catch_warnings saves and restores the process-wide filter list: from several threads at
    once the restores interleave and an "ignore everything" filter was left behind for good (seen after
    a threaded ingest). Here the first decode in adds one filter and the last one out removes it.
    """
    global _ignoring
    with _ignoring_lock:
        if _ignoring == 0:
            warnings.simplefilter("ignore")
        _ignoring += 1
    try:
        yield
    finally:
        with _ignoring_lock:
            _ignoring -= 1
            if _ignoring == 0 and _IGNORE_ALL in warnings.filters:
                warnings.filters.remove(_IGNORE_ALL)  # type: ignore[attr-defined]  # a list at run time
                # As warnings.filterwarnings does: cached decisions are dropped (private, hence getattr).
                getattr(warnings, "_filters_mutated", lambda: None)()


def _allowed_formats() -> tuple[str, ...]:
    try:
        import pillow_heif
    except ImportError:
        return ALLOWED_FORMATS
    pillow_heif.register_heif_opener()
    return ALLOWED_FORMATS + _HEIF_FORMATS


def open_image(data: bytes, path: str, min_size: int | None = None, max_megapixels: float | None = None) -> Image.Image:
    """Decode `data` into an oriented RGB image; with `min_size`, decode no more pixels than needed.

    JPEG draft mode lets libjpeg scale by 1/2, 1/4 or 1/8 while decoding; Pillow
    picks the smallest scale that keeps both sides >= `min_size`, so the model
    never sees fewer pixels than its input. `max_megapixels` (default: derived
    from the memory available) bounds the pixels decoded.
    """
    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    return _open(io.BytesIO(data), path, min_size, max_megapixels)[0]


def open_image_file(path: str, min_size: int | None = None, max_megapixels: float | None = None) -> Image.Image:
    """`open_image` for a file on disk, in bounded memory whatever the file's size (see decode_file)."""
    with open_regular_file(path) as handle:
        return _open_handle(handle, path, min_size, max_megapixels)[0]


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8), or 1 when the tag is missing or unreadable.

    Pillow loads EXIF and TIFF tags of the wrong type (a string where a number is
    expected, bytes for a rational) and then fails on them later: a broken tag must
    not cost the picture, only its rotation.
    """
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - Pillow's tag parser raises many types on malformed data
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _open_handle(
    handle: BinaryIO,
    path: str,
    min_size: int | None,
    max_megapixels: float | None,
    before_load: Callable[[], None] | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode from an open regular file: read whole when small, else straight from the file."""
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    if size <= IN_MEMORY_BYTES:
        data = read_all(handle, path, None)
        if len(data) <= IN_MEMORY_BYTES:
            if not data:
                raise ImageDecodeError(path, "empty file (0 bytes)")
            return _open(io.BytesIO(data), path, min_size, max_megapixels, before_load)
        handle.seek(0)  # it grew past the threshold while being read: decode from the file instead
    window = HeaderWindow(handle, HEADER_WINDOW_BYTES)
    return _open(window, path, min_size, max_megapixels, lambda: _accept_header(window, before_load))  # type: ignore[arg-type]


def _accept_header(window: HeaderWindow, before_load: Callable[[], None] | None) -> None:
    window.limit = None
    if before_load is not None:
        before_load()


def _open(
    source: BinaryIO,
    path: str,
    min_size: int | None,
    max_megapixels: float | None,
    before_load: Callable[[], None] | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Identify, check, decode and orient; plus the full-resolution (width, height) after EXIF orientation.

    `before_load` runs once the header has been read and the pixel count accepted, before any decoding
    (so a file that is not an image, or too big, is refused without reading it all).
    """
    limit = _pixel_limit(max_megapixels)
    _let_pillow_open(limit)
    # Decoder warnings (odd EXIF in phone photos, Pillow's own bomb warning, which _check_pixels
    # replaces) must not turn a readable photo into an error, nor be printed by a library.
    with _warnings_ignored():
        try:
            image: Image.Image = Image.open(source, formats=_allowed_formats())
            full_size = image.size  # before draft mode shrinks it
            if min_size is not None and image.format in _DRAFT_FORMATS:
                image.draft("RGB", (min_size, min_size))
            _check_pixels(image, full_size, limit, path)
            if before_load is not None:
                before_load()
            image.load()
            orientation = exif_orientation(image)
            if orientation in _UPRIGHT:
                image = image.transpose(_UPRIGHT[orientation])
            width, height = full_size if orientation < 5 else full_size[::-1]
            return to_rgb(image), (width, height)
        except ImageDecodeError:
            raise
        except Image.DecompressionBombError as error:
            raise ImageDecodeError(path, f"too many pixels, refused as a decompression bomb ({error})") from None
        except Image.UnidentifiedImageError:
            raise ImageDecodeError(path, "not an image, or a format lookalike does not read") from None
        except MemoryError:
            raise ImageDecodeError(path, "not enough memory to decode this image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageDecodeError(path, f"corrupt or truncated image data ({error})") from None
        except (IndexError, KeyError, TypeError, ArithmeticError, struct.error) as error:
            # Pillow's parsers index and unpack what the file says: damaged files also surface as these.
            raise ImageDecodeError(path, f"corrupt image data ({type(error).__name__}: {error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without losing the picture.

    16-bit and 32-bit grey are rescaled (a plain convert clips them to white),
    and transparency (an alpha band, or a palette / colour-key `transparency`)
    is flattened onto white.
    """
    mode = image.mode
    keyed = "transparency" in image.info
    if mode == "RGB" and not keyed:
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_rescale_to_uint8(np.asarray(image)), "L").convert("RGB")
    if mode in ("P", "PA") and (mode == "PA" or keyed):
        image = image.convert("RGBA")
    elif mode == "P":
        return image.convert("RGB")
    elif mode in ("1", "L", "RGB") and keyed:
        image = image.convert("RGBA")  # Pillow turns the colour key into alpha
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return _flatten_onto_white(image)
    return image.convert("RGB")


def _flatten_onto_white(image: Image.Image) -> Image.Image:
    """Blend onto white with the alpha band as mask: two full-size copies fewer than alpha_composite."""
    if image.mode == "La":
        image = image.convert("LA")  # Pillow has no direct La -> RGBA conversion
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


def _rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the values of a 16-bit, 32-bit or float grey image onto 0..255."""
    kind, itemsize = values.dtype.kind, values.dtype.itemsize
    values = values.astype(np.float64)
    if kind == "u" and itemsize == 2:
        # Known 16-bit depth: scale by it, so a dark picture stays dark (and black stays black).
        scaled = values / 257.0
    else:
        top = float(values.max()) if values.size else 0.0
        if kind == "f" and top <= 1.0 and float(values.min()) >= 0.0:
            scaled = values * 255.0
        elif top <= 255.0:
            scaled = values
        else:
            scaled = values / 257.0 if top <= 65535.0 else values * (255.0 / top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def resize_for_model(image: Image.Image, input_size: int) -> np.ndarray:
    """Resize the whole picture (no crop, so crops of it still overlap) to a square uint8 array.

    An exact antialiased bilinear resize: with no reducing_gap shortcut the
    result does not depend on how far draft mode already scaled the picture.
    """
    resized = image.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def decode_file(
    path: str,
    input_size: int,
    data: bytes | None = None,
    draft: bool = True,
    max_megapixels: float | None = None,
) -> DecodedImage:
    """Read, hash and decode one file into model-ready pixels.

    With `draft`, JPEGs are decoded at no less than DRAFT_OVERSAMPLING x the
    input size: DCT scaling all the way down to the input size aliases enough
    to move some embeddings (cosine 0.984 against a full decode on real
    photos), while 2x keeps every one above 0.999 for about a quarter more time.
    `draft=False` is the reference path: a full-resolution decode.

    `max_megapixels` bounds the pixels decoded (default: default_max_megapixels(), from the memory
    available); files beyond it are refused as possible decompression bombs. Files over
    IN_MEMORY_BYTES are identified from their header, then hashed and decoded from the file.
    """
    min_size = input_size * DRAFT_OVERSAMPLING if draft else None
    if data is not None:
        if not data:
            raise ImageDecodeError(path, "empty file (0 bytes)")
        image, (width, height) = _open(io.BytesIO(data), path, min_size, max_megapixels)
        return DecodedImage(resize_for_model(image, input_size), compute_content_hash(data), width, height)
    with open_regular_file(path) as handle:
        hashed: list[str] = []
        digest = hashlib.blake2b(digest_size=16)  # as compute_content_hash

        def hash_file() -> None:
            hashed.append(hash_open_file(handle, path, digest))

        image, (width, height) = _open_handle(handle, path, min_size, max_megapixels, hash_file)
    return DecodedImage(resize_for_model(image, input_size), hashed[0], width, height)


def decode_bytes(data: bytes, name: str, input_size: int, max_megapixels: float | None = None) -> DecodedImage:
    """Decode an image that arrived as bytes (an upload), as `decode_file` would a file."""
    return decode_file(name, input_size, data=data, max_megapixels=max_megapixels)
