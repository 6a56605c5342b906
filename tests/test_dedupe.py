"""`lookalike duplicates` end to end: a collection of real photos and copies of them, the command's JSON and
listing, the actions (dry run, move, undo, hard links) with the catalog following them, decisions, the API."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike import Collection
from lookalike.cli import main
from lookalike.demo import sample_photo
from lookalike.signatures import compute_signature


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def make_photos(folder: Path) -> dict[str, Path]:
    """Three photos and one copy of each, a tier apart: a byte copy, a smaller re-encode, an 8% crop."""
    astronaut, chelsea, coffee = (sample_photo(name) for name in ("astronaut", "chelsea", "coffee"))
    (folder / "backup").mkdir(parents=True)
    (folder / "export").mkdir()
    files = {
        "astronaut": folder / "astronaut.jpg",
        "astronaut copy": folder / "backup" / "astronaut.jpg",
        "chelsea": folder / "chelsea.png",
        "chelsea small": folder / "export" / "chelsea-small.jpg",
        "coffee": folder / "coffee.jpg",
        "coffee crop": folder / "export" / "coffee-crop.jpg",
    }
    astronaut.save(files["astronaut"], quality=92)
    shutil.copyfile(files["astronaut"], files["astronaut copy"])
    chelsea.save(files["chelsea"])
    chelsea.resize((chelsea.width * 6 // 10, chelsea.height * 6 // 10), Image.Resampling.LANCZOS).save(
        files["chelsea small"], quality=85
    )
    coffee.save(files["coffee"], quality=92)
    w, h = coffee.size
    coffee.crop((round(w * 0.08), round(h * 0.08), round(w * 0.92), round(h * 0.92))).save(
        files["coffee crop"], quality=90
    )
    return files


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def real_index(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photos indexed with the real model (the tiers are a claim about it); copy it before changing it."""
    folder = tmp_path_factory.mktemp("dupes") / "idx"
    with Collection.create(folder) as collection:
        collection.add_folder(photos["astronaut"].parent)
    return folder


@pytest.fixture
def plumbing(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    """Photos of one's own, indexed with the model-free colour layout: for the actions, which move files."""
    files = make_photos(tmp_path / "photos")
    with Collection.create(tmp_path / "idx", embedder="colour-layout") as collection:
        collection.add_folder(tmp_path / "photos")
    return files, tmp_path / "idx"


def by_members(groups: list[dict]) -> dict[frozenset[str], str]:
    return {frozenset(Path(m["path"]).name for m in group["members"]): group["tier"] for group in groups}


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def catalog_rows(index: Path) -> set[tuple]:
    with Collection.open(index, read_only=True) as collection:
        rows = collection.catalog.connection.execute("SELECT path, size, content_hash FROM images").fetchall()
    return {(bytes(path), size, content_hash) for path, size, content_hash in rows}


# --- finding -----------------------------------------------------------------------------------------------


def test_json_lists_each_tier_labelled_in_the_contract_shape(real_index: Path) -> None:
    result = invoke("duplicates", "--index", str(real_index), "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)
    assert by_members(groups) == {
        frozenset({"astronaut.jpg"}): "identical",  # the byte copy has the same name in another folder
        frozenset({"chelsea.png", "chelsea-small.jpg"}): "same-image",
        frozenset({"coffee.jpg", "coffee-crop.jpg"}): "near",
    }
    for group in groups:
        assert sorted(group) == ["keep", "members", "tier"]
        assert sorted(group["keep"]) == ["id", "path"]
        assert all(sorted(member) == ["id", "path", "similarity"] for member in group["members"])
        assert {"id": group["members"][0]["id"], "path": group["members"][0]["path"]} == group["keep"]
    chelsea = next(g for g in groups if g["tier"] == "same-image")
    assert Path(chelsea["keep"]["path"]).name == "chelsea.png"  # more pixels wins


def test_a_stricter_tier_leaves_the_looser_groups_out(real_index: Path) -> None:
    groups = json.loads(invoke("duplicates", "--index", str(real_index), "--json", "--tier", "identical").output)
    assert [group["tier"] for group in groups] == ["identical"]


def test_listing_ends_with_what_removing_the_copies_would_free(real_index: Path, photos: dict[str, Path]) -> None:
    result = invoke("duplicates", "--index", str(real_index))
    assert result.exit_code == 0
    copies = sum(photos[name].stat().st_size for name in ("astronaut copy", "chelsea small", "coffee crop"))
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("3 groups, 6 files: 3 not kept,")
    assert f"{copies / 1000:.1f} KB to free" in summary


def test_review_page_is_self_contained_with_the_keeper_marked(real_index: Path, tmp_path: Path) -> None:
    page = tmp_path / "review.html"
    assert invoke("duplicates", "--index", str(real_index), "--html", str(page)).exit_code == 0
    text = page.read_text()
    assert text.count("<figure") == 6 and text.count("class='keep'") == 3
    assert text.count("data:image/jpeg;base64,") == 6 and "http" not in text


def test_ingest_stores_a_signature_per_image_and_jpeg_quality(real_index: Path, photos: dict[str, Path]) -> None:
    with Collection.open(real_index, read_only=True) as collection:
        record = collection.catalog.image_by_path(str(photos["coffee"]))
        png = collection.catalog.image_by_path(str(photos["chelsea"]))
        assert record is not None and png is not None
        stored = collection.catalog.signatures([record.id, png.id])
        assert collection.catalog.count_signatures() == collection.catalog.count() == 6
    assert stored[record.id].jpeg_quality == 92 and stored[png.id].jpeg_quality is None
    from lookalike.images import decode_file

    assert stored[record.id].signature == compute_signature(decode_file(str(photos["coffee"]), 224).pixels)


def test_a_copy_indexed_later_reuses_the_stored_signature(plumbing, tmp_path: Path) -> None:
    files, index = plumbing
    later = tmp_path / "photos" / "later" / "coffee.jpg"
    later.parent.mkdir()
    shutil.copyfile(files["coffee"], later)
    with Collection.open(index) as collection:
        report = collection.add_folder(tmp_path / "photos")
        original = collection.catalog.image_by_path(str(files["coffee"]))
        copy = collection.catalog.image_by_path(str(later))
        assert report.reused == 1 and original is not None and copy is not None
        stored = collection.catalog.signatures([original.id, copy.id])
    assert stored[copy.id] == stored[original.id] and stored[copy.id].jpeg_quality == 92


def test_metadata_fields_are_stored_at_ingest_for_the_keeper_rules(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Maker", "Model"
    photo = sample_photo("rocket")
    photo.save(photos / "a-plain.png")
    photo.save(photos / "b-tagged.png", exif=exif)  # the same pixels and a few bytes more
    with Collection.create(tmp_path / "idx", embedder="colour-layout") as collection:
        collection.add_folder(photos)
        [group] = collection.duplicates()
        tagged = collection.catalog.image_by_path(str(photos / "b-tagged.png"))
        assert tagged is not None
        assert collection.catalog.signatures([tagged.id])[tagged.id].metadata_fields == 2
    assert group.tier == "same-image" and group.keep.path == str(photos / "b-tagged.png")
    assert group.facts[tagged.id].metadata_fields == 2  # what `keeper_key` ranks after pixels and bytes


# --- acting ------------------------------------------------------------------------------------------------


def test_a_dry_run_changes_nothing(plumbing, tmp_path: Path) -> None:
    files, index = plumbing
    before, rows = tree(tmp_path / "photos"), catalog_rows(index)
    catalog_bytes = (index / "catalog.sqlite").read_bytes()
    result = invoke("duplicates", "--index", str(index), "--move-to", str(tmp_path / "quarantine"))
    assert result.exit_code == 0
    assert "dry run: 2 files" in result.output and "nothing was done" in result.output
    assert tree(tmp_path / "photos") == before and catalog_rows(index) == rows
    assert (index / "catalog.sqlite").read_bytes() == catalog_bytes
    assert not (tmp_path / "quarantine").exists()


def test_move_then_undo_restores_every_file_and_the_catalog(plumbing, tmp_path: Path) -> None:
    files, index = plumbing
    before, rows = tree(tmp_path / "photos"), catalog_rows(index)
    quarantine = tmp_path / "quarantine"

    moved = invoke("duplicates", "--index", str(index), "--move-to", str(quarantine), "--apply")
    assert moved.exit_code == 0 and "done: 2 files" in moved.output
    assert not files["astronaut copy"].exists() and not files["chelsea small"].exists()
    assert (quarantine / "backup" / "astronaut.jpg").read_bytes() == before["backup/astronaut.jpg"]
    assert (quarantine / "lookalike-undo.json").is_file()
    with Collection.open(index) as collection:
        assert collection.catalog.image_by_path(str(files["chelsea small"])) is None
        hits = collection.search([files["chelsea"]], k=10)[0].hits
        assert str(files["chelsea small"]) not in [hit.path for hit in hits]  # a moved file leaves the results
        assert collection.duplicates() == []

    undone = invoke("duplicates", "--index", str(index), "--undo", str(quarantine), "--apply")
    assert undone.exit_code == 0 and "done: 2 files" in undone.output
    assert tree(tmp_path / "photos") == before  # byte for byte
    assert catalog_rows(index) == rows
    with Collection.open(index) as collection:
        assert collection.catalog.count_signatures() == 6
        assert {g.tier for g in collection.duplicates()} == {"identical", "same-image"}


def test_a_quarantine_folder_inside_the_indexed_folder_is_refused(plumbing, tmp_path: Path) -> None:
    _, index = plumbing
    result = invoke("duplicates", "--index", str(index), "--move-to", str(tmp_path / "photos" / "q"), "--apply")
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "which this collection indexes" in result.output
    assert not (tmp_path / "photos" / "q").exists()


def test_hardlinks_replace_byte_copies_and_the_next_index_sees_nothing_new(plumbing, tmp_path: Path) -> None:
    files, index = plumbing
    before = tree(tmp_path / "photos")
    assert invoke("duplicates", "--index", str(index), "--hardlink", "--apply").exit_code == 0
    assert os.path.samefile(files["astronaut"], files["astronaut copy"])
    assert not os.path.samefile(files["chelsea"], files["chelsea small"])  # only identical files are linked
    assert tree(tmp_path / "photos") == before
    with Collection.open(index) as collection:
        report = collection.add_folder(tmp_path / "photos")
    assert (report.embedded, report.unchanged) == (0, 6)


def test_apply_without_an_action_and_two_actions_are_one_error_line(plumbing, tmp_path: Path) -> None:
    _, index = plumbing
    for args in (["--apply"], ["--hardlink", "--undo", str(tmp_path)]):
        result = invoke("duplicates", "--index", str(index), *args)
        assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1


# --- decisions ---------------------------------------------------------------------------------------------


def test_a_not_duplicates_decision_survives_a_reindex(plumbing, tmp_path: Path) -> None:
    files, index = plumbing
    photos = tmp_path / "photos"
    with Collection.open(index) as collection:
        pair = next(g for g in collection.duplicates() if g.tier == "same-image")
        collection.decide("not-duplicates", [m.id for m in pair.members])
        assert [g.tier for g in collection.duplicates()] == ["identical"]
    # Index the files again from scratch: out of the folder (their rows go), then back (new rows, new ids).
    shutil.move(photos, tmp_path / "away")
    (tmp_path / "photos").mkdir()
    with Collection.open(index) as collection:
        assert collection.add_folder(photos).removed == 6
    shutil.rmtree(photos)
    shutil.move(tmp_path / "away", photos)
    with Collection.open(index) as collection:
        collection.add_folder(photos)
        record = collection.catalog.image_by_path(str(files["chelsea small"]))
        assert record is not None and record.id not in {m.id for m in pair.members}
        assert [g.tier for g in collection.duplicates()] == ["identical"]


def test_a_decision_needs_two_indexed_images(plumbing) -> None:
    from lookalike.errors import InvalidArgumentError, NotIndexedError

    _, index = plumbing
    with Collection.open(index) as collection:
        with pytest.raises(InvalidArgumentError, match="at least two"):
            collection.decide("keep-all", [1])
        with pytest.raises(NotIndexedError):
            collection.decide("keep-all", [1, 999])
        with pytest.raises(InvalidArgumentError, match="unknown decision"):
            collection.decide("delete", [1, 2])


def test_grouping_works_on_a_collection_indexed_before_signatures(plumbing) -> None:
    _, index = plumbing
    with Collection.open(index) as collection:
        with collection.catalog.transaction():
            collection.catalog.connection.execute("DELETE FROM signatures")
        assert {g.tier for g in collection.duplicates()} == {"identical", "same-image"}


# --- the API -----------------------------------------------------------------------------------------------


def test_the_api_pages_the_groups_of_the_command_and_stores_confirmed_decisions(
    real_index: Path, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi", reason="the server needs the [server] extra")
    from fastapi.testclient import TestClient

    from lookalike.server import create_app

    index = tmp_path / "idx"
    shutil.copytree(real_index, index)
    expected = json.loads(invoke("duplicates", "--index", str(index), "--json").output)
    with TestClient(create_app(index), base_url="http://localhost") as client:
        answer = client.get("/api/duplicates").json()
        assert answer == {"total": 3, "groups": expected}
        assert client.get("/api/duplicates?offset=1&limit=1").json()["groups"] == expected[1:2]
        assert client.get("/api/duplicates?tier=identical").json()["total"] == 1
        near = next(g for g in expected if g["tier"] == "near")
        ids = [m["id"] for m in near["members"]]
        refused = client.post("/api/duplicates/decisions", json={"kind": "not-duplicates", "ids": ids})
        assert refused.status_code == 422 and "confirm" in refused.json()["error"]
        stored = client.post("/api/duplicates/decisions", json={"kind": "not-duplicates", "ids": ids, "confirm": True})
        assert stored.status_code == 200
        assert client.get("/api/duplicates").json()["groups"] == [g for g in expected if g is not near]
