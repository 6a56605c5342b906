"""The accurate search with the real model: heavy edits of real photos find their original first, as copies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from lookalike import Collection
from lookalike.cli import main
from lookalike.demo import sample_photo
from lookalike.errors import InvalidArgumentError
from lookalike.images import decode_file
from lookalike.search import Query

COLLECTION = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")
FILLERS = ("moon", "brick", "grass", "gravel", "cell", "hubble_deep_field", "retina", "immunohistochemistry")


@pytest.fixture(scope="module")
def copies_index(tmp_path_factory: pytest.TempPathFactory, originals: Path) -> Path:
    """A collection of six of the sample photos; the other eight are never in it (fillers, backgrounds)."""
    photos = tmp_path_factory.mktemp("copy-photos")
    for name in COLLECTION:
        source = next(originals.rglob(f"{name}.*"))
        shutil.copy(source, photos / source.name)
    folder = tmp_path_factory.mktemp("copy-index") / "idx"
    with Collection.create(folder) as collection:
        collection.add_folder(photos)
    return folder


@pytest.fixture(scope="module")
def collection(copies_index: Path) -> Iterator[Collection]:
    with Collection.open(copies_index) as opened:
        yield opened


def pasted(photo: str, background: str) -> Image.Image:
    canvas = sample_photo(background).resize((900, 700))
    canvas.paste(sample_photo(photo).resize((420, 320)), (300, 150))
    return canvas


def screenshot(photo: str) -> Image.Image:
    """A flat page with a header, lines of text and the photo at about 20% of the screen."""
    screen = Image.new("RGB", (1280, 720), (250, 250, 250))
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, 1280, 70), fill=(210, 215, 225))
    for y in range(90, 700, 24):
        draw.rectangle((60, y, 1200 if y % 48 else 640, y + 7), fill=(60, 60, 60))
    screen.paste(sample_photo(photo).resize((480, 360)), (720, 200))
    return screen


def mosaic(photo: str, slot: int, tile: int = 200) -> Image.Image:
    canvas = Image.new("RGB", (3 * tile, 3 * tile))
    fillers = iter(FILLERS)
    for i in range(9):
        canvas.paste(
            sample_photo(photo if i == slot else next(fillers)).resize((tile, tile)), ((i % 3) * tile, (i // 3) * tile)
        )
    return canvas


def small_crop(photo: str) -> Image.Image:
    """A fifth of the photo's area."""
    picture = sample_photo(photo)
    w, h = picture.size
    return picture.crop((w // 5, h // 4, w // 5 + int(w * 0.45), h // 4 + int(h * 0.45)))


EDITS = {
    "pasted": ("chelsea", lambda: pasted("chelsea", "brick")),
    "screenshot": ("astronaut", lambda: screenshot("astronaut")),
    "mosaic": ("coffee", lambda: mosaic("coffee", slot=5)),
    "turn": ("rocket", lambda: sample_photo("rocket").transpose(Image.Transpose.ROTATE_90)),
    "small_crop": ("astronaut", lambda: small_crop("astronaut")),
}


def save(picture: Image.Image, folder: Path, name: str) -> Path:
    path = folder / f"{name}.jpg"
    picture.save(path, quality=88)
    return path


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("edited")
    return {edit: save(make(), folder, edit) for edit, (_, make) in EDITS.items()}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_heavily_edited_copy_finds_its_original_first_as_a_copy(
    collection: Collection, edited: dict[str, Path], edit: str
) -> None:
    [result] = collection.search([edited[edit]], k=3)
    first = result.hits[0]
    assert Path(first.path).stem == EDITS[edit][0], [(Path(h.path).stem, h.score, h.copy_score) for h in result.hits]
    assert first.copy is True and first.copy_score is not None and first.copy_score >= 0.5
    assert first.evidence is not None


def test_the_evidence_says_which_view_found_the_hit_and_what_verified_it(
    collection: Collection, edited: dict[str, Path]
) -> None:
    [turned] = collection.search([edited["turn"]], k=1)
    [tile] = collection.search([edited["mosaic"]], k=1)
    [paste] = collection.search([edited["pasted"]], k=1)
    assert turned.hits[0].evidence is not None and turned.hits[0].evidence.view == "turn270"
    assert tile.hits[0].evidence is not None and tile.hits[0].evidence.view == "grid3"
    assert tile.hits[0].evidence.box == pytest.approx((2 / 3, 1 / 3, 1.0, 2 / 3), abs=1e-3)  # the tile of slot 5
    evidence = paste.hits[0].evidence
    assert evidence is not None and evidence.verified and evidence.inliers >= 30 and not evidence.mirrored
    assert evidence.region is not None  # inside the pasted photo: x 300..720 of 900, y 150..470 of 700
    left, top, right, bottom = evidence.region
    assert left >= 0.32 and top >= 0.2 and right <= 0.81 and bottom <= 0.68 and right - left > 0.2


def test_a_query_with_no_original_gets_no_copy(collection: Collection, tmp_path: Path) -> None:
    [result] = collection.search([save(mosaic("moon", slot=0), tmp_path, "fillers")], k=6)
    assert result.hits and not any(hit.copy for hit in result.hits)
    assert all(hit.copy is False and hit.copy_score is not None and hit.copy_score < 0.5 for hit in result.hits)


def test_an_upload_is_searched_the_same_way(collection: Collection, edited: dict[str, Path]) -> None:
    by_file = collection.search([edited["pasted"]], k=3)[0]
    by_bytes = collection.search_image_bytes(edited["pasted"].read_bytes(), "pasted.jpg", k=3)
    assert [(h.id, h.copy) for h in by_bytes.hits] == [(h.id, h.copy) for h in by_file.hits]


def test_the_fast_mode_is_the_single_vector_search(collection: Collection, edited: dict[str, Path]) -> None:
    path = edited["screenshot"]
    [fast] = collection.search([path], k=4, mode="fast")
    pixels = decode_file(str(path), collection.embedder().input_size).pixels
    [single] = collection.search_queries([Query(str(path), collection.embedder().embed(pixels[None]), str(path))], k=4)
    assert fast == single
    assert all(hit.copy is None and hit.copy_score is None for hit in fast.hits)
    assert [sorted(hit.to_dict()) for hit in fast.hits] == [["id", "path", "score"]] * 4
    uploaded = collection.search_image_bytes(path.read_bytes(), str(path), k=4, mode="fast")
    assert [(h.id, h.score) for h in uploaded.hits] == [(h.id, h.score) for h in fast.hits]


def test_an_unknown_mode_is_refused(collection: Collection, edited: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgumentError, match="search mode"):
        collection.search([edited["turn"]], mode="exact")


def test_the_cli_json_carries_copy_flags_and_fast_does_not(copies_index: Path, edited: dict[str, Path]) -> None:
    runner = CliRunner()
    query = str(edited["pasted"])
    accurate = runner.invoke(main, ["search", query, "--index", str(copies_index), "-k", "2", "--json"])
    fast = runner.invoke(main, ["search", query, "--index", str(copies_index), "-k", "2", "--json", "--fast"])
    assert accurate.exit_code == 0 and fast.exit_code == 0, accurate.output + fast.output
    hits = json.loads(accurate.output)[0]["results"]
    assert [sorted(hit) for hit in hits] == [["copy", "copy_score", "evidence", "id", "path", "score"]] * 2
    assert hits[0]["copy"] is True and Path(hits[0]["path"]).stem == "chelsea"
    # The pasted photo is verified: the matched region lies inside the query, and its matches inside both pictures.
    evidence = hits[0]["evidence"]
    assert evidence["verified"] and evidence["inliers"] >= 4 and 4 <= len(evidence["matches"]) <= 40
    left, top, right, bottom = evidence["region"]
    assert 0 <= left < right <= 1 and 0 <= top < bottom <= 1
    for qx, qy, hx, hy in evidence["matches"]:
        assert left <= qx <= right and top <= qy <= bottom and 0 <= hx <= 1 and 0 <= hy <= 1
    assert [sorted(hit) for hit in json.loads(fast.output)[0]["results"]] == [["id", "path", "score"]] * 2


def test_the_cli_explains_and_marks_copies(copies_index: Path, edited: dict[str, Path], tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    args = [
        "search",
        str(edited["mosaic"]),
        "--index",
        str(copies_index),
        "-k",
        "2",
        "--explain",
        "--sheet",
        str(sheet),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rank, score, mark, copy_score, _, path = lines[1].split()
    assert (rank, mark, Path(path).stem) == ("1", "copy", "coffee") and float(copy_score) >= 0.5
    assert lines[2].strip().startswith("view grid3 (x 0.67-1.00, y 0.33-0.67 of the query); ")
    second = lines[3].split()
    assert second[2] == "-" and float(second[3]) < 0.5
    with Image.open(sheet) as drawn:
        # The query's thumbnail fills its 176 px cell from (8, 8); the tile's left side runs at x = 8 + 2/3 of 175.
        outline = drawn.convert("RGB").getpixel((8 + round(175 * 2 / 3), 8 + 88))
    assert outline == (230, 60, 40)


def test_explain_with_fast_is_refused(copies_index: Path, edited: dict[str, Path]) -> None:
    args = ["search", str(edited["turn"]), "--index", str(copies_index), "--fast", "--explain"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "leave out --fast" in result.output


def test_the_explanation_of_a_verified_hit_gives_its_inliers(collection: Collection, edited: dict[str, Path]) -> None:
    from lookalike.render import render_table

    [result] = collection.search([edited["pasted"]], k=1)
    evidence = result.hits[0].evidence
    assert evidence is not None
    line = render_table([result], explain=True).splitlines()[2].strip()
    assert line.startswith(f"view {evidence.view} (") and line.endswith(f"; verified: {evidence.inliers} inliers")
