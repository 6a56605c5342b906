"""The catalog's SQLite file: opening it, creating it whole or not at all, and naming damage as such.

SQLite reports a damaged file ("file is not a database", "database disk image is malformed") as a
plain DatabaseError, on whichever statement first touches the bad page. The connection and cursors
made here turn those into CorruptCatalogError wherever they surface, so every command ends with one
line that says what happened and what to do. A new catalog is built under a temporary name and
linked into place only once its schema is complete: a full disk or a crash leaves no half-made
catalog, and of two processes creating the same collection at once, one creates it and the other
opens it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import CatalogWriteError, CorruptCatalogError, StorageError

_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


def damage(path: Path, error: sqlite3.DatabaseError) -> CorruptCatalogError:
    """The error for a damaged catalog file."""
    return CorruptCatalogError(
        f"the catalog {path} is damaged ({error}): restore it from a backup, or index the photos again into a new "
        "folder (the photos themselves are untouched)"
    )


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    return type(error) is sqlite3.DatabaseError


class _Cursor(sqlite3.Cursor):
    """A cursor whose every step reports a damaged file as CorruptCatalogError."""

    path: Path

    def _translated(self, error: sqlite3.DatabaseError) -> Exception:
        return damage(self.path, error) if _is_damage(error) else error

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as error:
            raise self._translated(error) from None

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as error:
            raise self._translated(error) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as error:
            raise self._translated(error) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as error:
            raise self._translated(error) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as error:
            raise self._translated(error) from None


class CatalogConnection(sqlite3.Connection):
    """A connection whose statements report a damaged file as CorruptCatalogError."""

    path: Path = Path()

    def cursor(self, factory: Any = None) -> _Cursor:  # type: ignore[override]
        cursor = super().cursor(factory or _Cursor)
        cursor.path = self.path
        return cursor

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _Cursor:
        return self.cursor().executemany(sql, parameters)


def connect(path: Path) -> CatalogConnection:
    """Open an existing catalog file (CorruptCatalogError when it is empty or not SQLite at all)."""
    if path.stat().st_size == 0:
        raise CorruptCatalogError(
            f"the catalog {path} is empty: restore it from a backup, or index the photos again into a new folder"
        )
    writable = os.access(path.parent, os.W_OK)  # False on a read-only mount, for root too
    # On read-only media SQLite cannot make the WAL's shared-memory file: open the file as it is, immutable.
    target = str(path) if writable else f"file:{quote(os.fsencode(path))}?mode=ro&immutable=1"
    connection = sqlite3.connect(
        target, timeout=30.0, isolation_level=None, check_same_thread=False, factory=CatalogConnection, uri=not writable
    )
    connection.path = path
    try:
        if not writable:
            return connection
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        # Hit lookups on a million-row catalog miss SQLite's default 2 MB page cache.
        connection.execute("PRAGMA cache_size=-65536")
        connection.execute("PRAGMA mmap_size=268435456")
    except BaseException:
        connection.close()
        raise
    return connection


def create(path: Path, initialise: Callable[[sqlite3.Connection], None]) -> None:
    """Create the catalog file at `path` whole, with `initialise` run on it, unless one appears meanwhile."""
    folder = path.parent
    missing = [folder, *folder.parents]
    made = [place for place in missing[: next(i for i, p in enumerate(missing) if p.exists())]]  # deepest first
    # Not named like atomic writes' scratch files (.*.tmp): a lock holder removes those, and this one is
    # made before any lock exists.
    scratch = folder / f".{path.name}.{os.getpid()}.new"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(scratch, isolation_level=None)
        try:
            initialise(connection)
        finally:
            connection.close()
        with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
            os.link(scratch, path)
    except (OSError, sqlite3.Error) as error:
        with contextlib.suppress(OSError):
            scratch.unlink()
        for place in made:  # the folders this call made, deepest first, if still empty: nothing half-made is left
            with contextlib.suppress(OSError):
                place.rmdir()
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise StorageError(f"cannot create the catalog in {folder}: {reason}") from None
    finally:
        with contextlib.suppress(OSError):
            scratch.unlink()


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT; on any error ROLLBACK, and SQLite write failures become CatalogWriteError."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        self.outermost = False

    def __enter__(self) -> sqlite3.Connection:
        self.outermost = not self.connection.in_transaction
        if self.outermost:
            try:
                self.connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise self._failure(error) from None
        return self.connection

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if not self.outermost:
            return
        if kind is None:
            try:
                self.connection.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self._rollback()
                raise self._failure(error) from None
        self._rollback()
        if isinstance(value, sqlite3.OperationalError):
            raise self._failure(value) from None

    def _rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def _failure(self, error: sqlite3.Error) -> CatalogWriteError:
        return CatalogWriteError(
            f"cannot write the catalog {self.path}: {error}; everything committed before is kept "
            "(free disk space or fix permissions, then run the same command again)"
        )
