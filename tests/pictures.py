"""Pictures as ingest sees them, for the signature and alignment tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def pixels(image: Image.Image) -> np.ndarray:
    """The 224 x 224 pixels ingest decodes (whole picture squashed, bilinear)."""
    return np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))


def jpeg(image: Image.Image, quality: int) -> tuple[Image.Image, bytes]:
    """`image` saved as a JPEG of `quality`: the decoded picture and the file's bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())), buffer.getvalue()
