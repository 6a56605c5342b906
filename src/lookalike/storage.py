"""Durable file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader sees either the old file or the new one, never half of one, whatever
kills the writer (Ctrl-C, kill -9, a full disk, a power cut).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import StorageError


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    atomic_write_with(path, lambda scratch: Path(scratch).write_bytes(data))


def atomic_write_with(path: Path | str, write: Callable[[str], None]) -> None:
    """Let `write(scratch_path)` produce the file, then move it over `path` atomically and durably."""
    path = Path(path)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp makes it private; the files of an index are as readable as the folder
    scratch = Path(name)  # unique per call: threads and processes writing the same file never collide
    try:
        write(str(scratch))
        with open(scratch, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException as error:
        scratch.unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)):  # Faiss reports a failed write as RuntimeError
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[-1]
            raise StorageError(f"cannot write {path}: {reason}; the previous version is kept") from None
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_checksum(path: Path | str) -> str:
    """blake2b digest of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
