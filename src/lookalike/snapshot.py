"""Readers of a collection that another process may be updating: one whole index at a time, for many threads.

A `Snapshot` is one loaded index (read-only, for one recorded index state) and a pool of read-only
collections over it, one SQLite connection each (connections are not shared between threads; the
Faiss index is, since searching it is thread-safe). `LiveCollection` holds the current snapshot and
swaps in a new one when the catalog records another index state: each caller takes the current
snapshot once and uses only it, inside one read transaction (a WAL snapshot of the catalog), so
every answer comes from one whole index. The old snapshot is closed when its last user is done.
Nothing here writes to the folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .collection import Collection
from .embedders import Embedder
from .errors import CorruptIndexError
from .index import use_one_search_thread
from .settings import IndexState, read_settings

log = logging.getLogger("lookalike.snapshot")


class Snapshot:
    """One loaded index and the read-only collections that serve with it."""

    def __init__(self, folder: Path, device: str) -> None:
        self.folder = folder
        self.device = device
        self.primary = Collection.open(folder, device=device, read_only=True)  # first in the pool
        self.loaded = False
        self.users = 0  # guarded by LiveCollection._swap_lock, as are retired and closed
        self.retired = False
        self.closed = False
        self._load_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._free: list[Collection] = []
        self._all: list[Collection] = [self.primary]

    @property
    def state(self) -> IndexState | None:
        return self.primary.index_state

    def load(self, patience: float = 0.0) -> None:
        """Load the index; while it is out of step with the catalog, retry for `patience` seconds.

        Past that, the file is taken as damaged: the index is built in memory from the catalog (the file is
        left for a writer to repair; with patience 0 the error is raised).
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
                        self.primary.use_index(*self.primary.store.build_in_memory())
                        break
                    time.sleep(0.1)
            self._free.append(self.primary)
            self.loaded = True

    @contextlib.contextmanager
    def reading(self) -> Iterator[Collection]:
        """A collection with a connection of its own, inside one read transaction (a consistent catalog view)."""
        with self._pool_lock:
            view = self._free.pop() if self._free else None
        if view is None:
            view = Collection.open(self.folder, device=self.device, read_only=True)
            view.use_index(self.primary.index(), self.primary.index_state)
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


class LiveCollection:
    """The current snapshot of a collection folder, renewed when another process records a new index."""

    FIRST_LOAD_PATIENCE = 10.0  # seconds a first load waits for a writer to bring file and catalog in step
    RETRY_FAILED_RELOAD = 5.0  # seconds before a reload that failed is tried again

    def __init__(
        self,
        folder: str | os.PathLike,
        device: str = "auto",
        reload_check_seconds: float = 0.5,
        one_search_thread: bool = False,
        max_megapixels: float | None = None,
    ) -> None:
        """`one_search_thread`: each calling thread's Faiss searches use one OpenMP thread (see index.py).

        `max_megapixels`: the largest image a reader decodes (default: what the memory available allows).
        """
        self.max_megapixels = max_megapixels
        self.folder = Path(folder)
        self.device = device
        self.reload_check_seconds = reload_check_seconds
        self.one_search_thread = one_search_thread
        self._swap_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._embedder_lock = threading.Lock()
        self._embedder: Embedder | None = None
        self._last_check = time.monotonic()
        self._failed: tuple[IndexState | None, float] = (None, 0.0)  # (state, when) of the last failed reload
        self._current = Snapshot(self.folder, device)  # fails fast (CollectionNotFoundError) on a bad folder
        self.reloads = 0

    def _acquire(self) -> Snapshot:
        with self._swap_lock:
            if self._current.closed:  # closed at a shutdown: an app that starts again opens it again
                self._current = Snapshot(self.folder, self.device)
            snapshot = self._current
            snapshot.users += 1
            return snapshot

    def _release(self, snapshot: Snapshot) -> None:
        with self._swap_lock:
            snapshot.users -= 1
            finished = snapshot.retired and snapshot.users == 0 and not snapshot.closed
            if finished:
                snapshot.closed = True
        if finished:
            snapshot.close()

    @contextlib.contextmanager
    def reading(self, embedding: bool = False) -> Iterator[Collection]:
        """A read-only collection on the current snapshot, in one read transaction, kept until the caller is done.

        With `embedding`, it embeds with the shared embedder (loaded on first use) rather than one of its own.
        """
        if self.one_search_thread:
            use_one_search_thread()
        embedder = self.embedder() if embedding else None
        self._maybe_reload()
        snapshot = self._acquire()
        try:
            snapshot.load(self.FIRST_LOAD_PATIENCE)
            with snapshot.reading() as collection:
                collection.max_megapixels = self.max_megapixels
                if embedder is not None:
                    collection.use_embedder(embedder)
                yield collection
        finally:
            self._release(snapshot)

    def _maybe_reload(self) -> None:
        """Swap in a new snapshot when the catalog records another index state than the current one."""
        now = time.monotonic()
        if now - self._last_check < self.reload_check_seconds:
            return
        self._last_check = now
        current = self._acquire()
        try:
            if not current.loaded:
                return  # a first load reads whatever is current anyway
            with current.reading() as view:
                state = read_settings(view.catalog).index_state
        finally:
            self._release(current)
        failed_state, failed_at = self._failed
        if state == current.state or (state == failed_state and now - failed_at < self.RETRY_FAILED_RELOAD):
            return
        if not self._reload_lock.acquire(blocking=False):
            return  # another caller is loading the new snapshot: go on with this one
        try:
            self._reload(state)
        finally:
            self._reload_lock.release()

    def _reload(self, state: IndexState | None) -> None:
        try:
            fresh = Snapshot(self.folder, self.device)
        except Exception as error:  # noqa: BLE001 - whatever happened, go on serving the loaded snapshot
            self._failed = (state, time.monotonic())
            log.warning("the index changed on disk but could not be reopened (%s); serving the previous one", error)
            return
        try:
            fresh.load()
            identity = fresh.primary.settings.embedder_id
        except Exception as error:  # noqa: BLE001 - as above; a writer between two steps is retried later
            fresh.close()
            self._failed = (state, time.monotonic())
            log.info("the index changed on disk but could not be loaded yet (%s); serving the previous one", error)
            return
        if self._embedder is not None and identity != self._embedder.identity:
            self._embedder = None  # the folder was rebuilt with another embedder: load that one when needed
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
        """The embedder, loaded once and checked against the collection's recorded identity."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    with self.reading() as collection:
                        self._embedder = collection.embedder()
        return self._embedder

    def close(self) -> None:
        """Close the current snapshot (at shutdown); a later reader opens a fresh one."""
        with self._reload_lock, self._swap_lock:
            snapshot = self._current
            if snapshot.closed:
                return
            snapshot.closed = True
        snapshot.close()
