"""Every error lookalike raises on purpose, in one hierarchy.

The library never prints or exits: it raises one of these, and the CLI and the
server turn each into one line for the user (`str(error)` is that line).
"""

from __future__ import annotations


class LookalikeError(Exception):
    """Base class of every error the library raises on purpose."""


class IndexNotFoundError(LookalikeError):
    """The index directory does not exist or holds no catalog."""


class EmbedderMismatchError(LookalikeError):
    """The collection was embedded with another embedder than the one asked for."""


class UnknownEmbedderError(LookalikeError):
    """No embedder is registered under that name."""


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


class IndexSpecError(LookalikeError):
    """An index kind or factory string that cannot be built."""


class CorruptIndexError(LookalikeError):
    """The Faiss file does not match what the catalog recorded."""


class NotIndexedError(LookalikeError):
    """A query refers to an image id or path that the catalog does not hold."""


class CatalogWriteError(LookalikeError):
    """SQLite could not write the catalog (disk full, read-only, locked); committed work is kept."""


class StorageError(LookalikeError):
    """A file could not be written (disk full, permissions); the previous version is kept."""


class SchemaVersionError(LookalikeError):
    """The catalog was written by a newer lookalike than this one."""
