"""The web app: `create_app(collection_dir)` returns the ASGI app over one collection folder.

The app never writes to the folder, except review decisions on duplicates into the catalog (it never moves or
deletes a file); another process may update it while it serves (see
lookalike.snapshot): each response comes from one whole index, and the next requests use the new
one once it is saved.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from .errors import install_error_handlers
from .guard import LOCAL_HOSTS, Guard, hosts_for_bind
from .routes import install_routes
from .service import SearchService

DEFAULT_MAX_UPLOAD_BYTES = 20_000_000


def create_app(
    collection_dir: str | os.PathLike,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    host: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    device: str = "auto",
    reload_check_seconds: float = 0.5,
    max_megapixels: float | None = None,
) -> FastAPI:
    """The web app over the collection in `collection_dir` (which must exist: CollectionNotFoundError otherwise).

    `token`: when given, every /api call needs `Authorization: Bearer <token>` or `?token=<token>`.
    `host`: the address the server will bind; a non-loopback one without a token is refused (InvalidArgumentError),
    and the Host header names it may arrive under are derived from it (see guard.hosts_for_bind).
    `allowed_hosts`: host names accepted in the Host header (DNS-rebinding guard), instead of those of `host`
    (default: loopback names); "*" accepts any.
    `max_upload_bytes`: the largest request body POST /api/search reads (413 beyond).
    `reload_check_seconds`: how often (at most) a request checks whether another process updated the index.
    `max_megapixels`: the largest upload decoded (default: what the memory available allows); larger ones are 415.
    """
    if host is not None:
        derived = hosts_for_bind(host, token)
        allowed_hosts = derived if allowed_hosts is None else allowed_hosts
    service = SearchService(collection_dir, device, reload_check_seconds, max_megapixels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(service.close)

    app = FastAPI(
        title="lookalike",
        version=__version__,
        summary="Find the images of a collection that look like a given one.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.max_upload_bytes = max_upload_bytes
    install_error_handlers(app)
    install_routes(app, service, max_upload_bytes)
    install_docs(app, token is not None)
    app.add_middleware(Guard, allowed_hosts=LOCAL_HOSTS if allowed_hosts is None else allowed_hosts, token=token)
    return app


# --- docs (offline: Swagger UI is served from the package, not a CDN) -----------------------


def install_docs(app: FastAPI, with_token: bool) -> None:
    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="lookalike API",
            swagger_js_url="/static/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui.css",
            swagger_favicon_url="/static/icon.svg",
            swagger_ui_parameters={"validatorUrl": None},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            if with_token:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "token": {"type": "http", "scheme": "bearer", "description": "The server's --token."}
                }
                for path, operations in schema.get("paths", {}).items():
                    if path.startswith("/api/"):
                        for operation in operations.values():
                            operation["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
