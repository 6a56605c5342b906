"""Embeddings in shard files beside the catalog (what a Ray ingest's driver writes): read back as from the table.

The map step here is the one a Ray worker runs (`map_step.map_files`), in this process: the commit, the files
and every reader are the real ones; only the cluster is left out (tests/test_ray.py runs it).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection, CorruptCatalogError
from lookalike.catalog import Catalog, NewImage
from lookalike.catalog_duplicates import StoredSignature
from lookalike.check import check_collection
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.embedding_shards import SHARD_FOLDER, signed_dtype, write_shard
from lookalike.files import FileEntry
from lookalike.ingest import Ingester, IngestReport
from lookalike.map_step import MappedShard, map_files
from lookalike.ray_ingest import ShardJob, map_shard, mark_shared

PLUMBING = "colour-layout"  # about where vectors live, not look-alike quality
SHARD = 3  # files per shard: several shards for a few photos


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in SAMPLE_PHOTOS[:7]:
        sample_photo(name).save(folder / f"{name}.jpg", quality=90)
    (folder / "zz-copy.jpg").write_bytes((folder / "astronaut.jpg").read_bytes())  # a copy, in a later shard
    (folder / "broken.jpg").write_bytes(b"not a jpeg")  # skipped, with its reason
    return folder


def index_as_ray_does(folder: Path, photos: Path) -> IngestReport:
    """Index `photos` into the collection in `folder` as `lookalike index --ray` does, the map step run here."""
    with Collection.open(folder) as collection:
        embedder = collection.embedder()

        def shards(todo: Iterator[FileEntry], total: int) -> Iterator[MappedShard]:
            entries = list(todo)
            for start in range(0, len(entries), SHARD):
                yield map_files(entries[start : start + SHARD], embedder, embedder.input_size)

        report = Ingester(collection.catalog, lambda: embedder, embedder.input_size, mapper=shards).run(str(photos))
        collection.reindex()  # what `lookalike index` does after ingesting: the index brought up to date
        return report


@pytest.fixture
def ray_folder(tmp_path: Path, photos: Path) -> Path:
    folder = tmp_path / "ray.idx"
    Collection.create(folder, embedder=PLUMBING).close()
    index_as_ray_does(folder, photos)
    return folder


@pytest.fixture
def local_folder(tmp_path: Path, photos: Path) -> Path:
    folder = tmp_path / "local.idx"
    with Collection.create(folder, embedder=PLUMBING) as collection:
        collection.add_folder(photos)
    return folder


def shard_files(folder: Path) -> list[Path]:
    return sorted((folder / SHARD_FOLDER).glob("*.npy"))


def everything_read(catalog: Catalog) -> dict[str, object]:
    """What every reader of stored vectors gives, by reader, keyed by path (ids differ between collections)."""
    paths = catalog.indexed_paths(catalog.embedding_ids().tolist())
    ids = sorted(paths)
    streamed = [(i, v) for part_ids, part in catalog.iter_embeddings(batch_size=2) for i, v in zip(part_ids, part)]
    some_ids, some = catalog.embeddings_of([i for i in ids if paths[i] in sorted(paths.values())[::2]])
    return {
        "count": catalog.count_embeddings(),
        "embedding": {paths[i]: catalog.embedding(i).tolist() for i in ids},  # type: ignore[union-attr]
        "require_embedding": {paths[i]: catalog.require_embedding(i).tolist() for i in ids},
        "iter_embeddings": {paths[int(i)]: v.tolist() for i, v in streamed},
        "embeddings_of": {paths[int(i)]: v.tolist() for i, v in zip(some_ids, some)},
        "sample_embeddings": sorted(map(tuple, catalog.sample_embeddings(len(ids)).tolist())),
    }


def test_vectors_a_ray_commit_writes_to_shard_files_read_back_as_the_table_gives_them(
    ray_folder: Path, local_folder: Path
) -> None:
    assert len(shard_files(ray_folder)) == 3  # 8 files in shards of 3; the broken one is skipped
    with closing(Catalog.open(ray_folder)) as ray, closing(Catalog.open(local_folder)) as local:
        # No BLOB per image: only the byte copy, which reuses its original's stored vector, is in the table.
        assert ray.connection.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 1
        assert local.connection.execute("SELECT count(*) FROM embedding_locations").fetchone()[0] == 0
        assert everything_read(ray) == everything_read(local)
        assert [r.path for r in ray.skipped_images()] == [r.path for r in local.skipped_images()]
        # The signatures live in the shard files' records as well: again only the copy has a row in the table.
        assert ray.connection.execute("SELECT count(*) FROM signatures").fetchone()[0] == 1
        assert signatures_by_path(ray) == signatures_by_path(local) and len(signatures_by_path(ray)) == 8


def signatures_by_path(catalog: Catalog) -> dict[str, StoredSignature]:
    ids = catalog.embedding_ids().tolist()
    paths = catalog.indexed_paths(ids)
    return {paths[image_id]: stored for image_id, stored in catalog.signatures(ids).items()}


def test_a_shard_file_of_bare_vectors_reads_as_before_with_its_signatures_in_the_table(ray_folder: Path) -> None:
    """Files written before shard records held signatures: vectors only, the signatures in the catalog."""
    with closing(Catalog.open(ray_folder)) as catalog:
        before = everything_read(catalog), signatures_by_path(catalog)
        located = catalog.connection.execute(
            "SELECT s.name, s.row_count, s.dim, l.image_id, l.shard_row FROM embedding_locations l"
            " JOIN embedding_shards s ON s.id = l.shard ORDER BY l.image_id"
        ).fetchall()
        signatures = catalog.signatures([row[3] for row in located])
        with catalog.transaction():
            for name, rows, dim, image_id, _ in located:
                records = catalog.shard_files.records(name, rows, dim)
                assert records is not None and records.dtype == signed_dtype(dim)
                catalog._insert_signature(image_id, signatures[image_id])
    for path in shard_files(ray_folder):  # each file rewritten as bare vectors, as schema 4 first wrote them
        vectors = np.array(np.load(path)["vector"])
        path.unlink()
        np.save(path, vectors)
        assert np.load(path, mmap_mode="r").dtype == np.float32
    with closing(Catalog.open(ray_folder)) as catalog:
        assert catalog.shard_files.records(*located[0][:3]) is None
        assert (everything_read(catalog), signatures_by_path(catalog)) == before


def index_as_a_cluster_worker_does(
    folder: Path, photos: Path, shared: bool, seen_as: Path | None = None
) -> list[MappedShard]:
    """Index `photos` into `folder` with each shard mapped by `map_shard`, the function a Ray task runs; the mark
    of a shared folder left by the driver or not; the workers seeing the folder at `seen_as` if given. Returns what
    each task sent."""
    sent: list[MappedShard] = []
    with Collection.open(folder) as collection:
        embedder = collection.embedder()

        def shards(todo: Iterator[FileEntry], total: int) -> Iterator[MappedShard]:
            mark = mark_shared(folder) if shared else ""
            entries = [(entry.path, entry.size, entry.mtime_ns) for entry in todo]
            for start in range(0, len(entries), SHARD):
                job = ShardJob(entries[start : start + SHARD], PLUMBING, "auto", "auto", embedder.input_size, None,
                               collection=str(seen_as or folder), run_mark=mark)  # fmt: skip
                sent.append(map_shard(job)[1])
                yield sent[-1]

        Ingester(collection.catalog, lambda: embedder, embedder.input_size, mapper=shards).run(str(photos))
        collection.reindex()
    return sent


@pytest.mark.parametrize("shared", [True, False])
def test_a_worker_that_shares_the_collection_folder_writes_the_shard_files_itself(
    tmp_path: Path, photos: Path, local_folder: Path, shared: bool
) -> None:
    folder = tmp_path / "worker.idx"
    Collection.create(folder, embedder=PLUMBING).close()
    sent = index_as_a_cluster_worker_does(folder, photos, shared)
    assert len(sent) == 3 and all(len(shard.rows) for shard in sent)
    for shard in sent:
        if shared:  # the file is written: only rows, the file's name and checksums travel to the driver
            assert shard.file is not None and (folder / SHARD_FOLDER / shard.file).is_file()
            assert len(shard.vectors) == 0 and shard.dim > 0 and all(row.signature is None for row in shard.rows)
            assert shard.checksums is not None and len(shard.checksums) == sum(r.error is None for r in shard.rows)
        else:  # a node that does not see the driver's mark sends the vectors and signatures
            assert shard.file is None and len(shard.vectors) == sum(row.error is None for row in shard.rows)
    assert len(shard_files(folder)) == 3
    with closing(Catalog.open(folder)) as worker, closing(Catalog.open(local_folder)) as local:
        assert everything_read(worker) == everything_read(local)
        assert signatures_by_path(worker) == signatures_by_path(local)
    assert check_collection(folder).healthy


def test_a_worker_that_sees_the_folder_but_cannot_write_there_sends_the_vectors(
    media: Path, tmp_path: Path, photos: Path, local_folder: Path
) -> None:
    folder = media / "worker.idx"
    Collection.create(folder, embedder=PLUMBING).close()
    read_only = tmp_path / "read-only-view"  # the same folder, as a node that mounts it read-only sees it
    read_only.mkdir()
    subprocess.run(["mount", "--bind", str(media), str(read_only)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only)], check=True)
        sent = index_as_a_cluster_worker_does(folder, photos, shared=True, seen_as=read_only / "worker.idx")
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)
    assert all(shard.file is None and len(shard.vectors) for shard in sent)  # the driver wrote every file
    with closing(Catalog.open(folder)) as worker, closing(Catalog.open(local_folder)) as local:
        assert everything_read(worker) == everything_read(local)
        assert signatures_by_path(worker) == signatures_by_path(local)


def test_readers_keep_only_so_many_files_mapped_and_read_the_same(ray_folder: Path) -> None:
    with closing(Catalog.open(ray_folder)) as catalog:
        every_file_mapped = everything_read(catalog)
    with closing(Catalog.open(ray_folder)) as catalog:
        catalog.shard_files.MAPPED_AT_ONCE = 1  # 100M images make more files than a process may map
        assert everything_read(catalog) == every_file_mapped


def test_search_reindex_and_duplicates_read_vectors_from_shard_files(ray_folder: Path, local_folder: Path) -> None:
    with Collection.open(ray_folder) as ray, Collection.open(local_folder) as local:
        for collection in (ray, local):
            collection.reindex("IVF2,PQ4x3", options={"rerank": 2})  # search re-ranks with the stored vectors
        [ray_hits] = ray.search_ids([2], k=4)
        [local_hits] = local.search_ids([2], k=4)
        assert [h.score for h in ray_hits.hits] == pytest.approx([h.score for h in local_hits.hits])
        assert ray.info().embedding_shard_files == 3 and ray.info().bytes_on_disk[SHARD_FOLDER] > 0
        assert local.info().embedding_shard_files == 0
        assert len(ray.duplicates()) == len(local.duplicates()) == 1  # the byte copy


def test_a_catalog_holds_vectors_in_the_table_and_in_files_at_once(ray_folder: Path, photos: Path) -> None:
    with closing(Catalog.open(ray_folder)) as catalog:
        dim = catalog.require_embedding(int(catalog.embedding_ids()[0])).shape[0]
        extra = np.random.default_rng(3).standard_normal((2, dim)).astype(np.float32)
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        added = catalog.add_indexed(
            [NewImage(str(photos / f"extra-{n}.jpg"), 1, 1, f"extra{n}", 8, 8, extra[n]) for n in range(2)]
        )
        ids = catalog.embedding_ids()
        assert ids.tolist() == sorted(ids.tolist()) and set(added) <= set(ids.tolist())
        streamed = np.concatenate([part for part, _ in catalog.iter_embeddings(batch_size=3)])
        assert streamed.tolist() == ids.tolist() and catalog.count_embeddings() == len(ids)
        both = [int(ids[0]), added[1]]  # one from a file, one from the table
        got_ids, got = catalog.embeddings_of(both)
        assert got_ids.tolist() == both and np.array_equal(got[1], extra[1])
        assert np.array_equal(got[0], catalog.embedding(both[0]))


def test_a_driver_killed_before_its_commit_leaves_a_harmless_file_that_the_next_update_removes(
    ray_folder: Path, photos: Path
) -> None:
    with closing(Catalog.open(ray_folder)) as catalog:
        before = everything_read(catalog)
    # What a driver killed (kill -9) between writing a shard's file and committing its rows leaves behind.
    orphan = write_shard(ray_folder, np.eye(4, 48, dtype=np.float32))
    (ray_folder / SHARD_FOLDER / ".left-by-a-crash.npy.1234.tmp").write_bytes(b"\0" * 100)
    mine = ray_folder / "notes.npy"  # never the user's: only the shard folder's own files are looked at
    mine.write_bytes(b"mine")
    with closing(Catalog.open(ray_folder)) as catalog:
        assert everything_read(catalog) == before
    finding = next(f for f in check_collection(ray_folder).findings if f.part == "shard files")
    assert not finding.healthy and finding.detail.startswith("2 files of embeddings no image refers to")
    with Collection.open(ray_folder) as collection:
        assert collection.add_folder(photos).embedded == 0  # an update: nothing new, the leftovers removed
    assert check_collection(ray_folder).healthy
    assert not (ray_folder / SHARD_FOLDER / orphan).exists() and len(shard_files(ray_folder)) == 3
    assert mine.read_bytes() == b"mine"


def ids_in_file(folder: Path, path: Path) -> list[int]:
    """The images whose vectors the catalog says live in the shard file at `path`."""
    with sqlite3.connect(folder / "catalog.sqlite") as connection:
        rows = connection.execute(
            "SELECT l.image_id FROM embedding_locations l JOIN embedding_shards s ON s.id = l.shard"
            " WHERE s.name = ? ORDER BY 1",
            (path.name,),
        )
        return [row[0] for row in rows]


def lookalike(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookalike", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_damaged_shard_file_is_one_clear_error_and_a_repair_embeds_again(
    ray_folder: Path, photos: Path, damage: str
) -> None:
    victim = shard_files(ray_folder)[0]
    in_victim = ids_in_file(ray_folder, victim)
    if damage == "missing":
        victim.unlink()
        expected = "missing"
    else:
        victim.write_bytes(victim.read_bytes()[:200])
        expected = "damaged"
    message = f"embedding shard file .*{victim.name} is {expected}"
    with closing(Catalog.open(ray_folder)) as catalog, pytest.raises(CorruptCatalogError, match=message):
        list(catalog.iter_embeddings())
    searched = lookalike("search", "--index", str(ray_folder), "--id", str(in_victim[0]))
    assert searched.returncode != 0 and "Traceback" not in searched.stderr
    assert victim.name in searched.stderr and "repair the collection" in searched.stderr
    found = json.loads(lookalike("check", "--index", str(ray_folder), "--json").stdout)
    assert [f["part"] for f in found["findings"] if not f["healthy"]] == ["embeddings"]
    assert f"shard files missing or damaged: {victim.name}" in found["findings"][1]["detail"]
    assert lookalike("check", "--index", str(ray_folder), "--repair").returncode == 0
    assert check_collection(ray_folder).healthy
    report = index_as_ray_does(ray_folder, photos)
    # The file's images, embedded again into a new file (or, for the original of the copy, its copy's vector reused).
    assert report.embedded + report.reused == len(in_victim)
    with Collection.open(ray_folder) as collection:
        assert collection.index().count == 8


def test_a_flipped_bit_in_a_shard_file_is_caught_by_the_row_checksum(ray_folder: Path) -> None:
    victim = shard_files(ray_folder)[0]
    stored = np.load(victim, mmap_mode="r+")
    last = stored["vector"][-1] if stored.dtype.names else stored[-1]
    last[-1] = np.nextafter(last[-1], np.inf)  # the lowest mantissa bit: the norm rule alone would not see it
    stored.flush()
    del stored, last
    with closing(Catalog.open(ray_folder)) as catalog:
        damaged = next(i for i in catalog.embedding_ids().tolist() if _raises(catalog, i))
        assert damaged not in [int(i) for ids, _ in catalog.iter_embeddings() for i in ids]
        assert catalog.embeddings_of([damaged])[0].tolist() == []
    report = check_collection(ray_folder)
    assert not report.healthy and f"ids {damaged})" in report.findings[1].detail


def _raises(catalog: Catalog, image_id: int) -> bool:
    try:
        catalog.embedding(image_id)
    except CorruptCatalogError as error:
        return "is damaged" in str(error)
    return False


def test_removing_or_re_embedding_an_image_drops_its_reference_and_an_empty_file_goes(ray_folder: Path) -> None:
    with closing(Catalog.open(ray_folder)) as catalog:
        ids = catalog.embedding_ids().tolist()
        catalog.remove_images(ids[:2])
        catalog.queue_for_reembedding([ids[2]], "test: embed again")
        assert catalog.count_embeddings() == len(ids) - 3
        assert all(catalog.embedding(i) is None for i in ids[:3])
        assert set(catalog.tombstones().tolist()) == set(ids[:3])
        # The first shard's three rows are all unreferenced now: the file is garbage, the others are in use.
        assert len(catalog.unreferenced_shard_files()) == 1
    assert check_collection(ray_folder, repair=True).healthy
    assert len(shard_files(ray_folder)) == 2
    with closing(Catalog.open(ray_folder)) as catalog:
        assert catalog.unreferenced_shard_files() == []  # the file and its registration both gone
        assert catalog.count_embeddings() == len(ids) - 3


def test_a_catalog_of_schema_3_keeps_its_vectors_and_gets_the_shard_tables(local_folder: Path) -> None:
    with closing(Catalog.open(local_folder)) as catalog:
        before = everything_read(catalog)
    with sqlite3.connect(local_folder / "catalog.sqlite") as connection:  # as the previous lookalike left it
        connection.execute("DROP TABLE embedding_shards")
        connection.execute("DROP TABLE embedding_locations")
        connection.execute("PRAGMA user_version = 3")
    with closing(Catalog.open(local_folder)) as catalog:
        assert catalog.connection.execute("PRAGMA user_version").fetchone()[0] == 4
        assert everything_read(catalog) == before
