"""Every error lookalike raises on purpose, in one hierarchy.

The library never prints or exits: it raises one of these, and the CLI and the
server turn each into one line for the user (`str(error)` is that line). The
library's messages say what is wrong in the library's words; they never name a
command-line flag or an HTTP field: the shells add that hint.

    LookalikeError
    ├── InvalidArgumentError        a value the caller passed cannot be used
    │   ├── IndexSpecError          an index kind or factory string that cannot be built
    │   ├── UnknownEmbedderError    no embedder registered under that name
    │   └── EmbedderMismatchError   the collection was embedded by another embedder
    ├── BusyError                   another process is updating the collection; try again later
    ├── NotFoundError
    │   ├── CollectionNotFoundError the folder holds no collection (alias: IndexNotFoundError)
    │   └── NotIndexedError         an image id or path the catalog does not hold
    ├── CorruptError
    │   ├── CorruptIndexError       the Faiss file does not match what the catalog recorded
    │   └── CorruptCatalogError     the catalog file is damaged, empty or not a catalog
    ├── EmbedderUnavailableError    the embedder's weights or libraries cannot be loaded
    ├── ImageDecodeError            a file could not be read or decoded as an image
    ├── StorageError                a file could not be written; the previous version is kept
    │   └── CatalogWriteError       SQLite could not write; committed work is kept
    └── SchemaVersionError          the catalog was written by a newer lookalike

The HTTP status each maps to lives in the server (`lookalike.server.errors`).
"""

from __future__ import annotations


class LookalikeError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidArgumentError(LookalikeError):
    """A value the caller passed cannot be used (out of range, wrong kind, wrong folder)."""

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument  # the parameter's name in the library's API, for shells that map it to a flag


class IndexSpecError(InvalidArgumentError):
    """An index kind or factory string that cannot be built."""


class UnknownEmbedderError(InvalidArgumentError):
    """No embedder is registered under that name."""


class EmbedderMismatchError(InvalidArgumentError):
    """The collection was embedded with another embedder than the one asked for."""


class BusyError(LookalikeError):
    """Another process is updating the collection; the same call can succeed later."""


class NotFoundError(LookalikeError):
    """Something the caller named does not exist."""


class CollectionNotFoundError(NotFoundError):
    """The folder does not exist or holds no catalog."""


IndexNotFoundError = CollectionNotFoundError  # the name of earlier versions


class NotIndexedError(NotFoundError):
    """A query refers to an image id or path that the catalog does not hold."""


class CorruptError(LookalikeError):
    """A file of the collection is damaged or out of step with the catalog."""


class CorruptIndexError(CorruptError):
    """The Faiss file does not match what the catalog recorded."""


class CorruptCatalogError(CorruptError):
    """The catalog file is damaged, empty, or not a lookalike catalog."""


class EmbedderUnavailableError(LookalikeError):
    """The embedder is registered, but its weights or libraries cannot be loaded."""


class ImageDecodeError(LookalikeError):
    """A file could not be read or decoded as an image."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)  # both in args, so the error pickles across processes
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class StorageError(LookalikeError):
    """A file could not be written (disk full, permissions); the previous version is kept."""


class CatalogWriteError(StorageError):
    """SQLite could not write the catalog (disk full, read-only, locked); committed work is kept."""


class SchemaVersionError(LookalikeError):
    """The catalog was written by a newer lookalike than this one."""


__all__ = [
    "BusyError",
    "CatalogWriteError",
    "CollectionNotFoundError",
    "CorruptCatalogError",
    "CorruptError",
    "CorruptIndexError",
    "EmbedderMismatchError",
    "EmbedderUnavailableError",
    "ImageDecodeError",
    "IndexNotFoundError",
    "IndexSpecError",
    "InvalidArgumentError",
    "LookalikeError",
    "NotFoundError",
    "NotIndexedError",
    "SchemaVersionError",
    "StorageError",
    "UnknownEmbedderError",
]
