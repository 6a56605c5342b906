"""The collection behind the app: a live read-only view, one embedding thread, a thumbnail cache.

Blocking work (decoding, embedding, Faiss, SQLite, thumbnails) runs in worker threads, never on the
event loop. Uploads are decoded and embedded in one thread of lower OS priority, one at a time: each
embedding already uses every core (the model's intra-op threads, which inherit the lower priority as
they are created there), and searches by id must not wait behind them for the CPU.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

from ..collection import ImageRecord
from ..render import load_thumbnail
from ..snapshot import LiveCollection

THUMB_SIZE = 320
THUMB_CACHE_BYTES = 64 * 1024 * 1024
BACKGROUND_NICENESS = 5


class SearchService:
    """What the routes call: search by upload or id, images, thumbnails and stats of the live collection."""

    def __init__(
        self,
        folder: str | os.PathLike,
        device: str = "auto",
        reload_check_seconds: float = 0.5,
        max_megapixels: float | None = None,
    ) -> None:
        # Uploads decode one at a time (one embedding thread), so each may use the memory available.
        self.live = LiveCollection(folder, device, reload_check_seconds, True, max_megapixels)
        self._embed_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.thumbs = ThumbCache(THUMB_CACHE_BYTES)

    @property
    def reloads(self) -> int:
        return self.live.reloads

    def warm(self) -> None:
        """Load the index and the embedder now rather than on the first request."""
        with self.live.reading():
            pass
        self._embedding_thread().submit(self.live.embedder).result()

    def close(self) -> None:
        """Stop the embedding thread and close the collection (at shutdown; a later request opens them again)."""
        with self._pool_lock:
            pool, self._embed_pool = self._embed_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.live.close()

    # --- operations (blocking: call them in a worker thread) -----------------------

    def search_upload(
        self, data: bytes, name: str, k: int, nprobe: int | None, ef: int | None, fast: bool = False
    ) -> list[dict[str, Any]]:
        """Decode, embed and search with an uploaded image, in the embedding thread (accurate unless `fast`)."""
        return self._embedding_thread().submit(self._search_upload, data, name, k, nprobe, ef, fast).result()

    def _embedding_thread(self) -> ThreadPoolExecutor:
        """The one thread uploads are embedded in, started on first use (and again after a shutdown)."""
        with self._pool_lock:
            if self._embed_pool is None:
                self._embed_pool = ThreadPoolExecutor(1, "lookalike-embed", initializer=_background_priority)
            return self._embed_pool

    def _search_upload(
        self, data: bytes, name: str, k: int, nprobe: int | None, ef: int | None, fast: bool
    ) -> list[dict]:
        mode = "fast" if fast else "accurate"
        with self.live.reading(embedding=True) as collection:
            return collection.search_image_bytes(data, name, k, nprobe, ef, mode=mode).to_dict()["results"]

    def search_id(self, image_id: int, k: int, nprobe: int | None, ef: int | None) -> tuple[str, list[dict]]:
        """Search with an indexed image's stored embedding; (its path, results)."""
        with self.live.reading() as collection:
            result = collection.search_ids([image_id], k, nprobe, ef)[0]
        return result.query, result.to_dict()["results"]

    def indexed_image(self, image_id: int) -> ImageRecord:
        """The catalog row of an indexed image whose file is still the one that was indexed."""
        with self.live.reading() as collection:
            return collection.image_file(image_id)

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
        """The collection's numbers (the shape of `lookalike info --json`) and how many vectors are served."""
        with self.live.reading() as collection:
            return {**collection.info().to_dict(), "served_vectors": collection.index().count}


def _background_priority() -> None:
    """Lower the OS priority of the calling thread (Linux applies setpriority to one thread).

    Under CPU contention the scheduler then serves searches by id (a few ms each) before embeddings
    (tens of ms); on an idle machine nothing changes.
    """
    with contextlib.suppress(AttributeError, OSError):  # no setpriority, or not allowed: keep the priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


class ThumbCache:
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
