"""Decoding image files into RGB pixels ready for an embedder.

One function does the whole job for a file: read its bytes once (hashing them
on the way), decode only as many pixels as the model needs (JPEG draft mode),
apply the EXIF orientation, convert any mode to 8-bit RGB, and resize to the
model's input size. Failures raise `ImageDecodeError` with a reason a person
can act on; the caller decides whether to skip the file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageDecodeError

# Formats we open. EPS (Ghostscript) and the rest of Pillow's plugins are never
# tried, whatever the file claims to be. MPO (multi-picture JPEG) is not listed:
# Pillow registers no opener under that name (naming it raises KeyError for any
# file the others reject); the JPEG plugin opens MPO files itself.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF")
_DRAFT_FORMATS = ("JPEG", "MPO")
_ORIENTATION = 0x0112
_HEIF_FORMATS = ("HEIF",)
_WHITE = (255, 255, 255)
DRAFT_OVERSAMPLING = 2  # see decode_file


@dataclass(frozen=True)
class DecodedImage:
    """The pixels of one file at the model's input size, and what was learnt reading it."""

    pixels: np.ndarray  # uint8, (size, size, 3)
    content_hash: str
    width: int  # of the original image, after EXIF orientation
    height: int


def compute_content_hash(data: bytes) -> str:
    """A hex digest of a file's bytes, used to recognise moved and copied files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file_bytes(path: str) -> bytes:
    """Read a whole file, turning OS errors into `ImageDecodeError`."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ImageDecodeError(path, "file vanished before it could be read") from None
    except OSError as error:
        raise ImageDecodeError(path, f"cannot read: {error.strerror or error}") from None


def _allowed_formats() -> tuple[str, ...]:
    try:
        import pillow_heif
    except ImportError:
        return ALLOWED_FORMATS
    pillow_heif.register_heif_opener()
    return ALLOWED_FORMATS + _HEIF_FORMATS


def open_image(data: bytes, path: str, min_size: int | None = None) -> Image.Image:
    """Decode `data` into an oriented RGB image; with `min_size`, decode no more pixels than needed.

    JPEG draft mode lets libjpeg scale by 1/2, 1/4 or 1/8 while decoding; Pillow
    picks the smallest scale that keeps both sides >= `min_size`, so the model
    never sees fewer pixels than its input.
    """
    return _open(data, path, min_size)[0]


def _open(data: bytes, path: str, min_size: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """`open_image`, plus the full-resolution (width, height) after EXIF orientation."""
    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    with warnings.catch_warnings():
        # Other decoder warnings (odd EXIF in phone photos) must not turn a readable photo into an error.
        warnings.simplefilter("ignore")
        # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS: treat that as the error it is.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image: Image.Image = Image.open(io.BytesIO(data), formats=_allowed_formats())
            width, height = image.size  # before draft mode shrinks it
            if min_size is not None and image.format in _DRAFT_FORMATS:
                image.draft("RGB", (min_size, min_size))
            image.load()
            # The same tag exif_transpose reads (already parsed, so no second decode).
            if image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            image = ImageOps.exif_transpose(image)
            return to_rgb(image), (width, height)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageDecodeError(path, f"too many pixels, refused as a decompression bomb ({error})") from None
        except Image.UnidentifiedImageError:
            raise ImageDecodeError(path, "not an image, or a format lookalike does not read") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageDecodeError(path, f"corrupt or truncated image data ({error})") from None


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
    if image.mode == "La":
        image = image.convert("LA")  # Pillow has no direct La -> RGBA conversion
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


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


def decode_file(path: str, input_size: int, data: bytes | None = None, draft: bool = True) -> DecodedImage:
    """Read, hash and decode one file into model-ready pixels.

    With `draft`, JPEGs are decoded at no less than DRAFT_OVERSAMPLING x the
    input size: DCT scaling all the way down to the input size aliases enough
    to move some embeddings (cosine 0.984 against a full decode on real
    photos), while 2x keeps every one above 0.999 for about a quarter more time.
    `draft=False` is the reference path: a full-resolution decode.
    """
    if data is None:
        data = read_file_bytes(path)
    content_hash = compute_content_hash(data)
    image, (full_width, full_height) = _open(data, path, input_size * DRAFT_OVERSAMPLING if draft else None)
    return DecodedImage(resize_for_model(image, input_size), content_hash, full_width, full_height)


def decode_bytes(data: bytes, name: str, input_size: int) -> DecodedImage:
    """Decode an image that arrived as bytes (an upload), as `decode_file` would a file."""
    return decode_file(name, input_size, data=data)
