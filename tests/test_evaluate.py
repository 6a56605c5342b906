"""`lookalike eval`: edited copies of the collection's own images, searched and counted, the user's files untouched.

The collection is `built_index` over the sample originals, embedded with the real model.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lookalike import Collection
from lookalike.cli import main
from lookalike.edited_copies import write_copies
from lookalike.errors import InvalidArgumentError, NotFoundError
from lookalike.evaluate import evaluate

FAMILIES = "crop,flip,caption"  # three mild families keep the run short


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["eval", *args], catch_exceptions=False)


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `folder`: size, modification time and content hash."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns, _sha(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's temporary folder, for this test: a folder of its own, to see what is left in it."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_eval_json_recall_matches_an_independent_count(
    built_index: Path, originals: Path, scratch: Path, tmp_path: Path
) -> None:
    photos_before, collection_before = snapshot(originals), snapshot(built_index)

    result = invoke("--index", str(built_index), "--sample", "4", "--families", FAMILIES, "--seed", "3", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "accurate" and report["images"] == 4 and report["copies"] == 12
    # The temporary folder is gone, and nothing of the user's was written or changed.
    assert list(scratch.iterdir()) == []
    assert snapshot(originals) == photos_before and snapshot(built_index) == collection_before

    # The same copies, made again and searched here, one by one; ranks counted from the hits.
    ids = sorted({query["original_id"] for query in report["queries"]})
    ranks: dict[tuple[str, int], int | None] = {}
    with Collection.open(built_index, read_only=True) as collection:
        copies, skipped = write_copies(collection, ids, FAMILIES.split(","), 3, tmp_path / "mine")
        assert skipped == [] and [c.seed for c in copies] == [q["seed"] for q in report["queries"]]
        for copy in copies:
            assert copy.others == ()  # mild edits paste nothing in
            hits = [hit.id for hit in collection.search([copy.path], k=10)[0].hits]
            rank = hits.index(copy.original_id) + 1 if copy.original_id in hits else None
            ranks[(copy.family, copy.original_id)] = rank

    assert {(q["family"], q["original_id"]): q["rank"] for q in report["queries"]} == ranks
    for family in FAMILIES.split(","):
        found = [rank for (name, _), rank in ranks.items() if name == family]
        row = report["recall"][family]
        assert row["copies"] == len(found) == 4
        assert row["recall_at_1"] == pytest.approx(sum(r == 1 for r in found) / 4)
        assert row["recall_at_k"] == pytest.approx(sum(r is not None for r in found) / 4)
    # Mild edits of real photos: every original is found, and flagged as the copy's original.
    assert report["recall"]["all"]["recall_at_k"] == 1.0
    flag = report["copy_flag"]
    assert flag["threshold"] == 0.5 and flag["originals_flagged"] == 12 and flag["precision"] == 1.0


def test_fast_mode_is_reported_and_has_no_copy_flag(built_index: Path, scratch: Path) -> None:
    result = invoke("--index", str(built_index), "--sample", "2", "--families", "flip", "--fast")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "fast search" in lines[0] and "2 edited copies" in lines[0]
    assert [line.split()[0] for line in lines[2:4]] == ["flip", "all"]
    assert "copy flag: none in the fast search" in result.stdout and "latency per query: p50" in result.stdout
    assert list(scratch.iterdir()) == []


def test_a_sample_larger_than_the_collection_uses_every_image(built_index: Path, scratch: Path) -> None:
    result = invoke("--index", str(built_index), "--sample", "1000", "--families", "flip", "--fast", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    with Collection.open(built_index, read_only=True) as collection:
        every_id = sorted(int(i) for i in collection.catalog.embedding_ids())
    assert report["images"] == len(every_id) == 14
    assert sorted(q["original_id"] for q in report["queries"]) == every_id
    assert report["mode"] == "fast" and report["copy_flag"] is None


def test_the_copies_exist_during_the_run_and_are_gone_after(built_index: Path, tmp_path: Path) -> None:
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(sum(1 for _ in tmp_path.rglob("*.png")))

    with Collection.open(built_index, read_only=True) as collection:
        report = evaluate(collection, 2, "mild", ["flip"], mode="fast", scratch=tmp_path, on_progress=progress)

    assert seen == [2, 2] and report.images == 2
    assert list(tmp_path.iterdir()) == []


def test_an_empty_collection_is_one_error_line(tmp_path: Path) -> None:
    Collection.create(tmp_path / "empty", embedder="colour-layout").close()

    result = invoke("--index", str(tmp_path / "empty"))

    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'} holds no indexed image to make copies of"
    ]


def test_an_unknown_family_names_the_known_ones_and_the_flag(built_index: Path) -> None:
    result = invoke("--index", str(built_index), "--edits", "hard", "--families", "crop")

    assert result.exit_code == 1
    assert "no hard edit family is called crop" in result.stderr and "mosaic3" in result.stderr
    assert result.stderr.rstrip().endswith("(--families)")


def test_copies_are_never_written_inside_the_photos_folder(built_index: Path, originals: Path) -> None:
    before = snapshot(originals)
    with Collection.open(built_index, read_only=True) as collection, pytest.raises(InvalidArgumentError) as error:
        evaluate(collection, 1, scratch=originals / "originals" / "png")
    assert "lies inside" in str(error.value)
    assert snapshot(originals) == before


def test_pasted_images_are_other_images_of_the_collection_or_generated(
    tmp_path: Path, originals: Path, built_index: Path
) -> None:
    with Collection.open(built_index, read_only=True) as collection:
        copies, _ = write_copies(collection, [1, 2], ["paste", "mosaic3"], 0, tmp_path)
        every_id = {int(i) for i in collection.catalog.embedding_ids()}
    for copy in copies:
        assert copy.others and copy.original_id not in copy.others and set(copy.others) <= every_id

    photos = tmp_path / "one-photo"
    photos.mkdir()
    (photos / "coffee.webp").write_bytes((originals / "originals" / "webp" / "coffee.webp").read_bytes())
    with Collection.create(tmp_path / "single", embedder="colour-layout") as collection:
        collection.add_folder(photos)
        (only,) = (int(i) for i in collection.catalog.embedding_ids())
        copies, _ = write_copies(collection, [only], ["mosaic2"], 0, tmp_path)
    assert copies[0].others == ()  # nothing else in the collection: the tiles are generated


def test_originals_gone_since_indexing_are_skipped_and_reported(tmp_path: Path, originals: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.jpg", "coins.jpg", "rocket.jpg"):
        (photos / name).write_bytes((originals / "originals" / name).read_bytes())
    with Collection.create(tmp_path / "idx", embedder="colour-layout") as collection:
        collection.add_folder(photos)
    (photos / "coins.jpg").unlink()

    with Collection.open(tmp_path / "idx", read_only=True) as collection:
        report = evaluate(collection, 3, families=["flip"], mode="fast", scratch=tmp_path)
        assert report.images == 2 and len(report.outcomes) == 2
        assert [path for path, _ in report.skipped] == [str(photos / "coins.jpg")]
        for name in ("astronaut.jpg", "rocket.jpg"):
            (photos / name).unlink()
        with pytest.raises(NotFoundError, match="none of the 3 sampled images could be read"):
            evaluate(collection, 3, families=["flip"], mode="fast", scratch=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "photos"]  # no temporary folder left
