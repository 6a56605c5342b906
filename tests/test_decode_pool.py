"""Decoding in worker processes gives what decoding in threads gives, from any caller, bad files included."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from lookalike.decode_pool import INLINE_LIMIT, ProcessPool, prepare_file
from lookalike.errors import ImageDecodeError, InvalidArgumentError
from test_ingest import PLUMBING, _bad_files, _photos

SRC = Path(__file__).resolve().parents[1] / "src"


def _catalog_facts(index: Path, photos: Path) -> dict[str, tuple]:
    """Per file name: content hash, size, embedding and signature, as stored."""
    facts = {}
    with Collection.open(index) as collection:
        catalog = collection.catalog
        for path in sorted(str(p) for p in photos.rglob("*") if p.is_file()):
            record = catalog.image_by_path(path)
            if record is None or record.status != "indexed":
                continue
            vector = catalog.embedding(record.id)
            signature = catalog.signatures([record.id]).get(record.id)
            facts[Path(path).name] = (record.content_hash, record.width, record.height, vector, signature)
    return facts


def test_processes_store_what_threads_store_on_real_photos(originals: Path, tmp_path: Path) -> None:
    """The real model, real photos in three formats: same hashes, sizes, signatures and equal embeddings."""
    assert sum(1 for p in originals.rglob("*") if p.is_file()) >= INLINE_LIMIT  # so the pools are used
    for mode in ("threads", "processes"):
        with Collection.create(tmp_path / mode) as collection:
            report = collection.add_folder(originals, workers=2, decode_in=mode)
        assert report.embedded >= INLINE_LIMIT and not report.skipped
    threads, processes = (
        _catalog_facts(tmp_path / "threads", originals),
        _catalog_facts(tmp_path / "processes", originals),
    )
    assert threads.keys() == processes.keys() and len(threads) >= INLINE_LIMIT
    for name, (digest, width, height, vector, signature) in threads.items():
        other = processes[name]
        assert (digest, width, height, signature) == (other[0], other[1], other[2], other[4]), name
        assert signature is not None and vector is not None
        np.testing.assert_array_equal(vector, other[3], err_msg=name)


def test_bad_files_are_skipped_and_reported_as_with_threads(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    expected = _bad_files(photos / "bad")
    _photos(photos, ["chelsea", "rocket", "coffee"])
    reports = {}
    for mode in ("threads", "processes"):
        with Collection.create(tmp_path / mode, embedder=PLUMBING) as collection:
            reports[mode] = collection.add_folder(photos, decode_in=mode)
            assert collection.info().skipped == len(expected)
    assert reports["processes"].embedded == reports["threads"].embedded == 3
    assert sorted(reports["processes"].skipped) == sorted(reports["threads"].skipped)
    assert {Path(path).name for path, _ in reports["processes"].skipped} == set(expected)


def test_a_script_without_a_main_guard_can_decode_in_processes(tmp_path: Path) -> None:
    """multiprocessing's spawn would run this script again in every worker (and fail); this pool never does."""
    photos = tmp_path / "photos"
    _photos(photos, ["astronaut", "chelsea", "coffee", "rocket", "retina", "camera", "moon", "coins", "page"])
    runs = tmp_path / "runs.txt"
    script = tmp_path / "ingest_script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import lookalike
            with open({str(runs)!r}, "a") as runs:
                runs.write("ran\\n")
            with lookalike.Collection.create({str(tmp_path / "idx")!r}, embedder={PLUMBING!r}) as collection:
                report = collection.add_folder({str(photos)!r}, workers=2, decode_in="processes")
            print("embedded", report.embedded)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["embedded", "9"]
    assert runs.read_text() == "ran\n"  # the script ran once: no worker imported it


def test_a_worker_that_dies_is_replaced_and_the_rest_is_decoded(tmp_path: Path) -> None:
    paths = [str(p) for p in _photos(tmp_path, ["chelsea", "coffee", "rocket"])]
    with ProcessPool(1, 224, 100.0) as pool:
        first = pool.submit(paths[0]).result(timeout=60)
        worker = pool._workers[0]
        worker.process.kill()  # as a decoder crash would end it
        worker.process.wait()
        assert worker.reader is not None
        worker.reader.join(timeout=60)
        outcomes = [pool.submit(path).result(timeout=60) for path in paths]
    expected = [prepare_file(path, 224, 100.0) for path in paths]
    assert not isinstance(first, ImageDecodeError)
    for got, want in zip(outcomes, expected):
        assert not isinstance(got, ImageDecodeError) and not isinstance(want, ImageDecodeError)
        assert got.image.content_hash == want.image.content_hash and got.signature == want.signature
        np.testing.assert_array_equal(got.image.pixels, want.image.pixels)


def test_an_unknown_decode_mode_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unused").mkdir()
    with (
        Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection,
        pytest.raises(InvalidArgumentError, match="decode_in"),
    ):
        collection.add_folder(tmp_path / "unused", decode_in="gpu")
