"""Indexing on a Ray cluster gives the collection a local run gives.

A real two-node cluster (a head and a second node, one CPU each) runs with the driver inside new network and
PID namespaces: the only network there is loopback, so no traffic can leave the machine, and every process the
cluster started ends with the namespace. Skipped unless ray is installed and namespaces can be made (root).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from lookalike import Collection
from lookalike.catalog import Catalog
from lookalike.check import check_collection
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.embedding_shards import SHARD_FOLDER
from lookalike.ray_ingest import RUN_MARK_PREFIX


def _can_make_namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not _can_make_namespaces(), reason="needs root and unshare for a loopback-only network")

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6379  # the cluster's own network namespace: no other process can hold it


def _variant(image: Image.Image, rng: random.Random) -> Image.Image:
    """A seeded user's copy of a photo: cropped, resized, turned, mirrored or retoned."""
    w, h = image.size
    left, top = rng.randint(0, w // 8), rng.randint(0, h // 8)
    image = image.crop((left, top, w - rng.randint(0, w // 8), h - rng.randint(0, h // 8)))
    scale = rng.uniform(0.4, 1.0)
    image = image.resize((max(64, int(image.width * scale)), max(64, int(image.height * scale))))
    if rng.random() < 0.3:
        image = ImageOps.mirror(image)
    if rng.random() < 0.3:
        image = image.rotate(rng.choice([90, 270]), expand=True)
    return ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))


def _photo_folder(folder: Path) -> Path:
    """About 40 real photos (three seeded copies of each sample) and one file that is not an image."""
    rng = random.Random(1338)
    folder.mkdir(parents=True)
    for name in SAMPLE_PHOTOS:
        photo = sample_photo(name)
        photo.save(folder / f"{name}.jpg", quality=90)
        for number in range(2):
            _variant(photo, rng).save(folder / f"{name}-{number}.jpg", quality=rng.randint(60, 95))
    (folder / "sub").mkdir()
    shutil.copy(folder / "coffee.jpg", folder / "sub" / "coffee-copy.jpg")  # a byte copy: one embedding, two rows
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def _on_cluster(commands: list[list[str]], log: Path) -> str:
    """Start a two-node cluster in new loopback-only namespaces, run `commands` as its drivers, stop it."""
    temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit in 107 bytes
    start = [RAY, "start", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    lines = [
        "set -eu",
        "ip link set lo up",
        "export RAY_USAGE_STATS_ENABLED=0",
        f"trap '{RAY} stop --force >/dev/null 2>&1' EXIT",
        " ".join([*start, "--head", f"--port={PORT}", "--include-dashboard=false", f"--temp-dir={temp_dir}"])
        + " >/dev/null",
        " ".join([*start, f"--address=127.0.0.1:{PORT}"]) + " >/dev/null",
        *(" ".join(f"'{part}'" for part in command) for command in commands),
    ]
    script = log.with_suffix(".sh")
    script.write_text("\n".join(lines) + "\n")
    try:
        done = subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", str(script)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


# Runs a driver, and kills it with SIGKILL once the catalog holds some committed shards; prints how many rows.
KILLER = """
import sqlite3, subprocess, sys, time

catalog, wanted, *command = sys.argv[1:]
driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
committed, deadline = 0, time.monotonic() + 300
while committed < int(wanted) and driver.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)
    try:
        with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=0.1) as db:
            committed = db.execute("SELECT COUNT(*) FROM images WHERE status = 'indexed'").fetchone()[0]
    except sqlite3.Error:
        pass
driver.kill()
print(f"killed={driver.wait()} committed={committed}")
"""


# Runs a driver and kills one of the cluster's workers with SIGKILL while it maps a shard; prints what happened.
WORKER_KILLER = """
import os, signal, subprocess, sys, time

driver = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
victim, deadline = None, time.monotonic() + 300
while victim is None and driver.poll() is None and time.monotonic() < deadline:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if cmdline.read().startswith(b"ray::map_shard"):
                    victim = int(pid)
                    break
        except OSError:
            pass
    time.sleep(0.01)
if victim is not None:
    os.kill(victim, signal.SIGKILL)
print(f"worker_killed={victim is not None} driver={driver.wait()}")
"""


def _rows(folder: Path) -> dict[str, tuple[str | None, np.ndarray | None]]:
    with Collection.open(folder, read_only=True) as collection:
        catalog = collection.catalog
        rows = {}
        for image_id in catalog.embedding_ids().tolist():
            record = catalog.images_by_id([image_id])[image_id]
            rows[record.path] = (record.content_hash, catalog.embedding(image_id))
        return rows


def _ranking(hits: list) -> list[tuple[float, str]]:
    """Hits best first; tied scores (a byte copy and its original) in path order, since ids break Faiss's ties."""
    return sorted((-round(hit.score, 3), hit.path) for hit in hits)


def test_a_folder_indexed_on_a_two_node_cluster_matches_a_local_run(tmp_path: Path) -> None:
    photos = _photo_folder(tmp_path / "photos")
    local, clustered = tmp_path / "local.idx", tmp_path / "ray.idx"
    with Collection.create(local) as collection:
        local_report = collection.add_folder(photos)
    # Shards of 4 files: several per node. A first driver is killed with SIGKILL after two shards are committed;
    # the second resumes; the third finds the cluster through RAY_ADDRESS and nothing left to do.
    index = [sys.executable, "-m", "lookalike", "index", str(photos), "--index", str(clustered), "--shard-size", "4"]
    killer, worker_killer = tmp_path / "killer.py", tmp_path / "worker_killer.py"
    killer.write_text(KILLER)
    worker_killer.write_text(WORKER_KILLER)
    survived = tmp_path / "survived.idx"
    rebuilt, rebuilt_here = tmp_path / "rebuilt.idx", tmp_path / "rebuilt-here.idx"
    rebuilt_on_disk = tmp_path / "rebuilt-on-disk.idx"
    on_gpus = [*index[:5], "--index", f"{clustered}-gpu", "--device", "cuda", "--ray", f"127.0.0.1:{PORT}"]
    reindex = [sys.executable, "-m", "lookalike", "reindex", "--kind", "IVF4,Flat"]  # 4 lists: the nprobe 1 matters
    output = _on_cluster(
        [
            [sys.executable, str(killer), str(clustered / "catalog.sqlite"), "8", *index, "--ray", f"127.0.0.1:{PORT}"],
            [*index, "--ray", f"127.0.0.1:{PORT}"],
            ["env", f"RAY_ADDRESS=127.0.0.1:{PORT}", *index, "--ray", "auto"],
            # A worker killed mid-shard: Ray runs its shard again elsewhere, and the run completes.
            [
                sys.executable,
                str(worker_killer),
                *index[:4],
                str(photos),
                "--index",
                str(survived),
                "--shard-size",
                "4",
                "--ray",
                f"127.0.0.1:{PORT}",
            ],
            # The index built in shards on the cluster, and the same collection rebuilt here.
            ["cp", "-r", str(clustered), str(rebuilt)],
            ["cp", "-r", str(clustered), str(rebuilt_here)],
            ["cp", "-r", str(clustered), str(rebuilt_on_disk)],
            [*reindex, "--index", str(rebuilt), "--ray", f"127.0.0.1:{PORT}", "--shard-size", "8"],
            [*reindex, "--index", str(rebuilt_here)],
            # The driver writes each returned shard to a file and merges the files into a data file on disk.
            [*reindex, "--index", str(rebuilt_on_disk), "--ray", f"127.0.0.1:{PORT}", "--shard-size", "8", "--on-disk"],
            # The cluster has no GPU: --device cuda is refused at once instead of waiting forever for one.
            ["sh", "-c", f"{' '.join(on_gpus)} || echo refused=$?"],
        ],
        tmp_path / "cluster.log",
    )

    files = len(list(photos.rglob("*.jpg")))
    assert local_report.scanned == files and local_report.added == files - 1
    killed = re.search(r"killed=(-?\d+) committed=(\d+)", output)
    assert killed and int(killed.group(1)) == -9, output
    kept = int(killed.group(2))
    assert 8 <= kept < files - 1, output  # killed mid-run, with whole shards committed

    # The run after the kill embeds only what was not committed; the last one finds nothing to do.
    runs = [line for line in output.splitlines() if line.startswith(f"{files} files scanned")]
    assert len(runs) == 2, output
    counts = {
        what: int(re.search(rf"(\d+) {what}", runs[0]).group(1)) for what in ("embedded", "copies reused", "unchanged")
    }
    # Every file is accounted for once; the bad one is "unchanged" too when its shard was committed before the kill.
    assert counts["unchanged"] >= kept and sum(counts.values()) in (files - 1, files), runs[0]
    assert counts["embedded"] + counts["copies reused"] <= files - 1 - kept, runs[0]
    assert f"0 embedded, 0 copies reused, 0 moved, {files} unchanged, 0 removed, 1 skipped" in runs[1]

    # The bad file is skipped with the reason a local run gives.
    (local_path, local_reason) = local_report.skipped[0]
    assert f"skipped {local_path}: {local_reason}" in output

    # The same files, the same content, embeddings within cosine 0.999.
    local_rows, ray_rows = _rows(local), _rows(clustered)
    assert sorted(ray_rows) == sorted(local_rows) and len(ray_rows) == files - 1
    for path, (content_hash, vector) in local_rows.items():
        ray_hash, ray_vector = ray_rows[path]
        assert ray_hash == content_hash
        assert vector is not None and ray_vector is not None
        assert float(np.dot(vector, ray_vector)) >= 0.999, path

    # The same search results, by path, for every photo as a query.
    queries = [str(photos / f"{name}.jpg") for name in SAMPLE_PHOTOS]
    with Collection.open(local) as one, Collection.open(clustered) as other:
        for mine, theirs in zip(one.search(queries, k=5, mode="fast"), other.search(queries, k=5, mode="fast")):
            assert _ranking(mine.hits) == _ranking(theirs.hits)
        assert [r.path for r in other.catalog.skipped_images()] == [str(photos / "broken.jpg")]

    # The workers, which share the collection's folder here, wrote the shard files themselves, signatures and all;
    # the driver's mark for the run is gone, and so is every file of the killed driver's uncommitted shards.
    assert not list((clustered / SHARD_FOLDER).glob(f"{RUN_MARK_PREFIX}*"))
    with closing(Catalog.open(clustered)) as catalog:
        assert len(catalog.signatures(catalog.embedding_ids().tolist())) == files - 1
        assert catalog.connection.execute("SELECT count(*) FROM signatures").fetchone()[0] <= 1  # the byte copy
    assert check_collection(clustered).healthy

    # The worker killed mid-shard cost nothing: every file is in the catalog, embedded once.
    assert "worker_killed=True driver=0" in output, output
    assert sorted(_rows(survived)) == sorted(local_rows)

    assert "the Ray cluster at 127.0.0.1:6379 has no GPU" in output and "refused=1" in output, output
    assert not (tmp_path / "ray.idx-gpu" / "index.faiss").exists()

    # Built in shards on the cluster or in one process here: the same IVF index, the same hits at nprobe 1.
    assert output.count("rebuilt: IVF4,Flat (factory") == 3, output
    assert f"{files - 1} vectors added in 6 shards on the Ray cluster at 127.0.0.1:{PORT}, merged here" in output
    assert f"{files - 1} vectors added in 6 shards on the Ray cluster at 127.0.0.1:{PORT}, merged on disk" in output
    for built in (rebuilt, rebuilt_on_disk):
        with Collection.open(built) as sharded, Collection.open(rebuilt_here) as single:
            assert sharded.index().count == single.index().count == files - 1
            for mine, theirs in zip(
                # Every hit of the probed list (k = all): a cut at k=5 may fall between two tied byte copies.
                sharded.search(queries, k=files, mode="fast", nprobe=1),
                single.search(queries, k=files, mode="fast", nprobe=1),
            ):
                assert _ranking(mine.hits) == _ranking(theirs.hits)
    assert len(list(rebuilt_on_disk.glob("index.*.ivfdata"))) == 1


def test_an_address_where_no_cluster_answers_is_refused_and_nothing_is_committed(tmp_path: Path) -> None:
    from lookalike.errors import InvalidArgumentError

    photos = tmp_path / "photos"
    photos.mkdir()
    sample_photo("coffee").save(photos / "coffee.jpg")
    with Collection.create(tmp_path / "idx") as collection:
        with pytest.raises(InvalidArgumentError, match="no Ray cluster answers at 127.0.0.1:9") as caught:
            collection.add_folder(photos, ray_address="127.0.0.1:9")  # discard port: nothing listens on loopback
        assert caught.value.argument == "ray_address" and collection.catalog.count() == 0


def test_tasks_on_gpus_take_larger_shards_so_one_driver_keeps_up() -> None:
    from lookalike.ray_ingest import GPU_SHARD_SIZE, SHARD_SIZE, RayMapper

    def shard_size(**options: object) -> int:
        return RayMapper("auto", "efficientnet-lite0", "efficientnet-lite0@x", 224, **options).shard_size  # type: ignore[arg-type]

    assert shard_size(device="cuda") == GPU_SHARD_SIZE > shard_size(device="cpu") == shard_size() == SHARD_SIZE
    assert shard_size(device="cuda", shard_size=64) == 64


def test_tasks_on_gpus_hold_their_share_of_the_cpus_of_the_gpu_nodes_to_decode_with() -> None:
    from lookalike.ray_ingest import TASKS_PER_GPU, cpus_per_gpu_task

    def node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
        return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}

    # A 16-core node with one GPU runs TASKS_PER_GPU tasks on it, each decoding with its share of the cores.
    assert cpus_per_gpu_task([node(16, 1)]) == 16 // TASKS_PER_GPU == 4
    # The task must fit on every GPU node (the one with the fewest CPUs per GPU); CPU-only and dead nodes
    # don't count, and a task always holds at least one CPU.
    assert cpus_per_gpu_task([node(64), node(16, 1), node(32, 4), node(8, 1, alive=False)]) == 2
    assert cpus_per_gpu_task([node(2, 1)]) == 1
    assert cpus_per_gpu_task([node(4)]) == 1
