"""Ingest keeps the catalog in step with a folder: bad files skipped and reported, nothing re-embedded twice."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from disks import remount
from lookalike import Collection
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.files import FileEntry
from lookalike.images import decode_file

# These tests are about plumbing (files, commits, interruptions), not look-alike quality: no CNN needed.
PLUMBING = "colour-layout"


def _photos(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        sample_photo(name).save(path, quality=90)
        paths.append(path)
    return paths


def _bad_files(folder: Path) -> dict[str, str]:
    """One file per way an image can fail, and a fragment of the reason each must be reported with."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    whole = folder / "whole.jpg"
    sample_photo("coffee").save(whole, quality=90)
    data = whole.read_bytes()
    whole.unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.png").write_text("this is not a picture")
    (folder / "eps-in-disguise.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    os.symlink("loop-b.jpg", folder / "loop-a.jpg")
    os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    return {
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated",
        "notes.png": "not an image",
        "eps-in-disguise.jpg": "not an image",
        "loop-a.jpg": "link loop",
        "loop-b.jpg": "link loop",
        "dangling.jpg": "vanished or dangling",
    }


def test_bad_files_are_skipped_with_reasons_and_good_ones_indexed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    good = _photos(photos, ["chelsea", "rocket"])
    expected = _bad_files(photos / "bad")
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        report = collection.add_folder(photos)
        info = collection.info()
    reasons = {Path(path).name: reason for path, reason in report.skipped}
    assert report.embedded == len(good)
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert info.images == 2 and info.skipped == len(expected)
    assert {Path(p).name for p, _ in info.skipped_files} == set(expected)


def test_decompression_bombs_are_skipped(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("L", (12_000, 12_000)).save(photos / "bomb.png")  # 144 Mpx, tiny on disk
    _photos(photos, ["coffee"])
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        collection.max_megapixels = 100  # the limit is derived from the memory available unless set
        report = collection.add_folder(photos)
    assert report.embedded == 1
    assert [(Path(p).name, "decompression bomb" in r) for p, r in report.skipped] == [("bomb.png", True)]


def test_a_second_run_embeds_nothing(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _photos(photos, ["chelsea", "coffee", "rocket"])
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        first = collection.add_folder(photos)
        second = collection.add_folder(photos)
    assert (first.embedded, second.embedded, second.unchanged) == (3, 0, 3)


def test_moved_and_copied_files_reuse_their_embedding(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    chelsea, coffee = _photos(photos, ["chelsea", "coffee"])
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        collection.add_folder(photos)
        old_id = collection.catalog.image_by_path(str(chelsea)).id
        moved = photos / "sub" / "renamed.jpg"
        moved.parent.mkdir()
        chelsea.rename(moved)
        shutil.copy(coffee, photos / "coffee-copy.jpg")
        report = collection.add_folder(photos)
        assert (report.embedded, report.moved, report.reused, report.removed) == (0, 1, 1, 0)
        assert collection.catalog.image_by_path(str(moved)).id == old_id
        hits = collection.search_ids([old_id], k=1)[0].hits
    assert hits[0].path == str(moved)


def test_a_copy_in_another_folder_of_the_collection_leaves_the_original_where_it_is(tmp_path: Path) -> None:
    """Indexing a second folder must not take rows from the first: only a file gone from disk has moved."""
    first, second = tmp_path / "first", tmp_path / "second"
    coffee, chelsea = _photos(first, ["coffee", "chelsea"])
    second.mkdir()
    shutil.copy(coffee, second / "coffee-copy.jpg")
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        collection.add_folder(first)
        report = collection.add_folder(second)
        assert (report.embedded, report.moved, report.reused) == (0, 0, 1)
        assert collection.catalog.image_by_path(str(coffee)) is not None
        assert collection.catalog.image_by_path(str(second / "coffee-copy.jpg")) is not None
        # A file that did leave the first folder for the second is a move.
        old_id = collection.catalog.image_by_path(str(chelsea)).id
        chelsea.rename(second / "chelsea.jpg")
        report = collection.add_folder(second)
        assert (report.embedded, report.moved, report.reused) == (0, 1, 0)
        assert collection.catalog.image_by_path(str(second / "chelsea.jpg")).id == old_id
        assert collection.catalog.image_by_path(str(chelsea)) is None


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_deleted_and_changed_files_leave_the_results(tmp_path: Path, kind: str) -> None:
    photos = tmp_path / "photos"
    paths = _photos(photos, ["chelsea", "coffee", "rocket", "astronaut"])
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        collection.add_folder(photos, kind=kind)
        rocket_id = collection.catalog.image_by_path(str(paths[2])).id
        paths[2].unlink()
        sample_photo("retina").save(paths[3], quality=90)  # astronaut.jpg now holds another picture
        report = collection.add_folder(photos)
        assert (report.removed, report.embedded) == (1, 1)
        hits = collection.search_ids([collection.catalog.image_by_path(str(paths[0])).id], k=10)[0].hits
        assert rocket_id not in {h.id for h in hits}
        assert sorted(Path(h.path).name for h in hits) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
        assert len(collection.catalog.tombstones()) == 2
        collection.reindex(kind)
        assert len(collection.catalog.tombstones()) == 0
        assert collection.index().count == 3


def test_ctrl_c_keeps_committed_batches_and_the_next_run_resumes(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    names = ["astronaut", "chelsea", "coffee", "rocket", "retina", "camera", "moon", "coins"]
    _photos(photos, names)

    def interrupt_after_four(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        with pytest.raises(KeyboardInterrupt):
            collection.add_folder(photos, batch_size=2, workers=1, on_progress=interrupt_after_four)
        kept = collection.catalog.count()
    assert kept == 4
    with Collection.open(tmp_path / "idx") as collection:
        report = collection.add_folder(photos, batch_size=2)
        assert (report.unchanged, report.embedded) == (4, 4)
        assert collection.index().count == len(names)


def test_kill_9_during_indexing_loses_nothing_committed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(60):
        picture = sample_photo(["astronaut", "chelsea", "coffee", "rocket"][number % 4]).rotate(number * 6)
        picture.save(photos / f"p{number:02}.jpg", quality=85)
    index = tmp_path / "idx"
    command = [
        sys.executable,
        "-m",
        "lookalike.cli",
        "index",
        str(photos),
        "--index",
        str(index),
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--quiet",
        "--model",
        PLUMBING,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _committed(index) < 8:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = _committed(index)
    assert kept >= 8
    with Collection.open(index) as collection:
        report = collection.add_folder(photos)
        assert report.unchanged >= kept
        assert report.embedded + report.unchanged == 60
        assert collection.index().count == 60


def _committed(index: Path) -> int:
    import sqlite3

    if not (index / "catalog.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(index / "catalog.sqlite", timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_damaged_index_file_is_detected_and_rebuilt(index_copy: Path) -> None:
    faiss_file = index_copy / "index.faiss"
    data = bytearray(faiss_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    notices: list[str] = []
    with Collection.open(index_copy, on_notice=notices.append) as collection:
        hits = collection.search_ids([1], k=1)[0].hits
    assert hits[0].id == 1
    assert len(notices) == 1 and "does not match the checksum" in notices[0]
    with Collection.open(index_copy, on_notice=notices.append) as collection:
        collection.index()
    assert len(notices) == 1  # the rebuilt file verifies


def test_a_missing_index_file_is_rebuilt_from_the_catalog(index_copy: Path) -> None:
    (index_copy / "index.faiss").unlink()
    with Collection.open(index_copy) as collection:
        assert collection.index().count == collection.catalog.count()


@pytest.fixture
def tiny_disk(media: Path) -> Path:
    """A 1 MiB tmpfs (needs root; skipped elsewhere), unmounted afterwards."""
    remount(media, "size=1m")
    return media


def test_a_full_disk_stops_cleanly_and_keeps_committed_work(tmp_path: Path, tiny_disk: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(300):
        sample_photo(["astronaut", "chelsea", "coffee", "rocket"][number % 4]).rotate(number).resize((96, 64)).save(
            photos / f"p{number:03}.jpg", quality=80
        )
    index = tiny_disk / "idx"
    command = [sys.executable, "-m", "lookalike.cli", "index", str(photos), "--index", str(index), "--batch-size", "8"]
    command += ["--model", PLUMBING]
    full = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1
    assert full.stderr.count("\n") == 1 and full.stderr.startswith("error: cannot write"), full.stderr
    kept = _committed(index)
    assert 0 < kept < 300
    remount(tiny_disk, "size=64m")
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with Collection.open(index) as collection:
        assert collection.catalog.count() == collection.index().count == 300


def test_a_disk_full_before_the_catalog_exists_leaves_nothing_half_made(tmp_path: Path, tiny_disk: Path) -> None:
    photos = tmp_path / "photos"
    _photos(photos, ["coffee"])
    filler = tiny_disk / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):  # fill the disk to the last byte
        while True:
            handle.write(b"\0" * 4096)
    command = [sys.executable, "-m", "lookalike", "index", str(photos), "--index", str(tiny_disk / "new" / "idx")]
    full = subprocess.run(command + ["--model", PLUMBING], capture_output=True, text=True, timeout=120)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    assert full.stderr.count("\n") == 1 and full.stderr.startswith("error: cannot create the catalog in"), full.stderr
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]  # no folder, no empty catalog left behind


def test_two_first_runs_on_one_new_folder_end_with_one_collection(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _photos(photos, ["astronaut", "chelsea", "coffee", "rocket"])
    command = [sys.executable, "-m", "lookalike", "index", str(photos), "--index", str(tmp_path / "idx")]
    command += ["--model", PLUMBING, "--quiet"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = []
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        outcomes.append((run.returncode, stderr))
    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, stderr in outcomes:
        assert "Traceback" not in stderr
        if code != 0:
            assert code == 1 and stderr.strip().splitlines() == [
                f"error: another lookalike process is updating {tmp_path / 'idx'}; wait for it to finish"
            ]
    with Collection.open(tmp_path / "idx") as collection:
        assert collection.catalog.count() == collection.index().count == 4


def test_ctrl_c_on_the_command_line_says_how_to_resume(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(80):
        sample_photo(["astronaut", "chelsea", "coffee", "rocket"][number % 4]).rotate(number * 4).save(
            photos / f"p{number:02}.jpg", quality=85
        )
    index = tmp_path / "idx"
    command = [sys.executable, "-m", "lookalike.cli", "index", str(photos), "--index", str(index), "--batch-size", "4"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _committed(index) < 8:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted: everything embedded so far is kept" in stderr and "Traceback" not in stderr
    kept = _committed(index)
    with Collection.open(index) as collection:
        report = collection.add_folder(photos)
    assert report.unchanged >= kept and report.embedded + report.unchanged == 80


def test_a_reader_never_writes_while_another_process_updates(index_copy: Path) -> None:
    import fcntl

    (index_copy / "index.faiss").unlink()
    with open(index_copy / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running 'lookalike index' holds it
        with Collection.open(index_copy) as collection:
            assert collection.search_ids([2], k=1)[0].hits[0].id == 2  # served from an in-memory rebuild
        assert not (index_copy / "index.faiss").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    with Collection.open(index_copy) as collection:
        collection.index()
    assert (index_copy / "index.faiss").exists()


def test_the_map_step_is_a_pure_function_of_files_whose_results_travel(tmp_path: Path) -> None:
    """What a worker process or a cluster task runs: files in, picklable facts and embeddings out."""
    import pickle

    from lookalike import load_embedder
    from lookalike.ingest import map_files

    good = _photos(tmp_path / "photos", ["chelsea", "coffee"])
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    entries = [
        FileEntry(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in [good[0], broken, good[1]]
    ]
    embedder = load_embedder(PLUMBING)
    mapped = pickle.loads(pickle.dumps(map_files(entries, embedder, embedder.input_size)))
    assert [m.entry.path for m in mapped] == [e.path for e in entries]
    assert mapped[1].vector is None and mapped[1].error
    assert all(
        m.vector is not None and m.vector.shape == (embedder.dim,) and m.error is None for m in (mapped[0], mapped[2])
    )
    assert mapped[0].content_hash != mapped[2].content_hash and mapped[0].width > 0
    # They travel as one array of the embedded files' vectors, in file order, not as an array per file.
    assert mapped.vectors.shape == (2, embedder.dim) and mapped.vectors.dtype == np.float32
    np.testing.assert_array_equal(mapped.vectors, np.stack([mapped[0].vector, mapped[2].vector]))
    np.testing.assert_allclose(
        mapped.vectors[1], embedder.embed(decode_file(str(good[1]), embedder.input_size).pixels[None])[0]
    )
    # A shard is decoded and embedded a batch at a time: one file per model run gives the same results.
    one_by_one = map_files(entries, embedder, embedder.input_size, batch=1)
    assert [m.entry.path for m in one_by_one] == [m.entry.path for m in mapped]
    np.testing.assert_allclose(one_by_one.vectors, mapped.vectors, atol=1e-6)


def test_a_map_task_that_decodes_in_threads_gives_what_one_decoding_in_turn_gives(tmp_path: Path) -> None:
    """A task holding several CPUs (one per share of a GPU node) decodes ahead of the model in threads."""
    from lookalike import load_embedder
    from lookalike.ingest import map_files

    photos = _photos(tmp_path / "photos", SAMPLE_PHOTOS)
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    entries = [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in [*photos[:5], broken, *photos[5:]]]
    embedder = load_embedder(PLUMBING)
    in_turn = map_files(entries, embedder, embedder.input_size, batch=4)
    threaded = map_files(entries, embedder, embedder.input_size, batch=4, decode_threads=3)
    assert len(entries) > 8  # more than decode_pool.INLINE_LIMIT: the threads really run
    assert threaded.rows == in_turn.rows and threaded.rows[5].error is not None
    np.testing.assert_array_equal(threaded.vectors, in_turn.vectors)
    assert len(threaded.vectors) == len(entries) - 1


def test_a_cluster_is_sent_files_while_the_scan_goes_on(tmp_path: Path) -> None:
    """With a mapper (a cluster), files go out as the scan finds them: the cluster does not wait for the whole
    folder to be scanned, and the progress total grows with the scan. A re-run finds nothing and sends nothing."""
    from lookalike.catalog import Catalog
    from lookalike.ingest import SCAN_CHUNK, Ingester, MappedRow, MappedShard

    photos = tmp_path / "photos"
    photos.mkdir()
    count = 2 * SCAN_CHUNK + 500
    for number in range(count):
        (photos / f"{number:05d}.jpg").write_bytes(b"not an image")
    scanned_when_sent: list[int] = []
    calls: list[int] = []
    progress: list[tuple[int, int]] = []

    def mapper(todo: Iterator[FileEntry], total: int) -> Iterator[MappedShard]:
        calls.append(total)
        rows = []
        for entry in todo:
            scanned_when_sent.append(ingester.report.scanned)
            rows.append(MappedRow(entry.path, entry.size, entry.mtime_ns, "", 0, 0, "not an image", None, None, 0))
            if len(rows) == 300:
                yield MappedShard(rows, np.zeros((0, 3), np.float32))
                rows = []
        yield MappedShard(rows, np.zeros((0, 3), np.float32))

    catalog = Catalog.open(tmp_path / "idx", create=True)
    try:
        ingester = Ingester(catalog, lambda: None, 224, mapper=mapper, on_progress=lambda *p: progress.append(p))
        report = ingester.run(str(photos))
        assert report.scanned == count and len(report.skipped) == count
        assert scanned_when_sent[0] == SCAN_CHUNK < count  # the first file went out after the first chunk
        totals = [total for _, total in progress]
        assert totals == sorted(totals) and totals[0] < count and progress[-1] == (count, count)
        assert calls == [SCAN_CHUNK]
        again = Ingester(catalog, lambda: None, 224, mapper=mapper).run(str(photos))
        assert again.unchanged == count and calls == [SCAN_CHUNK]
    finally:
        catalog.close()


def test_a_shard_from_a_cluster_is_committed_whole_or_not_at_all(tmp_path: Path) -> None:
    from lookalike.catalog import Catalog
    from lookalike.embedders import load_embedder
    from lookalike.ingest import Ingester, MappedShard, map_files

    photos = tmp_path / "photos"
    [coffee] = _photos(photos, ["coffee"])
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        collection.add_folder(photos)
    shutil.copy(coffee, photos / "a-copy.jpg")  # a byte copy: its row reuses the stored embedding
    _photos(photos, ["rocket"])
    (photos / "z-broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    embedder = load_embedder(PLUMBING)
    shards: list[MappedShard] = []

    def one_shard(todo: Iterator[FileEntry], total: int) -> Iterator[MappedShard]:
        shards.append(map_files(list(todo), embedder, embedder.input_size))
        yield shards[-1]

    def interrupt(path: str, reason: str) -> None:
        raise KeyboardInterrupt

    catalog = Catalog.open(tmp_path / "idx")
    try:
        with pytest.raises(KeyboardInterrupt):
            Ingester(catalog, lambda: embedder, 0, mapper=one_shard, on_skip=interrupt).run(str(photos))
        # The copy's row was written before the broken file interrupted the shard: it went with the rest.
        assert [row.path for row in shards[0].rows] == [
            str(photos / n) for n in ("a-copy.jpg", "rocket.jpg", "z-broken.jpg")
        ]
        assert (catalog.count(), catalog.count("skipped")) == (1, 0)
        report = Ingester(catalog, lambda: embedder, 0, mapper=one_shard).run(str(photos))
        assert (catalog.count(), catalog.count("skipped")) == (3, 1)
    finally:
        catalog.close()
    assert (report.reused, report.embedded, report.unchanged) == (1, 1, 1)
    assert report.skipped == [(str(photos / "z-broken.jpg"), shards[1].rows[2].error)]


def test_a_batch_still_on_the_device_is_committed_after_the_next_is_submitted(tmp_path: Path) -> None:
    """On a GPU the model computes one batch while ingest commits the previous one; nothing is lost or reordered."""

    from lookalike.catalog import Catalog
    from lookalike.embedders import Embedder, load_embedder
    from lookalike.ingest import Ingester
    from lookalike.torch_pipeline import Pending

    events: list[str] = []

    class OnDevice(Pending):
        def __init__(self, value: np.ndarray, number: int) -> None:
            self.value, self.number = value, number

        @property
        def on_device(self) -> bool:
            return True

        def result(self) -> np.ndarray:
            events.append(f"collect {self.number}")
            return self.value

    class DeviceEmbedder(Embedder):
        def submit(self, pixels: np.ndarray) -> Pending:
            number = sum(event.startswith("submit") for event in events)
            events.append(f"submit {number}")
            return OnDevice(super().submit(pixels).result(), number)

    plain = load_embedder(PLUMBING)
    embedder = DeviceEmbedder(plain.spec, plain._run, plain.engine, plain.device)
    photos = tmp_path / "photos"
    _photos(photos, ["astronaut", "chelsea", "coffee", "rocket", "retina"])
    with Collection.create(tmp_path / "idx", embedder=PLUMBING):
        pass
    catalog = Catalog.open(tmp_path / "idx")
    try:
        report = Ingester(catalog, lambda: embedder, embedder.input_size, batch_size=2, workers=1).run(str(photos))
        assert report.embedded == 5 and catalog.count_embeddings() == 5
        stored = {catalog.images_by_id([i])[i].path: catalog.embedding(i) for i in catalog.embedding_ids().tolist()}
    finally:
        catalog.close()
    assert events == ["submit 0", "submit 1", "collect 0", "submit 2", "collect 1", "collect 2"]
    # Each file got its own vector, not a neighbour's from the batch before or after.
    with Collection.create(tmp_path / "plain", embedder=PLUMBING) as collection:
        collection.add_folder(photos, batch_size=2, workers=1)
        for image_id in collection.catalog.embedding_ids().tolist():
            path = collection.catalog.images_by_id([image_id])[image_id].path
            np.testing.assert_allclose(stored[path], collection.catalog.embedding(image_id), atol=1e-6)


def test_a_run_with_nothing_new_never_loads_the_model(tmp_path: Path) -> None:
    from lookalike.catalog import Catalog
    from lookalike.ingest import Ingester

    photos = tmp_path / "photos"
    _photos(photos, ["astronaut", "coffee"])
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        collection.add_folder(photos)

    def no_model() -> None:
        raise AssertionError("the model was loaded for a folder with nothing to embed")

    catalog = Catalog.open(tmp_path / "idx")
    try:
        report = Ingester(catalog, no_model, 64).run(str(photos))  # type: ignore[arg-type]
    finally:
        catalog.close()
    assert (report.unchanged, report.embedded) == (2, 0)
