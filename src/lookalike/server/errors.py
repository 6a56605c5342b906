"""The server's errors: every answer that is not a result is JSON `{"error": "..."}` with a 4xx or 503 status.

Library errors map by kind (see lookalike.errors): a bad argument is 422, a file that is not an image 415,
something not found 404, a collection that cannot be searched right now 503; anything else unexpected is
logged with its traceback and answered 500 with no detail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BusyError,
    CorruptError,
    EmbedderUnavailableError,
    ImageDecodeError,
    InvalidArgumentError,
    LookalikeError,
    NotFoundError,
    NotIndexedError,
    SchemaVersionError,
)

log = logging.getLogger("lookalike.server")

# Library errors that mean "this server cannot search right now", not "bad request".
_UNAVAILABLE = (BusyError, CorruptError, EmbedderUnavailableError, NotFoundError, SchemaVersionError)


class JSON(JSONResponse):
    """JSON as `lookalike search --json` prints it: non-ASCII escaped, so a file name that is not UTF-8
    (held as surrogate escapes) travels as `\\udcXX` instead of failing to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer."""
    return JSON({"error": message}, status_code=status, headers=headers)


def status_of(error: LookalikeError) -> int:
    """The HTTP status for a library error."""
    if isinstance(error, ImageDecodeError):
        return 415
    if isinstance(error, NotIndexedError):
        return 404
    if isinstance(error, _UNAVAILABLE):
        return 503
    if isinstance(error, InvalidArgumentError):
        return 422
    return 400


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as JSON."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "path", "body"))
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
        return error_response(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(LookalikeError)
    async def library_error(request: Request, error: LookalikeError) -> JSONResponse:
        status = status_of(error)
        if isinstance(error, ImageDecodeError):
            return error_response(status, f"not an image lookalike can read: {error}")
        if status == 503:
            log.error("cannot search: %s", error)
            return error_response(status, f"the server cannot search this collection: {error}")
        return error_response(status, str(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, f"internal error ({type(error).__name__}); see the server's log")
