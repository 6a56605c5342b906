"""The driver's own CPU per image in a cluster ingest, without the cluster: scan, diff, take in results, commit.

    python benchmarks/driver_commit.py --images 20000 --baseline OLD_CHECKOUT/src

What `lookalike index --ray` does on its driver, in one process and with no model: scan a folder of --images
files, diff it against a new catalog, hand the files to the map step a shard at a time (as the scan finds them),
take in its results shard by shard (unpickled, as the driver takes them from a Ray worker) and commit each
shard. The results are made up front, in each version's own form: 1,280 float32 dimensions (EfficientNet-Lite0's),
a 1.2 KiB pixel signature, a 32-hex-digit content hash;
one file in 100 is a decode error and one in 100 a byte copy of an earlier file (the reuse path). A second
run over the same folder finds nothing new (the re-scan cost). "workers write" is this checkout again, with the
shard files written by the workers into the collection they share (as they do when they see it), not timed. Last,
the floor under a commit: the bare
INSERTs (row, embedding, CRC, signature; one executemany per table and shard) with no Python around them, with
the embeddings in the catalog and with them in one .npy shard file per shard (as `lookalike index --ray` writes
them since schema 4). Ray's
own cost per task is not in these figures: benchmarks/ray_driver.py adds it.

With --baseline (the src folder of another checkout, e.g. `git worktree add OLD 8a5c585`), the same runs are
made with that code too, alternately, each version in its own processes; the best of --repeats counts.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DIM = 1280
SIGNATURE_BYTES = 1216  # lookalike.signatures.SIGNATURE_BYTES: a 32 x 32 grey and an 8 x 8 RGB thumbnail
BAD_EVERY = 100  # one decode error in this many files
COPY_EVERY = 100  # one byte copy of an earlier file in this many


def made_up_results(paths: list[str], shard_size: int) -> list[bytes]:
    """The pickled map results of each shard, in the form the code on sys.path sends them."""
    from lookalike.files import FileEntry

    entries = [FileEntry(path, info.st_size, info.st_mtime_ns) for path in paths for info in [os.stat(path)]]
    shards = [made_up_shard(entries[start : start + shard_size]) for start in range(0, len(entries), shard_size)]
    return [pickle.dumps(shard, protocol=5) for shard in shards]


def made_up_shard(entries: list) -> object:
    """What a worker would send for files named `*-NUMBER.jpg`, in the form of the code on sys.path: a MappedShard
    (one tuple per file, one array) where the code has it, else a list of MappedImage."""
    import numpy as np

    from lookalike import ingest
    from lookalike.catalog_duplicates import StoredSignature

    numbers = [int(Path(entry.path).stem.rsplit("-", 1)[1]) for entry in entries]
    vectors = np.random.default_rng(numbers[0] if numbers else 0).standard_normal((len(entries), DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)  # unit rows
    stored = StoredSignature(bytes(SIGNATURE_BYTES), 90, 3)
    errors = ["not an image" if number % BAD_EVERY == BAD_EVERY // 2 else None for number in numbers]
    # A copy has the content hash of a file 50 numbers earlier.
    sources = [number - 50 if number % COPY_EVERY == COPY_EVERY - 1 else number for number in numbers]
    hashes = [hashlib.blake2b(str(source).encode(), digest_size=16).hexdigest() for source in sources]
    facts = list(zip(entries, hashes, errors))
    if hasattr(ingest, "MappedShard"):
        rows = [
            ingest.MappedRow(e.path, e.size, e.mtime_ns, h, 640, 480, None, stored.signature, 90, 3)
            if err is None
            else ingest.MappedRow(e.path, e.size, e.mtime_ns, "", 0, 0, err, None, None, 0)
            for e, h, err in facts
        ]
        return ingest.MappedShard(rows, vectors[[i for i, error in enumerate(errors) if error is None]])
    return [
        ingest.MappedImage(e, error=err) if err else ingest.MappedImage(e, h, 640, 480, vectors[i], None, stored)
        for i, (e, h, err) in enumerate(facts)
    ]


def written_by_workers(shards: list[bytes], collection: Path) -> list[bytes]:
    """The shards as a worker that shares the collection's folder sends them (`MappedShard.written_where_shared`):
    its shard file already written, only the rows to send. The writing is the workers' time, not measured."""
    return [pickle.dumps(pickle.loads(data).written_where_shared(collection), protocol=5) for data in shards]


def child(count: int, shard_size: int, shared: bool = False) -> None:
    """One measured run of the code on sys.path; prints `first-run-cpu rescan-cpu first-run-wall` in seconds.
    `shared`: the workers wrote the shard files into the collection themselves."""
    from lookalike.catalog import Catalog
    from lookalike.ingest import Ingester

    work = Path(tempfile.mkdtemp(prefix="drivercommit"))
    try:
        photos = work / "photos"
        photos.mkdir()
        paths = [str(photos / f"photo-{number:07d}.jpg") for number in range(count)]
        for path in paths:
            Path(path).write_bytes(b"")
        shards = made_up_results(paths, shard_size)

        def mapper(todo: Iterator[object], total: int) -> object:
            if total == 0:  # as RayMapper: nothing to send
                return
            files = iter(todo)
            for data in shards:  # the results are already made; the files are taken a shard at a time, as sent
                for _ in itertools.islice(files, shard_size):
                    pass
                yield pickle.loads(data)
            for _ in files:
                pass

        catalog = Catalog.open(work / "idx", create=True)
        if shared:
            shards = written_by_workers(shards, work / "idx")
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            report = Ingester(catalog, lambda: None, 224, mapper=mapper).run(str(photos))  # type: ignore[arg-type]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert report.scanned == count and len(report.skipped) == count // BAD_EVERY, report.summary()
            rescan = time.process_time()
            again = Ingester(catalog, lambda: None, 224, mapper=mapper).run(str(photos))  # type: ignore[arg-type]
            rescan = time.process_time() - rescan
            assert again.unchanged == count and again.embedded == 0, again.summary()
        finally:
            catalog.close()
        print(f"{cpu} {rescan} {wall} {report.embedded} {report.reused}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def floor(count: int, shard_size: int, shard_files: bool = False) -> float:
    """CPU seconds of the bare writes a commit makes, executemany per shard: the image's row, its embedding (a BLOB
    and its CRC in the catalog; or, with `shard_files`, one .npy file per shard, written durably, and the row's
    place and CRC in the catalog) and its signature."""
    import numpy as np

    from lookalike.catalog import Catalog
    from lookalike.vector_integrity import vector_checksum

    work = Path(tempfile.mkdtemp(prefix="drivercommit"))
    catalog = Catalog.open(work / "idx", create=True)
    vectors = np.random.default_rng(7).standard_normal((count, DIM)).astype(np.float32)
    blobs = [] if shard_files else [row.tobytes() for row in vectors]
    try:
        started = time.process_time()
        for start in range(1, count + 1, shard_size):
            ids = range(start, min(count + 1, start + shard_size))
            name = _write_shard(work / "idx", vectors[start - 1 : ids[-1]]) if shard_files else ""
            with catalog.transaction() as db:
                db.executemany(
                    "INSERT INTO images (id, path, size, mtime_ns, content_hash, width, height, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'indexed')",
                    [(i, f"/photos/photo-{i:07d}.jpg".encode(), 1, 1, f"{i:032x}", 640, 480) for i in ids],
                )
                if shard_files:
                    shard = db.execute(
                        "INSERT INTO embedding_shards (name, row_count, dim) VALUES (?, ?, ?)", (name, len(ids), DIM)
                    ).lastrowid
                    db.executemany(
                        "INSERT INTO embedding_locations (image_id, shard, shard_row, crc) VALUES (?, ?, ?, ?)",
                        [(i, shard, i - start, vector_checksum(vectors[i - 1].data)) for i in ids],
                    )
                else:
                    db.executemany("INSERT INTO embeddings VALUES (?, ?)", [(i, blobs[i - 1]) for i in ids])
                    db.executemany(
                        "INSERT OR REPLACE INTO embedding_checksums VALUES (?, ?)",
                        [(i, vector_checksum(blobs[i - 1])) for i in ids],
                    )
                db.executemany(
                    "INSERT OR REPLACE INTO signatures (image_id, signature, jpeg_quality, metadata_fields)"
                    " VALUES (?, ?, 90, 3)",
                    [(i, bytes(SIGNATURE_BYTES)) for i in ids],
                )
        return time.process_time() - started
    finally:
        catalog.close()
        shutil.rmtree(work, ignore_errors=True)


def _write_shard(collection: Path, vectors: Any) -> str:
    from lookalike.embedding_shards import write_shard

    return write_shard(collection, vectors)


def measured(source: str, count: int, shard_size: int, shared: bool = False) -> tuple[float, float, float, str]:
    environment = {**os.environ, "PYTHONPATH": source}
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--images", str(count), "--shard", str(shard_size)]
        + (["--shared"] if shared else []),
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu, rescan, wall, embedded, reused = done.stdout.split()
    return float(cpu), float(rescan), float(wall), f"{embedded} embedded, {reused} reused"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--shard", type=int, default=32, help="files per shard (the CLI's --batch-size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="the src folder of the code to compare with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shared", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.images, args.shard, args.shared)
        return
    here = str(Path(__file__).resolve().parents[1] / "src")
    sys.path.insert(0, here)  # the floor runs here, on this checkout's schema
    # (name, code, whether the workers share the collection's folder and write the shard files themselves)
    versions = [("this checkout", here, False), ("workers write", here, True)]
    versions += [("baseline", args.baseline, False)] if args.baseline else []
    best: dict[str, tuple[float, float, float, str]] = {}
    for _ in range(args.repeats):
        for name, source, shared in versions:
            result = measured(source, args.images, args.shard, shared)
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    print(f"{args.images} files, shards of {args.shard}; best of {args.repeats}; driver CPU per image:")
    for name, (cpu, rescan, wall, counts) in best.items():
        print(
            f"{name:14} first run {1000 * cpu / args.images:.4f} ms ({args.images / wall:,.0f} images/s wall; "
            f"{counts})  re-scan {1000 * rescan / args.images:.4f} ms"
        )
    floors = [floor(args.images, args.shard) for _ in range(args.repeats)]
    print(f"bare INSERTs of a commit, embeddings in the catalog: {1000 * min(floors) / args.images:.4f} ms per image")
    floors = [floor(args.images, args.shard, shard_files=True) for _ in range(args.repeats)]
    print(f"bare writes of a commit, embeddings in shard files: {1000 * min(floors) / args.images:.4f} ms per image")
    if "baseline" in best:
        for name in ("this checkout", "workers write"):
            ratio = best["baseline"][0] / best[name][0]
            print(f"first run, {name}: 1/{ratio:.2f} of the baseline's CPU per image")


if __name__ == "__main__":
    main()
