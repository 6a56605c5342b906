"""Uploads: reading a multipart body within its size limit, form fields, and the media type of files served."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..search import MAX_K
from .guard import Message

DEFAULT_K = 10
MAX_NPROBE = 65_536
MAX_EF = 65_536
BODY_TIMEOUT_SECONDS = 10.0  # longest silence while an upload's body arrives

log = logging.getLogger("lookalike.server")


class _Stalled(Exception):
    """The client sent no part of the body for too long."""


class _TooLarge(Exception):
    """The request body grew past the upload limit while it was being read."""


UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "The query image."},
                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
                        "nprobe": {"type": "integer", "minimum": 1, "maximum": MAX_NPROBE},
                        "ef": {"type": "integer", "minimum": 1, "maximum": MAX_EF},
                        "fast": {
                            "type": "boolean",
                            "default": False,
                            "description": "One vector of the whole picture, no copy check (no copy fields).",
                        },
                    },
                }
            }
        },
    }
}


async def read_form(request: Request, limit: int, timeout: float = BODY_TIMEOUT_SECONDS) -> Any:
    """Parse the multipart body, refusing it (413) as soon as it is known to exceed `limit` bytes.

    A client that sends nothing for `timeout` seconds is answered 408 (a slow upload must not hold a worker).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise StarletteHTTPException(400, "Content-Length is not a number") from None
        if too_big:
            raise _too_large(limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise StarletteHTTPException(415, "send the image as multipart/form-data, in the file field 'image'")
    received = 0
    receive = request.receive

    async def counting_receive() -> Message:
        nonlocal received
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except asyncio.TimeoutError:
            raise _Stalled from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
        return message

    counted = Request(request.scope, counting_receive)
    try:
        return await counted.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
    except _TooLarge:
        raise _too_large(limit) from None
    except _Stalled:
        raise StarletteHTTPException(408, f"the upload sent nothing for {timeout:g} s") from None
    except ClientDisconnect:
        log.info("a client went away during its upload")
        raise StarletteHTTPException(400, "the client went away during the upload") from None


def _too_large(limit: int) -> StarletteHTTPException:
    return StarletteHTTPException(413, f"upload larger than the server's limit of {limit} bytes")


def unprocessable(message: str) -> StarletteHTTPException:
    return StarletteHTTPException(422, message)


def form_int(form: Any, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    if not isinstance(raw, str):
        raise unprocessable(f"{name}: must be a number, not a file")
    try:
        value = int(raw.strip())
    except ValueError:
        raise unprocessable(f"{name}: must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise unprocessable(f"{name}: must be between {low} and {high}, not {value}")
    return value


_FLAGS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def form_flag(form: Any, name: str) -> bool:
    """A yes/no form field (true/false, 1/0, yes/no, on/off); absent or empty is no."""
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return False
    if not isinstance(raw, str) or raw.strip().lower() not in _FLAGS:
        shown = "a file" if not isinstance(raw, str) else repr(raw[:40])
        raise unprocessable(f"{name}: must be true or false, not {shown}")
    return _FLAGS[raw.strip().lower()]


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


_MAGIC = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (4, b"ftypavif", "image/avif"),
    (4, b"ftyphei", "image/heic"),
    (4, b"ftyphev", "image/heic"),
    (4, b"ftypmif1", "image/heif"),
    (4, b"ftypmsf1", "image/heif"),
)


def sniff_media_type(path: str) -> str:
    """The media type of an image file, from its first bytes (not its name)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    for offset, magic, media_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return media_type
    return "application/octet-stream"
