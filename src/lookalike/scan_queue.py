"""The scan's work queue: what a scan saw and what it left to process, in the catalog's temporary tables.

A scan of a million files would hold a million paths in RAM; SQLite temporary tables (private to the
connection, gone when it closes) hold them on disk instead, and let the diff against the catalog
(moved files, files gone since the last scan) run as SQL.

A folder the catalog holds no row under yet (the first scan of a collection, or a new folder of it) has
nothing to diff against: its scan records only what to process, not what it saw, since no stored row
there can have gone (the first ingest of a large collection, where the driver's time per file counts most).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .catalog import (
    IMAGE_COLUMNS,
    UNDER_FOLDER,
    Catalog,
    ImageRecord,
    decode_path,
    encode_path,
    folder_bounds,
    record_from_row,
)


class ScanQueue:
    """The temporary tables `seen` and `todo` of one catalog connection."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.new_folder = False  # the catalog held no row under the scanned folder when the scan began

    def begin(self, root: str) -> None:
        """Start recording what a scan of `root` sees and what it must process (temporary tables, not RAM)."""
        self.new_folder = not self.catalog.has_images_under(root)
        self.catalog.connection.execute("CREATE TEMP TABLE IF NOT EXISTS seen (path BLOB PRIMARY KEY)")
        self.catalog.connection.execute(
            "CREATE TEMP TABLE IF NOT EXISTS todo (row INTEGER PRIMARY KEY, path BLOB, size INTEGER, mtime_ns INTEGER)"
        )
        self.catalog.connection.execute("DELETE FROM temp.seen")
        self.catalog.connection.execute("DELETE FROM temp.todo")

    def record(self, seen: Iterable[str], todo: Iterable[tuple[str, int, int]] = ()) -> None:
        """Remember paths that exist now (under a folder with stored rows), and the (path, size, mtime_ns) of files
        to process."""
        with self.catalog.transaction():
            if not self.new_folder:
                self.catalog.connection.executemany(
                    "INSERT OR IGNORE INTO temp.seen (path) VALUES (?)", ((encode_path(p),) for p in seen)
                )
            self.catalog.connection.executemany(
                "INSERT INTO temp.todo (path, size, mtime_ns) VALUES (?, ?, ?)",
                ((encode_path(p), size, mtime) for p, size, mtime in todo),
            )

    def todo_count(self) -> int:
        """How many files the current scan left to process."""
        return self.catalog.connection.execute("SELECT count(*) FROM temp.todo").fetchone()[0]

    def iter_todo(self, batch_size: int = 1000) -> Iterator[tuple[str, int, int]]:
        """Stream the scan's (path, size, mtime_ns) to process, in scan order, `batch_size` rows per query."""
        query = "SELECT row, path, size, mtime_ns FROM temp.todo WHERE row > ? ORDER BY row LIMIT ?"
        for rows in self.catalog.pages(query, 0, batch_size):
            for row in rows:
                yield decode_path(row[1]), row[2], row[3]

    def was_seen(self, path: str) -> bool:
        """True when the current scan saw a file at `path` (always False in a new folder: nothing is recorded)."""
        row = self.catalog.connection.execute("SELECT 1 FROM temp.seen WHERE path = ?", (encode_path(path),)).fetchone()
        return row is not None

    def unseen_under(self, root: str) -> list[ImageRecord]:
        """Rows under `root` whose files the scan did not see (deleted or moved away)."""
        if self.new_folder:
            return []  # every row under it now was added by this run, from a file the scan saw
        rows = self.catalog.connection.execute(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE {UNDER_FOLDER}"
            " AND path NOT IN (SELECT path FROM temp.seen) ORDER BY id",
            folder_bounds(root),
        )
        return [record_from_row(row) for row in rows]
