"""Files of a collection folder: durable writes, checksums, fingerprints and the update lock.

Writes go to a temp file in the same folder, are fsynced, renamed over the old
file, and the folder is fsynced: a reader sees either the old file or the new
one, never half of one, whatever kills the writer (Ctrl-C, kill -9, a full
disk, a power cut). One lock file keeps two processes from updating a folder at
once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BusyError, StorageError

LOCK_FILE = ".lock"


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""

    def write(scratch: str) -> None:
        Path(scratch).write_bytes(data)

    atomic_write_with(path, write)


def atomic_write_with(path: Path | str, write: Callable[[str], None]) -> None:
    """Let `write(scratch_path)` produce the file, then move it over `path` atomically and durably."""
    path = Path(path)
    try:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(descriptor)
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


def file_fingerprint(path: Path | str) -> dict[str, int]:
    """size, mtime, ctime and inode of a file: any write, truncation, replacement or copy changes one of them.

    ctime cannot be set from user space (unlike mtime), so a file changed in place after its checksum
    was recorded does not keep a matching fingerprint.
    """
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns, "inode": info.st_ino}


SCRATCH_PATTERN = ".*.tmp"  # what atomic_write_with names its temporary files


def scratch_files(folder: Path) -> list[Path]:
    """Temporary files of atomic writes in `folder` (left behind only when a writer was killed)."""
    return sorted(path for path in folder.glob(SCRATCH_PATTERN) if path.is_file())


def remove_stale_scratch(folder: Path, pattern: str = SCRATCH_PATTERN, min_age_seconds: float = 0.0) -> int:
    """Delete scratch files at least `min_age_seconds` old; return how many (call only while holding the lock)."""
    removed = 0
    now = time.time()
    for path in sorted(folder.glob(pattern)):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime >= min_age_seconds:
                path.unlink()
                removed += 1
    return removed


class FolderLock:
    """The update lock of one folder (an flock on its lock file), re-entrant within one holder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._depth = 0

    @contextlib.contextmanager
    def hold(self, required: bool = True) -> Iterator[bool]:
        """Hold the lock; yields False when another process has it and it is not `required` (else BusyError)."""
        if self._depth:
            self._depth += 1
            try:
                yield True
            finally:
                self._depth -= 1
            return
        try:
            handle = open(self.folder / LOCK_FILE, "a")  # noqa: SIM115 - closed below, after the lock
        except OSError as error:
            if required:
                raise StorageError(f"cannot update {self.folder}: {error.strerror or error}") from None
            yield False  # a read-only folder: nobody can write it, so there is nothing to wait for
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if required:
                    raise BusyError(
                        f"another lookalike process is updating {self.folder}; wait for it to finish"
                    ) from None
                yield False
                return
            self._depth = 1
            try:
                remove_stale_scratch(self.folder)  # only lock holders write scratch files: any found now are dead
                remove_stale_scratch(self.folder, ".*.new", min_age_seconds=3600)  # catalogs being created
                yield True
            finally:
                self._depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)
