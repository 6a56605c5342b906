"""The recursive scan for image files: what it finds, what it reports, and in which order."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from lookalike.files import FileEntry, display_path, has_image_extension, scan_images


@pytest.fixture(scope="module")
def jpeg_bytes(tmp_path_factory) -> bytes:
    """A small real photo, encoded once."""
    path = tmp_path_factory.mktemp("photo") / "cat.jpg"
    Image.fromarray(data.chelsea()).resize((90, 60)).save(path, quality=85)
    return path.read_bytes()


def put(path: Path, content: bytes, mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def scan(root: Path) -> tuple[list[FileEntry], dict[str, str]]:
    """All entries of a scan, and the errors it reported, by path."""
    errors: dict[str, str] = {}
    entries = list(scan_images(str(root), on_error=lambda path, reason: errors.__setitem__(path, reason)))
    return entries, errors


def test_scan_finds_images_in_nested_folders(tmp_path, jpeg_bytes):
    root = tmp_path / "photos"
    images = [
        put(root / "a.jpg", jpeg_bytes, 1_600_000_000_000_000_001),
        put(root / "B.PNG", jpeg_bytes[:1000], 1_600_000_000_000_000_002),
        put(root / "2019" / "c.Jpeg", jpeg_bytes + b"x", 1_600_000_000_000_000_003),
        put(root / "2019" / "summer" / "d.WebP", jpeg_bytes[:500], 1_600_000_000_000_000_004),
        put(root / "2019" / "summer" / "beach" / "e.tif", jpeg_bytes[:10], 1_600_000_000_000_000_005),
    ]
    put(root / "notes.txt", b"not a photo")
    put(root / "2019" / "meta.json", b"{}")
    put(root / "2019" / "summer" / "README", b"no extension")
    put(root / "2019" / "jpg", b"a name, not an extension")

    entries, errors = scan(root)

    assert errors == {}
    assert sorted(entry.path for entry in entries) == sorted(str(path) for path in images)
    for entry in entries:
        assert os.path.isabs(entry.path)
        info = os.stat(entry.path)
        assert (entry.size, entry.mtime_ns) == (info.st_size, info.st_mtime_ns)
    by_name = {os.path.basename(entry.path): entry for entry in entries}
    assert by_name["c.Jpeg"].size == len(jpeg_bytes) + 1
    assert by_name["e.tif"].mtime_ns == 1_600_000_000_000_000_005


def test_scan_of_a_relative_root_gives_absolute_paths(tmp_path, jpeg_bytes, monkeypatch):
    put(tmp_path / "photos" / "inner" / "cat.jpg", jpeg_bytes)
    monkeypatch.chdir(tmp_path)

    paths = [entry.path for entry in scan_images("photos")]

    assert paths == [str(tmp_path / "photos" / "inner" / "cat.jpg")]


def test_image_extensions_are_recognised_in_any_case():
    assert has_image_extension("/x/IMG_0001.JPG")
    assert has_image_extension("scan.TiFf")
    assert not has_image_extension("notes.txt")
    assert not has_image_extension("archive.jpg.zip")


def test_non_utf8_and_unicode_names_are_found(tmp_path, jpeg_bytes):
    raw_name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")  # Latin-1 bytes: not valid UTF-8
    descriptor = os.open(raw_name, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, jpeg_bytes)
    finally:
        os.close(descriptor)
    put(tmp_path / "été 📷.jpg", jpeg_bytes)

    entries, errors = scan(tmp_path)

    assert errors == {}
    raw_paths = sorted(os.fsencode(entry.path) for entry in entries)
    assert raw_paths == sorted([raw_name, os.fsencode(tmp_path / "été 📷.jpg")])
    for entry in entries:
        assert entry.size == len(jpeg_bytes)
        with open(entry.path, "rb") as handle:  # the str path opens the very file
            assert handle.read() == jpeg_bytes


def test_broken_links_are_reported_and_the_scan_goes_on(tmp_path, jpeg_bytes):
    good = put(tmp_path / "ok.jpg", jpeg_bytes)
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")  # a -> b -> a
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    os.symlink(tmp_path / "deleted.jpg", tmp_path / "dangling.jpg")
    os.symlink(good, tmp_path / "shortcut.jpg")  # links to files are followed
    put(tmp_path / "z" / "last.png", jpeg_bytes)

    entries, errors = scan(tmp_path)

    assert [entry.path for entry in entries] == [
        str(good),
        str(tmp_path / "shortcut.jpg"),
        str(tmp_path / "z" / "last.png"),
    ]
    assert entries[1].size == len(jpeg_bytes)
    assert errors == {
        str(tmp_path / "a.jpg"): "symbolic link loop",
        str(tmp_path / "b.jpg"): "symbolic link loop",
        str(tmp_path / "dangling.jpg"): "file vanished or dangling link",
    }


def test_broken_links_are_skipped_without_a_callback(tmp_path, jpeg_bytes):
    good = put(tmp_path / "ok.jpg", jpeg_bytes)
    os.symlink(tmp_path / "deleted.jpg", tmp_path / "dangling.jpg")

    assert [entry.path for entry in scan_images(str(tmp_path))] == [str(good)]


def test_folder_link_to_an_ancestor_does_not_recurse_forever(tmp_path, jpeg_bytes):
    root = tmp_path / "photos"
    photo = put(root / "trip" / "day1" / "cat.jpg", jpeg_bytes)
    os.symlink(root, root / "trip" / "day1" / "back-to-top")
    os.symlink(root / "trip", root / "trip" / "day1" / "album.jpg")  # a folder link named like an image

    entries, errors = scan(root)

    assert [entry.path for entry in entries] == [str(photo)]
    assert errors == {}


def test_unlistable_folder_is_reported(tmp_path, jpeg_bytes):
    photo = put(tmp_path / "open" / "cat.jpg", jpeg_bytes)
    locked = tmp_path / "locked"
    put(locked / "secret.jpg", jpeg_bytes)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that list any folder")
        entries, errors = scan(tmp_path)
    finally:
        locked.chmod(0o755)

    assert [entry.path for entry in entries] == [str(photo)]
    assert list(errors) == [str(locked)]
    assert errors[str(locked)].startswith("cannot list folder")


def test_scan_order_is_deterministic(tmp_path, jpeg_bytes):
    names = [f"{folder}/{stem}.jpg" for folder in ("b", "a", "a/x", "c") for stem in ("9", "10", "Z", "a")]
    random.Random(7).shuffle(names)  # creation order must not matter
    for name in names:
        put(tmp_path / name, jpeg_bytes)
    put(tmp_path / "top.png", jpeg_bytes)

    first = [entry.path for entry in scan_images(str(tmp_path))]
    second = [entry.path for entry in scan_images(str(tmp_path))]

    assert first == second
    assert len(first) == len(names) + 1
    relative = [os.path.relpath(path, tmp_path) for path in first]
    assert relative[:6] == ["top.png", "a/10.jpg", "a/9.jpg", "a/Z.jpg", "a/a.jpg", "a/x/10.jpg"]


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/photos/cat.jpg", "/photos/cat.jpg"),
        ("/photos/été 📷.jpg", "/photos/été 📷.jpg"),
        ("/photos/two\nlines.jpg", "/photos/two\\nlines.jpg"),
        ("/photos/cr\r.jpg", "/photos/cr\\r.jpg"),
        ("/photos/\x1b[2Jclear.jpg", "/photos/\\x1b[2Jclear.jpg"),
        ("/photos/del\x7f\x85.jpg", "/photos/del\\x7f\\x85.jpg"),
        ("/photos/sep\u2028.jpg", "/photos/sep\\u2028.jpg"),
        (os.fsdecode(b"/photos/caf\xe9.jpg"), "/photos/caf\\udce9.jpg"),
    ],
)
def test_display_path_is_one_printable_line(path, shown):
    line = f"skipped {display_path(path)}: not an image"

    assert display_path(path) == shown
    assert line.isprintable()
    assert len(line.splitlines()) == 1
    line.encode("utf-8")  # undecodable bytes are escaped, not passed on as surrogates


def test_a_newline_in_a_skipped_name_stays_on_its_line(tmp_path):
    put(tmp_path / "evil\nskipped other.jpg: fake.jpg", b"not an image")
    os.mkfifo(tmp_path / "pipe\n.jpg")

    entries, errors = scan(tmp_path)

    lines = [f"skipped {display_path(path)}: {reason}" for path, reason in errors.items()]
    assert len(entries) == 1
    assert lines == [f"skipped {display_path(str(tmp_path))}/pipe\\n.jpg: not a regular file"]
    assert "\n".join(lines).count("\n") == len(lines) - 1
