"""Finding image files: the recursive scan of a photo folder.

Yields one `FileEntry` per candidate file, streaming, so a scan of a million
files does not hold them all in memory. Files that cannot even be listed or
stat'ed (symlink loops, permission errors, files that vanish mid-scan) are
reported through the `on_error` callback and the scan goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


def _stat_failure(error: OSError) -> str:
    if error.errno == errno.ELOOP:  # 40 on Linux, 62 on macOS and the BSDs
        return "symbolic link loop"
    if error.errno == errno.ENOENT:  # a dangling link, or a file deleted during the scan
        return "file vanished or dangling link"
    return f"cannot stat: {error.strerror or error}"
