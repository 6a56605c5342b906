"""The HTTP API and the web page: a thin FastAPI layer over `Collection`.

`create_app(index_dir)` returns an ASGI app. The model and the Faiss index are
loaded once (on first use, or by `SearchService.warm()` before serving) and
shared by every request. Blocking work (decoding, embedding, Faiss, SQLite,
thumbnails) runs in worker threads, never on the event loop.

Another process may update the index folder while the server runs. The server
never writes to it (`ServedCollection` loads the Faiss file the catalog
recorded, read-only) and serves one *version* at a time: an index loaded for
one recorded `index_state`, with a pool of catalog connections. Each request
takes the current version once and uses only it, and reads the catalog inside
one read transaction (a WAL snapshot), so every response comes from one whole
index. When the catalog records another `index_state`, the next request loads
a new version while the others go on with the old one, then swaps it in
atomically; the old one is closed when its last request is done.

The server only translates errors: every error is `{"error": "..."}` with a
4xx status for bad input (413 too big, 415 not an image, 422 bad parameters,
404 unknown id, 401 no token, 400 bad Host header) and 503 when the collection
cannot be searched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import faiss
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .catalog import ImageRecord
from .collection import Collection
from .embedders import Embedder
from .errors import (
    CorruptIndexError,
    EmbedderMismatchError,
    EmbedderUnavailableError,
    ImageDecodeError,
    IndexNotFoundError,
    LookalikeError,
    NotIndexedError,
    SchemaVersionError,
    UnknownEmbedderError,
)
from .images import decode_bytes
from .index import INDEX_FILE, IndexState, VectorIndex
from .render import load_thumbnail, printable
from .storage import file_checksum

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_K = 1000
MAX_NPROBE = 65_536
MAX_EF = 65_536
DEFAULT_K = 10
THUMB_SIZE = 320
THUMB_CACHE_BYTES = 64 * 1024 * 1024
WEB_DIR = Path(__file__).parent / "web"

log = logging.getLogger("lookalike.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Library errors that mean "this server cannot search right now", not "bad request".
_UNAVAILABLE = (
    CorruptIndexError,
    EmbedderMismatchError,
    EmbedderUnavailableError,
    IndexNotFoundError,
    SchemaVersionError,
    UnknownEmbedderError,
)


def create_app(
    index_dir: str | os.PathLike,
    token: str | None = None,
    allowed_hosts: Iterable[str] = LOCAL_HOSTS,
    max_upload_bytes: int = 20_000_000,
    device: str = "auto",
    reload_check_seconds: float = 0.5,
) -> FastAPI:
    """The web app over the index folder `index_dir` (which must exist: IndexNotFoundError otherwise).

    `token`: when given, every /api call needs `Authorization: Bearer <token>` or `?token=<token>`.
    `allowed_hosts`: host names accepted in the Host header (DNS-rebinding guard); "*" accepts any.
    `max_upload_bytes`: the largest request body POST /api/search reads (413 beyond).
    `reload_check_seconds`: how often (at most) a request checks whether another process updated the index.
    """
    service = SearchService(index_dir, device=device, reload_check_seconds=reload_check_seconds)

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
    _install_error_handlers(app)
    _install_routes(app, service, max_upload_bytes)
    _install_docs(app, token is not None)
    app.add_middleware(_Guard, allowed_hosts=allowed_hosts, token=token)
    return app


# --- the collection, as the server sees it -----------------------------------------


class ServedCollection(Collection):
    """A Collection that never writes to its folder, because another process may be writing to it.

    `Collection.index()` repairs what it finds (rebuilds a stale or damaged Faiss file and saves it), which is
    right for the process that owns the folder but races with a concurrent `lookalike index`. This one loads the
    Faiss file the catalog recorded, read-only, adds in memory the embeddings committed since, and raises
    CorruptIndexError when the file and the catalog are out of step (a writer between its two steps).
    """

    served_state: str | None = None  # the catalog's index_state the loaded index matches
    _served: VectorIndex | None = None

    def index(self) -> VectorIndex:
        if self._served is None:
            self._served, self.served_state = self._load_read_only()
        return self._served

    def _load_read_only(self) -> tuple[VectorIndex, str | None]:
        raw = self.catalog.get_meta("index_state")
        if raw is None:
            return self.build_in_memory(), None
        state = IndexState(**json.loads(raw))
        path = self.folder / INDEX_FILE
        index = VectorIndex.load(path, state, self.metric)
        if file_checksum(path) != state.checksum:  # replaced between the check and the read
            raise CorruptIndexError(f"{path} was replaced while it was being read")
        for ids, vectors in self.catalog.iter_embeddings(after_id=state.high_water):
            index.add(ids, vectors)
        return index, raw

    def share_index(self, other: ServedCollection) -> None:
        """Serve the index `other` loaded (another connection to the same catalog, the same index)."""
        self._served, self.served_state = other.index(), other.served_state

    def build_in_memory(self) -> VectorIndex:
        """The index the catalog describes, built from the stored embeddings and kept in memory only."""
        self.served_state = self.catalog.get_meta("index_state")  # no reload until the catalog records another
        plan = self.current_plan()
        index = VectorIndex.create(plan, self.dim)
        if not index.is_trained:
            index.train(self.catalog.sample_embeddings(plan.train_size or 10_000))
        for ids, vectors in self.catalog.iter_embeddings():
            index.add(ids, vectors)
        self._served = index
        return index


class _Version:
    """One loaded index, the catalog connections that serve requests with it, and how many requests use it.

    The Faiss index is shared (searching it is thread-safe); SQLite connections are not, so each request
    borrows one from a pool (one more ServedCollection per connection, all sharing the index). Requests thus
    never wait for each other, and a version is closed only once no request uses it.
    """

    def __init__(self, folder: Path, device: str) -> None:
        self.folder = folder
        self.device = device
        self.primary = ServedCollection.open(folder, device=device)  # loads the index; first in the pool
        self.loaded = False
        self.users = 0  # guarded by SearchService._swap_lock, as are retired and closed
        self.retired = False
        self.closed = False
        self._load_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._free: list[ServedCollection] = []
        self._all: list[ServedCollection] = [self.primary]

    @property
    def state(self) -> str | None:
        return self.primary.served_state

    def load(self, patience: float = 0.0) -> None:
        """Load the index; while it is out of step with the catalog, retry for `patience` seconds.

        Past that, the file is taken as damaged: the index is built in memory from the catalog (the file is
        left for `lookalike index` or `lookalike reindex` to repair; with patience 0 the error is raised).
        """
        if self.loaded:
            return
        with self._load_lock:
            if self.loaded:
                return
            deadline = time.monotonic() + patience
            while True:
                try:
                    self.primary.index()
                    break
                except CorruptIndexError as error:
                    if time.monotonic() >= deadline:
                        if not patience:
                            raise
                        log.warning("%s; serving an index built in memory from the catalog", error)
                        self.primary.build_in_memory()
                        break
                    time.sleep(0.1)
            self._free.append(self.primary)
            self.loaded = True

    @contextlib.contextmanager
    def reading(self) -> Iterator[ServedCollection]:
        """A collection with a connection of its own, inside one read transaction (a consistent catalog snapshot)."""
        with self._pool_lock:
            view = self._free.pop() if self._free else None
        if view is None:
            view = ServedCollection.open(self.folder, device=self.device)
            view.share_index(self.primary)
            with self._pool_lock:
                self._all.append(view)
        connection = view.catalog.connection
        try:
            connection.execute("BEGIN")
            try:
                yield view
            finally:
                connection.execute("COMMIT")
        finally:
            with self._pool_lock:
                self._free.append(view)

    def close(self) -> None:
        with self._pool_lock:
            views, self._all, self._free = self._all, [], []
        for view in views:
            view.close()


class SearchService:
    """The collection behind the app: shared model, versioned index, thumbnail cache."""

    FIRST_LOAD_PATIENCE = 10.0  # seconds a first load waits for a writer to bring file and catalog in step
    RETRY_FAILED_RELOAD = 5.0  # seconds before a reload that failed is tried again

    def __init__(self, folder: str | os.PathLike, device: str = "auto", reload_check_seconds: float = 0.5) -> None:
        self.folder = Path(folder)
        self.device = device
        self.reload_check_seconds = reload_check_seconds
        self._swap_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._embedder_lock = threading.Lock()
        self._embedder: Embedder | None = None
        # Uploads are decoded and embedded in one thread of lower OS priority (see _background_priority), one at
        # a time: each embedding already uses every core (the model's intra-op threads, which inherit the lower
        # priority as they are created there), and searches by id must not wait behind them for the CPU.
        self._embed_pool = ThreadPoolExecutor(1, "lookalike-embed", initializer=_background_priority)
        self._last_check = time.monotonic()
        self._failed: tuple[str | None, float] = (None, 0.0)  # (state, when) of the last reload that failed
        self._current = _Version(self.folder, device)  # fails fast (IndexNotFoundError) on a bad folder
        self.thumbs = _ThumbCache(THUMB_CACHE_BYTES)
        self.reloads = 0

    # --- versions ------------------------------------------------------------------

    def _acquire(self) -> _Version:
        with self._swap_lock:
            version = self._current
            if version.closed:
                raise RuntimeError("the service is closed")
            version.users += 1
            return version

    def _release(self, version: _Version) -> None:
        with self._swap_lock:
            version.users -= 1
            finished = version.retired and version.users == 0 and not version.closed
            if finished:
                version.closed = True
        if finished:
            version.close()

    @contextlib.contextmanager
    def _use(self) -> Iterator[_Version]:
        """The current version, loaded, kept open until the caller is done with it."""
        _one_faiss_thread()
        self._maybe_reload()
        version = self._acquire()
        try:
            version.load(self.FIRST_LOAD_PATIENCE)
            yield version
        finally:
            self._release(version)

    def _maybe_reload(self) -> None:
        """Swap in a new version when the catalog records another index_state than the current one."""
        now = time.monotonic()
        if now - self._last_check < self.reload_check_seconds:
            return
        self._last_check = now
        current = self._acquire()
        try:
            if not current.loaded:
                return  # a first load reads whatever is current anyway
            with current.reading() as view:
                state = view.catalog.get_meta("index_state")
        finally:
            self._release(current)
        failed_state, failed_at = self._failed
        if state == current.state or (state == failed_state and now - failed_at < self.RETRY_FAILED_RELOAD):
            return
        if not self._reload_lock.acquire(blocking=False):
            return  # another request is loading the new version: go on with this one
        try:
            self._reload(state)
        finally:
            self._reload_lock.release()

    def _reload(self, state: str | None) -> None:
        try:
            fresh = _Version(self.folder, self.device)
        except Exception as error:  # noqa: BLE001 - whatever happened, go on serving the loaded version
            self._failed = (state, time.monotonic())
            log.warning("the index changed on disk but could not be reopened (%s); serving the previous one", error)
            return
        try:
            fresh.load()
            identity = fresh.primary.catalog.get_meta("embedder")
        except Exception as error:  # noqa: BLE001 - as above; a writer between two steps is retried later
            fresh.close()
            self._failed = (state, time.monotonic())
            log.info("the index changed on disk but could not be loaded yet (%s); serving the previous one", error)
            return
        if self._embedder is not None and identity != self._embedder.identity:
            self._embedder = None  # the folder was rebuilt with another model: load that one when needed
        with self._swap_lock:
            old, self._current = self._current, fresh
            old.retired = True
            finished = old.users == 0 and not old.closed
            if finished:
                old.closed = True
        if finished:
            old.close()
        self.reloads += 1
        log.info("the index was updated by another process: now serving %s", fresh.state)

    def embedder(self) -> Embedder:
        """The model, loaded once and checked against the collection's recorded identity (call it in _embed_pool)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    with self._use() as version, version.reading() as view:
                        self._embedder = view.embedder()
        return self._embedder

    def warm(self) -> None:
        """Load the index and the model now rather than on the first request."""
        with self._use():
            pass
        self._embed_pool.submit(self.embedder).result()

    def close(self) -> None:
        """Close the current version (at shutdown)."""
        self._embed_pool.shutdown(wait=True)
        with self._reload_lock, self._swap_lock:
            version = self._current
            if version.closed:
                return
            version.closed = True
        version.close()

    # --- operations (blocking: call them in a worker thread) -----------------------

    def search_upload(self, data: bytes, name: str, k: int, nprobe: int | None, ef: int | None) -> list[dict[str, Any]]:
        """Decode and embed an uploaded image (in the embedding thread), then search the current version."""
        vector = self._embed_pool.submit(self._embed_upload, data, name).result()
        return self.search_vector(vector, name, k, nprobe, ef)

    def _embed_upload(self, data: bytes, name: str) -> np.ndarray:
        embedder = self.embedder()
        return embedder.embed(decode_bytes(data, name, embedder.input_size).pixels[None])

    def search_vector(
        self, vector: np.ndarray, name: str, k: int, nprobe: int | None, ef: int | None
    ) -> list[dict[str, Any]]:
        with self._use() as version, version.reading() as collection:
            result = collection.search_vectors(vector, [name], k, nprobe, ef)[0]
        return result.to_dict()["results"]

    def search_id(self, image_id: int, k: int, nprobe: int | None, ef: int | None) -> tuple[str, list[dict]]:
        """Search with an indexed image's stored embedding; (its path, results)."""
        with self._use() as version, version.reading() as collection:
            result = collection.search_ids([image_id], k, nprobe, ef)[0]
        return result.query, result.to_dict()["results"]

    def indexed_image(self, image_id: int) -> ImageRecord:
        """The catalog row of an indexed image whose file is still the one that was indexed."""
        with self._use() as version, version.reading() as collection:
            record = collection.catalog.images_by_id([image_id]).get(image_id)
        if record is None or record.status != "indexed":
            raise NotIndexedError(f"no indexed image has id {image_id}")
        try:
            info = os.stat(record.path)
        except OSError:
            raise NotIndexedError(f"the file of image {image_id} is no longer where it was indexed") from None
        if info.st_size != record.size or info.st_mtime_ns != record.mtime_ns:
            raise NotIndexedError(f"the file of image {image_id} changed since it was indexed; index it again")
        return record

    def thumbnail(self, image_id: int) -> bytes:
        """A JPEG thumbnail of an indexed image, from the cache when possible."""
        record = self.indexed_image(image_id)
        key = (record.id, record.content_hash, record.mtime_ns)
        cached = self.thumbs.get(key)
        if cached is not None:
            return cached
        buffer = BytesIO()
        load_thumbnail(record.path, THUMB_SIZE).save(buffer, format="JPEG", quality=82, optimize=True)
        data = buffer.getvalue()
        self.thumbs.put(key, data)
        return data

    def stats(self) -> dict[str, Any]:
        with self._use() as version, version.reading() as collection:
            info = collection.info()
            served = collection.index().count
        return {
            "images": info.images,
            "skipped": info.skipped,
            "removed_since_rebuild": info.tombstones,
            "embedder": info.embedder,
            "dim": info.dim,
            "metric": info.metric,
            "index_kind": info.index_kind,
            "index_factory": info.index_factory,
            "vectors": info.index_vectors,
            "served_vectors": served,
            "bytes_on_disk": sum(info.bytes_on_disk.values()),
            "files": info.bytes_on_disk,
            "search_params": info.search_params,
        }


_threads = threading.local()
BACKGROUND_NICENESS = 5


def _background_priority() -> None:
    """Lower the OS priority of the calling thread (Linux applies setpriority to one thread).

    Under CPU contention the scheduler then serves searches by id (a few ms each) before embeddings
    (tens of ms); on an idle machine nothing changes.
    """
    with contextlib.suppress(AttributeError, OSError):  # no setpriority, or not allowed: keep the priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


def _one_faiss_thread() -> None:
    """Make Faiss use one OpenMP thread in the calling (worker) thread.

    A request searches one vector: an OpenMP team gains nothing there, and on a busy machine its threads spin
    waiting for each other (measured: 8 ms instead of 0.9 ms of CPU per search of a 5,000-image flat index).
    Requests run side by side instead. OpenMP keeps this setting per thread, so the process's other Faiss calls
    (an ingest or a reindex in the same process) keep theirs.
    """
    if not getattr(_threads, "faiss_single", False):
        faiss.omp_set_num_threads(1)
        _threads.faiss_single = True


class _ThumbCache:
    """A thread-safe LRU of encoded thumbnails, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)


# --- routes -------------------------------------------------------------------------


class _TooLarge(Exception):
    """The request body grew past the upload limit while it was being read."""


def _install_routes(app: FastAPI, service: SearchService, max_upload_bytes: int) -> None:
    @app.post(
        "/api/search",
        summary="Search with an uploaded image",
        openapi_extra=_UPLOAD_OPENAPI,
        responses={413: {"description": "Upload too large"}, 415: {"description": "Not an image"}},
    )
    async def search_upload(request: Request) -> dict[str, Any]:
        """Upload an image as multipart field `image`; get the most similar images of the collection, best first.

        Form fields: `k` (results, 1..1000, default 10), `nprobe` (IVF lists to visit), `ef` (HNSW search beam).
        """
        started = time.perf_counter()
        form = await _read_form(request, max_upload_bytes)
        try:
            upload = form.get("image")
            if upload is None:
                raise _unprocessable("image: send the image as the multipart file field 'image'")
            if not isinstance(upload, UploadFile):
                raise _unprocessable("image: must be a file, not a text field")
            k = _form_int(form, "k", DEFAULT_K, 1, MAX_K)
            nprobe = _form_int(form, "nprobe", None, 1, MAX_NPROBE)
            ef = _form_int(form, "ef", None, 1, MAX_EF)
            data = await upload.read()
            name = printable(os.path.basename(upload.filename or "")) or "upload"
        finally:
            await form.close()
        results = await run_in_threadpool(service.search_upload, data, name, k, nprobe, ef)
        return {"query": {"name": name}, "results": results, "took_ms": _ms_since(started)}

    @app.get("/api/search", summary="Search with an indexed image, by id")
    async def search_by_id(
        id: Annotated[int, Query(ge=1, description="Catalog id of an indexed image (from any search's results).")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many results.")] = DEFAULT_K,
        nprobe: Annotated[int | None, Query(ge=1, le=MAX_NPROBE, description="IVF: lists to visit.")] = None,
        ef: Annotated[int | None, Query(ge=1, le=MAX_EF, description="HNSW: search beam.")] = None,
    ) -> dict[str, Any]:
        """The images most like an indexed one, using its stored embedding (no decoding, no CNN)."""
        started = time.perf_counter()
        path, results = await run_in_threadpool(service.search_id, id, k, nprobe, ef)
        return {"query": {"id": id, "path": path}, "results": results, "took_ms": _ms_since(started)}

    @app.get("/api/images/{image_id}", summary="The original file of an indexed image")
    async def original(image_id: int) -> FileResponse:
        record = await run_in_threadpool(service.indexed_image, image_id)
        media_type = await run_in_threadpool(_sniff_media_type, record.path)
        return FileResponse(
            record.path,
            media_type=media_type,
            filename=printable(os.path.basename(record.path)),
            content_disposition_type="inline",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @app.get("/api/thumbs/{image_id}", summary="A JPEG thumbnail of an indexed image")
    async def thumbnail(image_id: int) -> Response:
        data = await run_in_threadpool(service.thumbnail, image_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/stats", summary="Counts, model, index kind and sizes of the collection")
    async def stats() -> dict[str, Any]:
        return await run_in_threadpool(service.stats)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")


_PAGE_HEADERS = {
    # The page loads nothing from anywhere else; thumbnails of local files and blob: previews only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
}

_UPLOAD_OPENAPI = {
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
                    },
                }
            }
        },
    }
}


async def _read_form(request: Request, limit: int) -> Any:
    """Parse the multipart body, refusing it (413) as soon as it is known to exceed `limit` bytes."""
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
        message = await receive()
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


def _too_large(limit: int) -> StarletteHTTPException:
    return StarletteHTTPException(413, f"upload larger than the server's limit of {limit} bytes")


def _unprocessable(message: str) -> StarletteHTTPException:
    return StarletteHTTPException(422, message)


def _form_int(form: Any, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    if not isinstance(raw, str):
        raise _unprocessable(f"{name}: must be a number, not a file")
    try:
        value = int(raw.strip())
    except ValueError:
        raise _unprocessable(f"{name}: must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise _unprocessable(f"{name}: must be between {low} and {high}, not {value}")
    return value


def _ms_since(started: float) -> float:
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


def _sniff_media_type(path: str) -> str:
    """The media type of an image file, from its first bytes (not its name)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    for offset, magic, media_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return media_type
    return "application/octet-stream"


# --- errors ---------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "path", "body"))
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(LookalikeError)
    async def library_error(request: Request, error: LookalikeError) -> JSONResponse:
        if isinstance(error, ImageDecodeError):
            return _error(415, f"not an image lookalike can read: {error}")
        if isinstance(error, NotIndexedError):
            return _error(404, str(error))
        if isinstance(error, _UNAVAILABLE):
            log.error("cannot search: %s", error)
            return _error(503, f"the server cannot search this collection: {error}")
        return _error(400, str(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette re-raises after this (so it is logged with its traceback); the client gets JSON.
        return _error(500, f"internal error ({type(error).__name__}); see the server's log")


# --- docs (offline: Swagger UI is served from the package, not a CDN) -----------------------


def _install_docs(app: FastAPI, with_token: bool) -> None:
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


# --- Host and token checks --------------------------------------------------------------


def host_name(value: str) -> str:
    """The host of a Host header or a host setting, lower case, without port, brackets or trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


@dataclass
class _Guard:
    """ASGI middleware: Host header check (DNS rebinding) on every request, token check on /api."""

    app: ASGIApp
    allowed_hosts: Iterable[str]
    token: str | None

    def __post_init__(self) -> None:
        hosts = {host_name(h) for h in self.allowed_hosts}
        self._any_host = "*" in hosts
        self._hosts = frozenset(hosts - {"*"})
        self._token = self.token.encode() if self.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not self._any_host:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self._hosts:
                await _error(400, "this server does not answer to that Host header")(scope, receive, send)
                return
        path = scope.get("path", "")
        guarded = path == "/api" or path.startswith("/api/")
        if guarded and self._token is not None and not self._authorised(headers, scope.get("query_string", b"")):
            response = _error(401, "this server needs its token: 'Authorization: Bearer <token>' or ?token=<token>")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorised(self, headers: dict[bytes, bytes], query_string: bytes) -> bool:
        assert self._token is not None
        given: list[bytes] = []
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            given.append(credentials.strip())
        for value in parse_qs(query_string.decode("latin-1"), encoding="latin-1").get("token", []):
            given.append(value.encode("latin-1"))
        return any(secrets.compare_digest(candidate, self._token) for candidate in given)
