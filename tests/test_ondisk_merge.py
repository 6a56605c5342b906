"""An IVF index merged on disk answers as the one merged in memory, reopens mapped, and survives interruptions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from lookalike import Collection
from lookalike.catalog import NewImage
from lookalike.cli import main
from lookalike.errors import IndexSpecError, StorageError
from lookalike.index import INDEX_FILE, VectorIndex
from lookalike.index_store import load_verified
from lookalike.ondisk import data_files, is_on_disk
from lookalike.planner import plan_index
from lookalike.settings import IndexState
from lookalike.sharded_build import LocalShardAdder, merge_in_memory, merge_on_disk
from lookalike.storage import file_fingerprint, scratch_files
from seeded import IDS, PCA_IVF, K, clustered_unit_vectors, make_collection

VECTORS = clustered_unit_vectors(len(IDS), seed=15)
QUERIES = clustered_unit_vectors(100, seed=16)
NAMES = [str(i) for i in range(len(QUERIES))]
IVF = {"nlist": 32}


def _trained(factory: str) -> VectorIndex:
    plan = plan_index(factory, len(VECTORS), VECTORS.shape[1], "cosine", {})
    index = VectorIndex.create(plan, VECTORS.shape[1])
    index.train(VECTORS[:2000])
    return index


def _shards(size: int):  # noqa: ANN202 - an iterator of (ids, vectors)
    return ((IDS[start : start + size], VECTORS[start : start + size]) for start in range(0, len(IDS), size))


def _hits(folder: Path, nprobe: int = 8) -> list[list[tuple[str, float]]]:
    with Collection.open(folder) as collection:
        results = collection.search_vectors(QUERIES, NAMES, k=K, nprobe=nprobe)
    return [[(hit.path, round(hit.score, 5)) for hit in result.hits] for result in results]


def _add_images(folder: Path, vectors: np.ndarray, start: int) -> None:
    with Collection.open(folder) as collection:
        collection.catalog.add_indexed(
            [NewImage(f"/more/{start + i:06}.jpg", 1, 1, f"more{start + i}", 1, 1, v) for i, v in enumerate(vectors)]
        )


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64_HNSW16,SQ8", PCA_IVF])
def test_the_on_disk_merge_answers_as_the_in_memory_merge(tmp_path: Path, factory: str) -> None:
    in_memory = _trained(factory)
    on_disk = VectorIndex(faiss.clone_index(in_memory.index), "cosine")  # the same trained quantizer
    assert merge_in_memory(in_memory, LocalShardAdder(), _shards(700)) == 8
    seen: list[int] = []
    path = tmp_path / INDEX_FILE
    checksum, count, shards = merge_on_disk(on_disk, LocalShardAdder(), _shards(700), path, seen.append)
    assert (count, shards, seen) == (len(IDS), 8, [len(IDS)])
    assert on_disk.count == 0  # the trained copy stays empty: the lists went to the data file
    (data,) = data_files(tmp_path)
    assert data.stat().st_size > 0 and not scratch_files(tmp_path)  # no shard file is left behind

    mapped = load_verified(path, _state(path, checksum, count), "cosine", mmap=True)
    assert mapped.read_only and is_on_disk(mapped) and mapped.count == in_memory.count
    for nprobe in (1, 4, 16):
        scores, ids = mapped.search(QUERIES, K, nprobe=nprobe)
        want_scores, want_ids = in_memory.search(QUERIES, K, nprobe=nprobe)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores)
    # A full (not fingerprint-trusted) load checks the data file's bytes against the checksum its name carries.
    with open(data, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(Exception, match="does not match the checksum its name records"):
        load_verified(path, _state(path, checksum, count), "cosine")


def test_a_collection_reindexed_on_disk_by_the_cli_searches_as_one_in_memory(tmp_path: Path) -> None:
    make_collection(tmp_path / "memory", VECTORS, "ivf", IVF)
    shutil.copytree(tmp_path / "memory", tmp_path / "disk")
    reindex = [sys.executable, "-m", "lookalike", "reindex", "--index", str(tmp_path / "disk"), "--kind", "ivf"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([*reindex, "--nlist", "32", "--on-disk"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    # Only what lookalike says: nothing Faiss prints (it reports each resize of a data file) comes through.
    assert result.stdout.splitlines() == [f"rebuilt: IVF32,Flat (ivf; IVF with nlist 32) with {len(IDS)} vectors"]
    assert len(data_files(tmp_path / "disk")) == 1
    with Collection.open(tmp_path / "disk") as collection:
        assert is_on_disk(collection.index()) and collection.index().read_only
        data_file = data_files(tmp_path / "disk")[0]
        assert collection.info().bytes_on_disk[data_file.name] == data_file.stat().st_size  # counted by `info`
    assert _hits(tmp_path / "disk") == _hits(tmp_path / "memory")

    # A fresh process opens it mapped, from a copy of the folder elsewhere (the data file is named relatively).
    shutil.copytree(tmp_path / "disk", tmp_path / "moved")
    script = textwrap.dedent(
        f"""
        from lookalike import Collection
        from lookalike.ondisk import is_on_disk
        with Collection.open({str(tmp_path / "moved")!r}) as collection:
            index = collection.index()
            print(is_on_disk(index), index.read_only, index.count)
        """
    )
    reopened = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert reopened.stdout.strip() == f"True True {len(IDS)}", reopened.stdout + reopened.stderr
    assert _hits(tmp_path / "moved") == _hits(tmp_path / "memory")

    # Back into index.faiss: the data file goes once the new index is recorded.
    result = CliRunner().invoke(main, ["reindex", "--index", str(tmp_path / "disk"), "--kind", "ivf", "--in-memory"])
    assert result.exit_code == 0, result.output
    assert not data_files(tmp_path / "disk")
    assert _hits(tmp_path / "disk") == _hits(tmp_path / "memory")


def test_newer_embeddings_are_merged_into_a_new_data_file_and_read_beside_the_old_one(tmp_path: Path) -> None:
    base, more = VECTORS[:3000], clustered_unit_vectors(500, seed=17)
    make_collection(tmp_path / "memory", base, "ivf", IVF)
    shutil.copytree(tmp_path / "memory", tmp_path / "disk")
    with Collection.open(tmp_path / "disk") as collection:
        collection.reindex("ivf", options=IVF, on_disk=True)
    (first,) = data_files(tmp_path / "disk")
    for folder in ("memory", "disk"):
        _add_images(tmp_path / folder, more, 0)
    # A reader searches the mapped lists and the newer vectors (in memory) side by side, writing nothing.
    with Collection.open(tmp_path / "disk", read_only=True) as reader:
        assert reader.index().count == len(base) + len(more) and data_files(tmp_path / "disk") == [first]
        read = reader.search_vectors(QUERIES, NAMES, k=K, nprobe=8)
    want = _hits(tmp_path / "memory")  # a writer: adds them to the index in memory
    assert [[(h.path, round(h.score, 5)) for h in r.hits] for r in read] == want
    # A writer merges them with the mapped lists into a new data file; the old one is removed.
    with Collection.open(tmp_path / "disk") as collection:
        index = collection.index()
        assert is_on_disk(index) and index.count == len(base) + len(more)
    (second,) = data_files(tmp_path / "disk")
    assert second != first
    assert _hits(tmp_path / "disk") == want
    # A rebuild (here to another nlist) keeps the index on disk.
    with Collection.open(tmp_path / "disk") as collection:
        collection.reindex("ivf", options={"nlist": 16})
        assert is_on_disk(collection.index())


def test_only_ivf_kinds_are_kept_on_disk(tmp_path: Path) -> None:
    make_collection(tmp_path / "c", VECTORS[:500], "ivf", {"nlist": 8})
    with Collection.open(tmp_path / "c") as collection:
        with pytest.raises(IndexSpecError, match="only IVF kinds can be kept on disk"):
            collection.reindex("hnsw", on_disk=True)
        assert collection.index().count == 500
    result = CliRunner().invoke(main, ["reindex", "--index", str(tmp_path / "c"), "--kind", "flat", "--on-disk"])
    assert result.exit_code != 0 and "only IVF kinds can be kept on disk, not" in result.output
    assert "Traceback" not in result.output


KILLED_WRITER = """
import os, signal, sys
from lookalike import Collection
from lookalike import index as index_module
from lookalike import sharded_build

where = sys.argv[2]
if where == "shards":  # killed while the shards are being added: shard files are on disk, nothing merged
    added = sharded_build.add_shard
    calls = []
    def add_then_die(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return added(*args)
    sharded_build.add_shard = add_then_die
else:  # killed after the new data file is in place, before index.faiss names it
    def die(self, path):
        os.kill(os.getpid(), signal.SIGKILL)
    index_module.VectorIndex.save = die
with Collection.open(sys.argv[1]) as collection:
    collection.reindex("ivf", options={"nlist": 16}, on_disk=True, shard_size=700)
"""


@pytest.mark.parametrize("where", ["shards", "before index.faiss"])
@pytest.mark.parametrize("previous", ["in memory", "on disk"])
def test_a_merge_killed_midway_leaves_the_previous_index(tmp_path: Path, where: str, previous: str) -> None:
    make_collection(tmp_path / "c", VECTORS, "ivf", IVF)
    if previous == "on disk":
        with Collection.open(tmp_path / "c") as collection:
            collection.reindex("ivf", options=IVF, on_disk=True)
    before, files_before = _hits(tmp_path / "c"), data_files(tmp_path / "c")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "c"), where], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr
    left = data_files(tmp_path / "c")
    assert len(left) == len(files_before) + (where != "shards")  # the new data file, not yet named by index.faiss
    assert scratch_files(tmp_path / "c") or where != "shards"  # the shard files of the killed build

    with Collection.open(tmp_path / "c", read_only=True) as reader:  # as the previous index, untouched
        assert reader.current_plan().factory == "IVF32,Flat"
    assert _hits(tmp_path / "c") == before
    # The next writer's lock clears the scratch files; the next index recorded drops the orphaned data file.
    with Collection.open(tmp_path / "c") as collection:
        collection.reindex("ivf", options=IVF, on_disk=True)
    assert not scratch_files(tmp_path / "c") and len(data_files(tmp_path / "c")) == 1
    assert _hits(tmp_path / "c") == before


def _state(path: Path, checksum: str, count: int) -> IndexState:
    return IndexState(checksum, count, VECTORS.shape[1], int(IDS[-1]), **file_fingerprint(path))


@pytest.mark.parametrize("free_mib", [0.5, 2.0])  # no room for the shard files; room for them, not the data file
def test_a_full_disk_refuses_the_merge_and_keeps_the_previous_index(media: Path, free_mib: float) -> None:
    folder = media / "c"
    make_collection(folder, VECTORS, "ivf", IVF)
    before = _hits(folder)
    filler = media / "filler"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(media).free - int(free_mib * 2**20)))
    with Collection.open(folder) as collection, pytest.raises(StorageError, match="the previous index is kept"):
        collection.reindex("ivf", options=IVF, on_disk=True)
    assert not data_files(folder) and not scratch_files(folder)
    assert _hits(folder) == before
    filler.unlink()
    with Collection.open(folder) as collection:
        collection.reindex("ivf", options=IVF, on_disk=True)
    assert len(data_files(folder)) == 1 and _hits(folder) == before


def test_a_damaged_data_file_is_caught_at_load_and_the_index_rebuilt_on_disk(tmp_path: Path) -> None:
    make_collection(tmp_path / "c", VECTORS, "ivf", IVF)
    with Collection.open(tmp_path / "c") as collection:
        collection.reindex("ivf", options=IVF, on_disk=True)
    before = _hits(tmp_path / "c")
    (data,) = data_files(tmp_path / "c")
    with open(data, "r+b") as handle:  # same size, one byte changed: only the checksum can tell
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0x01]))
    notices: list[str] = []
    with Collection.open(tmp_path / "c", on_notice=notices.append) as collection:
        assert is_on_disk(collection.index())
    assert any("does not match the checksum its name records; rebuilding" in notice for notice in notices), notices
    assert data_files(tmp_path / "c") == [data]  # the same content again, under the same name
    assert _hits(tmp_path / "c") == before
