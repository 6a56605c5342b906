"""Crash consistency and damage: kill -9 at many moments, damage every file, and the collection stays right.

A writer is killed (SIGKILL, from this process) after each of its catalog commits and during index saves;
after every kill the catalog must pass SQLite's integrity check and hold each committed image exactly once,
and once an ingest finally completes, searches must give what a clean, uninterrupted run gives. Then each
file of a collection is damaged in several ways, and every command must end in a correct result, a rebuild,
or one clear line. The model-free embedder keeps this about files and processes, not about the CNN.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lookalike.demo import SAMPLE_PHOTOS, sample_photo

PLUMBING = "colour-layout"
PHOTOS = 24


def lookalike(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookalike", *args], capture_output=True, text=True, timeout=120)


def reader(index: Path) -> sqlite3.Connection:
    """A read-only connection: a plain connect would create an empty file where the catalog is about to be."""
    return sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5)


def committed(index: Path) -> int:
    try:
        with reader(index) as connection:
            return connection.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    except sqlite3.Error:
        return 0


def sound(index: Path) -> None:
    """The catalog, if the writer got as far as creating it, is intact and holds every image at most once."""
    if not (index / "catalog.sqlite").exists():
        return
    with reader(index) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        paths = [row[0] for row in connection.execute("SELECT path FROM images")]
        orphans = connection.execute(
            "SELECT count(*) FROM embeddings WHERE image_id NOT IN (SELECT id FROM images)"
        ).fetchone()[0]
    assert len(paths) == len(set(paths)) and orphans == 0


def all_results(index: Path, photos: Path) -> list[list[str]]:
    """The hit paths of a search with every photo, as the CLI prints them."""
    queries = sorted(str(p) for p in photos.iterdir())
    result = lookalike("search", *queries, "--index", str(index), "--json", "-k", "5", "--fast")
    assert result.returncode == 0, result.stderr
    return [[hit["path"] for hit in answer["results"]] for answer in json.loads(result.stdout)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for number in range(PHOTOS):
        name = SAMPLE_PHOTOS[number % len(SAMPLE_PHOTOS)]
        sample_photo(name).rotate(number * 7).save(folder / f"p{number:02}.jpg", quality=85)
    return folder


@pytest.fixture(scope="module")
def clean(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    index = tmp_path_factory.mktemp("clean") / "idx"
    assert lookalike("index", str(photos), "--index", str(index), "--model", PLUMBING, "-q").returncode == 0
    return index, all_results(index, photos)


def test_kill_9_after_any_commit_keeps_the_catalog_sound_and_the_end_result_right(
    photos: Path, clean: tuple[Path, list[list[str]]], tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    command = [sys.executable, "-m", "lookalike", "index", str(photos), "--index", str(index)]
    command += ["--model", PLUMBING, "--batch-size", "2", "--workers", "1", "-q"]
    kills = 0
    for target in range(1, PHOTOS, 3):  # kill after the commit that brings the count to `target` (or later)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while process.poll() is None and committed(index) < target and time.monotonic() < deadline:
            time.sleep(0.001)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        sound(index)
    assert kills >= 3
    assert lookalike(*command[3:]).returncode == 0
    sound(index)
    assert committed(index) == PHOTOS
    assert all_results(index, photos) == clean[1]


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.6])
def test_kill_9_during_a_reindex_loses_nothing(
    clean: tuple[Path, list[list[str]]], photos: Path, tmp_path: Path, delay: float
) -> None:
    index = tmp_path / "idx"
    shutil.copytree(clean[0], index)
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "reindex", "--index", str(index), "--kind", "HNSW8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    sound(index)
    assert committed(index) == PHOTOS
    assert all_results(index, photos) == clean[1]  # whichever index survived, or a rebuild: the same answers


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def _zero(path: Path) -> None:
    path.write_bytes(b"")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(100, len(data), max(1, len(data) // 7)):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES: dict[str, Callable[[Path], None]] = {"truncated": _truncate, "zero length": _zero, "flipped": _flip}


@pytest.mark.parametrize("name", ["catalog.sqlite", "index.faiss", "manifest.json"])
@pytest.mark.parametrize("damage", [*DAMAGES, "swapped"])
def test_every_damaged_file_ends_in_a_right_answer_a_rebuild_or_one_line(
    clean: tuple[Path, list[list[str]]], photos: Path, tmp_path: Path, name: str, damage: str
) -> None:
    index = tmp_path / "idx"
    shutil.copytree(clean[0], index)
    if damage == "swapped":  # the same file of another collection (other photos, other embedder)
        other_photos = tmp_path / "other"
        other_photos.mkdir()
        sample_photo("coins").save(other_photos / "coins.png")
        other = tmp_path / "other-idx"
        assert lookalike("index", str(other_photos), "--index", str(other), "--model", PLUMBING, "-q").returncode == 0
        shutil.copy(other / name, index / name)
    else:
        DAMAGES[damage](index / name)
    for command in (["info"], ["search", str(photos / "p00.jpg"), "--json", "-k", "5", "--fast"], ["check"]):
        result = lookalike(*command, "--index", str(index))
        assert "Traceback" not in result.stderr, (command, result.stderr)
        if result.returncode != 0:
            assert result.returncode == 1 and len(result.stderr.strip().splitlines()) <= 1 or command == ["check"]
        elif command[0] == "search" and name != "catalog.sqlite":
            # The catalog is intact: whatever happened to the index or manifest, the answer is the clean one.
            assert [hit["path"] for hit in json.loads(result.stdout)[0]["results"]] == clean[1][0]
