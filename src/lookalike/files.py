"""Finding image files: the recursive scan of a photo folder.

Yields one `FileEntry` per candidate file, streaming, so a scan of a million
files does not hold them all in memory. Files that cannot even be listed or
stat'ed (symlink loops, permission errors, files that vanish mid-scan) are
reported through the `on_error` callback and the scan goes on.

Reading a file found by the scan goes through `open_regular_file`, which
never blocks and refuses what is not a regular file, however the file changed
since the scan. `display_path` makes any path safe to print on one line.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import ImageDecodeError

_CHUNK = 1 << 20

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})


@dataclass(frozen=True)
class FileEntry:
    """A candidate image file as found on disk."""

    path: str
    size: int
    mtime_ns: int


def heif_supported() -> bool:
    """True when pillow-heif is installed, so HEIC files can be decoded."""
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def image_extensions() -> frozenset[str]:
    """The lower-case file extensions that the scan picks up on this install."""
    return IMAGE_EXTENSIONS | HEIF_EXTENSIONS if heif_supported() else IMAGE_EXTENSIONS


def has_image_extension(path: str, extensions: frozenset[str] | None = None) -> bool:
    """True when the file name ends in a known image extension, in any case."""
    return os.path.splitext(path)[1].lower() in (extensions or image_extensions())


def scan_images(
    root: str,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[FileEntry]:
    """Walk `root` recursively and yield every file with an image extension, sorted per folder.

    Symbolic links to files are followed; links to folders are not (that is how
    link loops are avoided). Errors are passed to `on_error(path, reason)`.
    """
    extensions = image_extensions()
    report = on_error or (lambda path, reason: None)
    stack = [os.path.abspath(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            report(folder, f"cannot list folder: {error.strerror or error}")
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.path)
                    continue
            except OSError as error:
                report(entry.path, f"cannot stat: {error.strerror or error}")
                continue
            if not has_image_extension(entry.name, extensions):
                continue
            try:
                info = os.stat(entry.path)
            except OSError as error:
                report(entry.path, _stat_failure(error))
                continue
            if not stat.S_ISREG(info.st_mode):
                if stat.S_ISDIR(info.st_mode):
                    continue
                report(entry.path, "not a regular file")
                continue
            yield FileEntry(entry.path, info.st_size, info.st_mtime_ns)
        stack.extend(reversed(subfolders))


# Characters that would break a one-line report: C0 and C1 controls, DEL, and Unicode's line and paragraph
# separators (a terminal or log viewer starts a new line, or obeys an escape sequence, on any of them).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_path(path: str) -> str:
    """A path as one line of printable text: undecodable bytes and control characters shown as escapes.

    A file name may hold any byte but / and NUL: a newline in one would split a "skipped" line in two
    (and look like a second entry), an ESC would drive the terminal. Backslashes are left as they are,
    so ordinary paths print unchanged; the escapes are for reading, not for turning back into a path.
    """
    text = path.encode("utf-8", "backslashreplace").decode("utf-8")
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _stat_failure(error: OSError) -> str:
    if error.errno == errno.ELOOP:  # 40 on Linux, 62 on macOS and the BSDs
        return "symbolic link loop"
    if error.errno == errno.ENOENT:  # a dangling link, or a file deleted during the scan
        return "file vanished or dangling link"
    return f"cannot stat: {error.strerror or error}"


# --- reading a file found by the scan ----------------------------------------------------------------------


@contextmanager
def open_regular_file(path: str) -> Iterator[BinaryIO]:
    """Open `path` for reading, refusing anything but a regular file, without ever blocking.

    The scan already skips FIFOs and devices, but a file can be replaced by one
    after the scan: a plain open() of a FIFO with no writer blocks forever. So the
    file is opened with O_NONBLOCK and its type checked on the opened descriptor
    (not by a stat before, which would leave the same race).
    """
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_RDONLY | nonblocking | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise ImageDecodeError(path, "file vanished before it could be read") from None
    except OSError as error:
        raise ImageDecodeError(path, f"cannot read: {error.strerror or error}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise ImageDecodeError(path, "cannot read: Is a directory")
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(path, "not a regular file")
        if nonblocking:
            os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle


def read_file_bytes(path: str, max_bytes: int | None = None) -> bytes:
    """Read a whole regular file, turning OS errors into `ImageDecodeError`; with `max_bytes`, refuse bigger files."""
    with open_regular_file(path) as handle:
        return read_all(handle, path, max_bytes)


def read_all(handle: BinaryIO, path: str, max_bytes: int | None = None) -> bytes:
    """The rest of an open file, or `ImageDecodeError`; with `max_bytes`, refuse more than that many bytes."""
    try:
        # One byte more than allowed: a file that grows while it is read is still caught.
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as error:
        raise ImageDecodeError(path, f"cannot read: {error.strerror or error}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageDecodeError(path, f"file too large (over {max_bytes} bytes)")
    return data


def hash_open_file(handle: BinaryIO, path: str, digest: Any) -> str:
    """The hex `digest` (a hashlib object) of an open file, read with pread: the file's position is left alone."""
    descriptor, offset = handle.fileno(), 0
    try:
        while chunk := os.pread(descriptor, _CHUNK, offset):
            digest.update(chunk)
            offset += len(chunk)
    except OSError as error:
        raise ImageDecodeError(path, f"cannot read: {error.strerror or error}") from None
    return digest.hexdigest()


class HeaderWindow:
    """A file that reads as if it ended at `limit` bytes until its header is accepted.

    Pillow's JPEG parser skips bytes that are not markers one read(1) at a time: a JPEG marker followed
    by a gigabyte of junk costs minutes of CPU. Identification sees only the first `limit` bytes (a header
    never needs more); decoding, once the size is accepted, sees the whole file.
    """

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self._handle = handle
        self._position = handle.tell()  # tracked here: tell() on the file is a system call per read(1)
        self.limit: int | None = limit

    def read(self, size: int | None = -1) -> bytes:
        if self.limit is not None:
            room = max(0, self.limit - self._position)
            size = room if size is None or size < 0 else min(size, room)
        data = self._handle.read(-1 if size is None else size)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._position = self._handle.seek(offset, whence)
        return self._position

    def tell(self) -> int:
        return self._position
