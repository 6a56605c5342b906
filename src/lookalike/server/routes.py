"""The routes: each parses its request, calls the library through `SearchService`, and shapes the JSON."""

from __future__ import annotations

import os
import time
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..render import printable
from ..search import MAX_ID, MAX_K
from .duplicates import DuplicateService
from .errors import JSON
from .service import SearchService
from .uploads import (
    DEFAULT_K,
    MAX_EF,
    MAX_NPROBE,
    UPLOAD_OPENAPI,
    form_flag,
    form_int,
    ms_since,
    read_form,
    sniff_media_type,
    unprocessable,
)

WEB_DIR = FilePath(__file__).parent.parent / "web"


def install_routes(app: FastAPI, service: SearchService, max_upload_bytes: int) -> None:
    @app.post(
        "/api/search",
        summary="Search with an uploaded image",
        openapi_extra=UPLOAD_OPENAPI,
        responses={413: {"description": "Upload too large"}, 415: {"description": "Not an image"}},
    )
    async def search_upload(request: Request) -> JSON:
        """Upload an image as multipart field `image`; get the most similar images of the collection, best first.

        Form fields: `k` (results, 1..10000, default 10), `nprobe` (IVF lists to visit), `ef` (HNSW search beam),
        `fast` (true: one vector of the whole picture, no copy check). Without `fast`, several views of the image
        are searched, the first candidates verified, and each result carries `copy` and `copy_score` (a copy at
        0.5 and above).
        """
        started = time.perf_counter()
        form = await read_form(request, max_upload_bytes)
        try:
            upload = form.get("image")
            if upload is None:
                raise unprocessable("image: send the image as the multipart file field 'image'")
            if not isinstance(upload, UploadFile):
                raise unprocessable("image: must be a file, not a text field")
            k = form_int(form, "k", DEFAULT_K, 1, MAX_K) or DEFAULT_K
            nprobe = form_int(form, "nprobe", None, 1, MAX_NPROBE)
            ef = form_int(form, "ef", None, 1, MAX_EF)
            fast = form_flag(form, "fast")
            data = await upload.read()
            name = printable(os.path.basename(upload.filename or "")) or "upload"
        finally:
            await form.close()
        results = await run_in_threadpool(service.search_upload, data, name, k, nprobe, ef, fast)
        return JSON({"query": {"name": name}, "results": results, "took_ms": ms_since(started)})

    @app.get("/api/search", summary="Search with an indexed image, by id")
    async def search_by_id(
        id: Annotated[
            int, Query(ge=1, le=MAX_ID, description="Catalog id of an indexed image (from any search's results).")
        ],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many results.")] = DEFAULT_K,
        nprobe: Annotated[int | None, Query(ge=1, le=MAX_NPROBE, description="IVF: lists to visit.")] = None,
        ef: Annotated[int | None, Query(ge=1, le=MAX_EF, description="HNSW: search beam.")] = None,
    ) -> JSON:
        """The images most like an indexed one, using its stored embedding (no decoding, no CNN)."""
        started = time.perf_counter()
        path, results = await run_in_threadpool(service.search_id, id, k, nprobe, ef)
        return JSON({"query": {"id": id, "path": path}, "results": results, "took_ms": ms_since(started)})

    @app.get("/api/images/{image_id}", summary="The original file of an indexed image")
    async def original(image_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> FileResponse:
        record = await run_in_threadpool(service.indexed_image, image_id)
        media_type = await run_in_threadpool(sniff_media_type, record.path)
        return FileResponse(
            record.path,
            media_type=media_type,
            filename=printable(os.path.basename(record.path)),
            content_disposition_type="inline",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @app.get("/api/thumbs/{image_id}", summary="A JPEG thumbnail of an indexed image")
    async def thumbnail(image_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
        data = await run_in_threadpool(service.thumbnail, image_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/stats", summary="Counts, model, index kind and sizes of the collection")
    async def stats() -> JSON:
        return JSON(await run_in_threadpool(service.stats))

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    duplicates = DuplicateService(service.live)

    @app.get("/api/duplicates", summary="Duplicate groups of the collection, paged")
    async def duplicate_groups(
        tier: Annotated[Literal["identical", "same-image", "near"], Query(description="The loosest tier.")] = "near",
        threshold: Annotated[float | None, Query(ge=-1.0, le=1.0, description="Cosine floor of that tier.")] = None,
        offset: Annotated[int, Query(ge=0, description="Groups to skip.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_GROUPS_PAGE, description="Groups to return.")] = 50,
    ) -> JSON:
        """`{"total", "groups": [{"tier", "keep": {"id", "path"}, "members": [{"id", "path", "similarity"}]}]}`,
        the groups of `lookalike duplicates --json` in the same order (computed once per state of the collection)."""
        return JSON(await run_in_threadpool(duplicates.page, tier, threshold, offset, limit))

    @app.post("/api/duplicates/decisions", summary="Store a review decision over some images")
    async def duplicate_decision(decision: DecisionRequest) -> JSON:
        """Mark images "not-duplicates" (never grouped together again) or "keep-all" (their group is not reported).
        Needs `"confirm": true`. Only the catalog changes: the server never moves or deletes a file."""
        number = await run_in_threadpool(duplicates.decide, decision.kind, decision.ids, decision.confirm)
        return JSON({"decision": number, "kind": decision.kind, "ids": sorted(set(decision.ids))})

    @app.get("/duplicates", include_in_schema=False)
    async def duplicates_page() -> FileResponse:
        return FileResponse(WEB_DIR / "duplicates.html", media_type="text/html", headers=_PAGE_HEADERS)


MAX_GROUPS_PAGE = 1000


class DecisionRequest(BaseModel):
    kind: Literal["not-duplicates", "keep-all"]
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=2, max_length=10_000)
    confirm: bool = False


_PAGE_HEADERS = {
    # The page loads nothing from anywhere else; thumbnails of local files and blob: previews only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
}
