"""Where embeddings live at 100M images: the catalog's SQLite rows against .npy shard files, measured here.

    python benchmarks/embedding_storage.py                  # 200,000 vectors; writes docs/benchmarks.md
    python benchmarks/embedding_storage.py --vectors 20000 --no-write
    python benchmarks/embedding_storage.py --cold           # reads from the disk (as root: drops the page cache)

Writes --vectors seeded 1280-d embeddings into a new collection the way ingest commits them (rows, vector BLOB,
CRC-32, one transaction per --batch images, WAL, synchronous=NORMAL), reads them back the way an index build does
(`Catalog.iter_embeddings`: every row's checksum and norm checked), and samples a training set from them; then the
same vectors as .npy shards of --batch rows (written, fsynced, read back). The page cache is dropped between
writing and reading with --cold (as root; it empties the whole machine's cache), so reads come from the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs import machine_description, write_section  # noqa: E402
from lookalike import Collection  # noqa: E402
from lookalike.catalog import NewImage  # noqa: E402

DIM = 1280
TARGET = 100_000_000


def drop_caches() -> bool:
    """Empty the page cache (root only): later reads come from the disk."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def seeded_vectors(start: int, count: int) -> np.ndarray:
    vectors = np.random.default_rng(start).standard_normal((count, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sqlite_figures(folder: Path, total: int, batch: int, cold: bool) -> dict[str, float]:
    with Collection.create(folder) as collection:
        catalog = collection.catalog
        write_s = write_cpu = 0.0
        for start in range(0, total, batch):
            vectors = seeded_vectors(start, min(batch, total - start))
            images = [
                NewImage(f"/photos/{start + i:09}.jpg", 1, 1, f"{start + i:016x}", 4032, 3024, vector)
                for i, vector in enumerate(vectors)
            ]
            started, cpu = time.perf_counter(), time.process_time()
            catalog.add_indexed(images)
            write_s += time.perf_counter() - started
            write_cpu += time.process_time() - cpu
    cold = cold and drop_caches()
    with Collection.open(folder) as collection:
        started, cpu = time.perf_counter(), time.process_time()
        read = sum(len(ids) for ids, _ in collection.catalog.iter_embeddings())
        read_s, read_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert read == total
        started = time.perf_counter()
        collection.catalog.sample_embeddings(min(65_536, total // 2))
        sample_s = time.perf_counter() - started
    size = sum(path.stat().st_size for path in folder.glob("catalog.sqlite*"))
    return {
        "write": total / write_s,
        "read": total / read_s,
        "write_cpu_us": 1e6 * write_cpu / total,
        "read_cpu_us": 1e6 * read_cpu / total,
        "sample": sample_s,
        "bytes": size / total,
        "cold": cold,
    }


def npy_figures(folder: Path, total: int, batch: int, cold: bool) -> dict[str, float]:
    folder.mkdir()
    write_s = 0.0
    for start in range(0, total, batch):
        vectors = seeded_vectors(start, min(batch, total - start))
        started = time.perf_counter()
        path = folder / f"{start:09}.npy"
        with open(path, "wb") as handle:
            np.save(handle, vectors)
            handle.flush()
            os.fsync(handle.fileno())
        write_s += time.perf_counter() - started
    if cold:
        drop_caches()
    started = time.perf_counter()
    read = sum(len(np.load(path)) for path in sorted(folder.glob("*.npy")))
    read_s = time.perf_counter() - started
    assert read == total
    size = sum(path.stat().st_size for path in folder.glob("*.npy"))
    return {"write": total / write_s, "read": total / read_s, "bytes": size / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before reading (root; whole machine)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embedding-storage"))
    try:
        sql = sqlite_figures(work / "collection", args.vectors, args.batch, args.cold)
        npy = npy_figures(work / "shards", args.vectors, args.batch, args.cold)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = DIM * 4 / 1e6
    rows = [
        f"| SQLite catalog (today) | {sql['write']:,.0f} ({sql['write'] * mb:,.0f} MB/s) | "
        f"{sql['read']:,.0f} ({sql['read'] * mb:,.0f} MB/s) | {sql['bytes']:,.0f} | "
        f"{TARGET * sql['bytes'] / 1e9:,.0f} GB; write {TARGET / sql['write'] / 3600:.1f} h, "
        f"read {TARGET / sql['read'] / 3600:.1f} h |",
        f"| .npy shards of {args.batch:,} | {npy['write']:,.0f} ({npy['write'] * mb:,.0f} MB/s) | "
        f"{npy['read']:,.0f} ({npy['read'] * mb:,.0f} MB/s) | {npy['bytes']:,.0f} | "
        f"{TARGET * npy['bytes'] / 1e9:,.0f} GB; write {TARGET / npy['write'] / 3600:.1f} h, "
        f"read {TARGET / npy['read'] / 3600:.1f} h |",
    ]
    body = f"""Command: `python benchmarks/embedding_storage.py --vectors {args.vectors} --batch {args.batch}`

Machine: {machine_description()}; shared with other jobs while it ran. Reads {
        "from a cold page cache" if sql["cold"] else "possibly from the page cache (not root: it could not be dropped)"
    }.

{args.vectors:,} seeded 1280-d float32 embeddings, written as ingest commits them and read back as an index build
reads them (checksums and norms checked for SQLite; a plain load for .npy).

| storage | write, vectors/s | read, vectors/s | bytes per vector on disk | at 100,000,000 vectors |
| --- | ---: | ---: | ---: | --- |
{chr(10).join(rows)}

- CPU time per vector in the SQLite catalog: {sql["write_cpu_us"]:.0f} us to write (one writer: at most
  {1e6 / sql["write_cpu_us"]:,.0f} vectors/s whatever the number of workers feeding it), {sql["read_cpu_us"]:.0f} us to
  read back with its checks.
- A training sample of {min(65_536, args.vectors // 2):,} vectors drawn at random from the catalog took
  {sql["sample"]:.1f} s.
"""
    print(body)
    if not args.no_write:
        write_section("Where embeddings live at 100M images", body)


if __name__ == "__main__":
    main()
