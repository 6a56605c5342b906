"""Duplicate groups on real photos (scikit-image's) and copies of them made here, embedded by the real model."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from lookalike.demo import sample_photo
from lookalike.duplicates import Decisions, DuplicatesError, ImageFacts, find_duplicates, thresholds_for
from lookalike.errors import LookalikeError
from lookalike.images import decode_file
from lookalike.signatures import compute_signature, estimate_jpeg_quality, signature_distance
from test_small_files import star_polygon, toned, turned

MODEL = "efficientnet-lite0"


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def crop(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    return image.crop((round(w * fraction), round(h * fraction), round(w * (1 - fraction)), round(h * (1 - fraction))))


def chain_step(image: Image.Image, step: int) -> Image.Image:
    """Each step cuts 6% more from the left and top and is 6% brighter than the one before."""
    w, h = image.size
    cut = image.crop((round(w * 0.06 * step), round(h * 0.06 * step), w, h))
    return ImageEnhance.Brightness(cut).enhance(1 + 0.06 * step)


def facts_and_vectors(paths: list[Path], embedder) -> tuple[list[ImageFacts], np.ndarray]:
    """What ingest would store for these files: a row, an embedding and a signature each."""
    decoded = [decode_file(str(path), 224) for path in paths]
    facts = [
        ImageFacts(
            id=number + 1,
            path=str(path),
            size=path.stat().st_size,
            content_hash=image.content_hash,
            width=image.width,
            height=image.height,
            mtime_ns=path.stat().st_mtime_ns,
            signature=compute_signature(image.pixels),
            jpeg_quality=estimate_jpeg_quality(path.read_bytes()),
        )
        for number, (path, image) in enumerate(zip(paths, decoded))
    ]
    return facts, embedder.embed(np.stack([image.pixels for image in decoded]))


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four photos, each copied one way, and a chain of ever more edited rockets."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut, chelsea, coffee, rocket = (sample_photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket"))
    files = {
        "astronaut": save(astronaut, folder / "astronaut.jpg", quality=92),
        "chelsea": save(chelsea, folder / "chelsea.png"),
        "coffee": save(coffee, folder / "coffee.jpg", quality=92),
        "rocket": save(rocket, folder / "rocket.jpg", quality=92),
    }
    files["astronaut copy"] = folder / "backup" / "astronaut.jpg"
    files["astronaut copy"].parent.mkdir()
    files["astronaut copy"].write_bytes(files["astronaut"].read_bytes())
    small = chelsea.resize((chelsea.width * 6 // 10, chelsea.height * 6 // 10), Image.Resampling.LANCZOS)
    files["chelsea resized"] = save(small, folder / "export" / "chelsea-small.jpg", quality=85)
    files["coffee cropped"] = save(crop(coffee, 0.08), folder / "edits" / "coffee-crop.jpg", quality=90)
    for step in range(1, 8):
        files[f"rocket step {step}"] = save(chain_step(rocket, step), folder / "chain" / f"rocket-{step}.jpg")
    return files


@pytest.fixture(scope="module")
def stored(photo_folder: dict[str, Path], embedder) -> tuple[list[ImageFacts], np.ndarray, dict[str, int]]:
    names = list(photo_folder)
    facts, vectors = facts_and_vectors([photo_folder[n] for n in names], embedder)
    return facts, vectors, {name: item.id for name, item in zip(names, facts)}


def groups_by_ids(groups) -> dict[frozenset[int], str]:
    return {frozenset(m.id for m in group.members): group.tier for group in groups}


def test_each_tier_is_found_and_labelled(stored) -> None:
    facts, vectors, ids = stored
    found = groups_by_ids(find_duplicates(facts, vectors, MODEL))

    assert found[frozenset({ids["astronaut"], ids["astronaut copy"]})] == "identical"
    assert found[frozenset({ids["chelsea"], ids["chelsea resized"]})] == "same-image"
    assert found[frozenset({ids["coffee"], ids["coffee cropped"]})] == "near"


def test_stricter_tiers_only_when_asked(stored) -> None:
    facts, vectors, ids = stored
    tiers = {group.tier for group in find_duplicates(facts, vectors, MODEL, tier="same-image")}
    assert tiers == {"identical", "same-image"}
    only_bytes = find_duplicates(facts, vectors, MODEL, tier="identical")
    assert groups_by_ids(only_bytes) == {frozenset({ids["astronaut"], ids["astronaut copy"]}): "identical"}


def test_a_chain_of_edits_does_not_collapse_into_one_group(stored) -> None:
    facts, vectors, ids = stored
    chain = [ids["rocket"]] + [ids[f"rocket step {step}"] for step in range(1, 8)]
    groups = find_duplicates(facts, vectors, MODEL)
    for group in groups:
        members = {m.id for m in group.members}
        assert not {chain[0], chain[-1]} <= members, "the first and last edits ended in one group"
    # Every link of the chain is a near duplicate of the one before, so components would join them all.
    components = find_duplicates(facts, vectors, MODEL, linkage="components")
    assert any({chain[0], chain[-1]} <= {m.id for m in g.members} for g in components)


def test_every_member_is_within_the_threshold_of_its_keeper(stored) -> None:
    facts, vectors, _ = stored
    by_id = {item.id: row for row, item in enumerate(facts)}
    for group in find_duplicates(facts, vectors, MODEL, tier="near", threshold=0.8):
        keeper = vectors[by_id[group.keep.id]]
        for member in group.others:
            assert float(vectors[by_id[member.id]] @ keeper) == pytest.approx(member.similarity, abs=1e-4)


def test_same_groups_whatever_the_input_order(stored) -> None:
    facts, vectors, _ = stored
    shuffled = np.random.default_rng(7).permutation(len(facts))
    first = [g.to_dict() for g in find_duplicates(facts, vectors, MODEL)]
    again = [g.to_dict() for g in find_duplicates([facts[i] for i in shuffled], vectors[shuffled], MODEL)]
    assert sorted(map(repr, first)) == sorted(map(repr, again))


def test_json_shape_has_the_keeper_among_the_members(stored) -> None:
    facts, vectors, ids = stored
    group = next(g for g in find_duplicates(facts, vectors, MODEL) if g.tier == "same-image")
    record = group.to_dict()
    assert set(record) == {"tier", "keep", "members"}
    assert set(record["keep"]) == {"id", "path"}
    assert all(set(m) == {"id", "path", "similarity"} for m in record["members"])
    assert record["keep"]["id"] == ids["chelsea"]  # more pixels than its resized copy
    assert record["keep"] in [{"id": m["id"], "path": m["path"]} for m in record["members"]]
    assert group.reason.startswith("more pixels")


def test_not_duplicates_decision_keeps_images_apart(stored) -> None:
    facts, vectors, ids = stored
    decisions = Decisions(not_duplicates=(frozenset({ids["coffee"], ids["coffee cropped"]}),))
    for group in find_duplicates(facts, vectors, MODEL, decisions=decisions):
        assert not {ids["coffee"], ids["coffee cropped"]} <= {m.id for m in group.members}


def test_keep_all_decision_hides_the_group(stored) -> None:
    facts, vectors, ids = stored
    pair = frozenset({ids["astronaut"], ids["astronaut copy"]})
    groups = find_duplicates(facts, vectors, MODEL, decisions=Decisions(keep_all=(pair,)))
    assert pair not in groups_by_ids(groups)
    assert frozenset({ids["chelsea"], ids["chelsea resized"]}) in groups_by_ids(groups)


def twins(count: int, **changes) -> list[ImageFacts]:
    """`count` byte-identical files that differ only in the facts a keeper rule looks at."""
    base = ImageFacts(0, "/photos/a.jpg", 1000, "ab" * 16, 640, 480, 10**18)
    return [dataclasses.replace(base, id=i + 1, path=f"/photos/copy{i}/a.jpg") for i in range(count)]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"path": "/archive/a.jpg", "mtime_ns": 2 * 10**18}, "in a reference folder"),
        ({"mtime_ns": 1}, "older file"),
        ({"metadata_fields": 12}, "richer metadata"),
        ({"path": "/p/a.jpg"}, "shorter path"),
    ],
)
def test_keeper_rules_in_order(change: dict, reason: str) -> None:
    files = twins(3)
    files[2] = dataclasses.replace(files[2], **change)
    vectors = np.tile(np.eye(1, 8, dtype=np.float32), (3, 1))
    (group,) = find_duplicates(files, vectors, MODEL, reference_folders=["/archive"])
    assert group.keep.id == files[2].id
    assert group.reason.startswith(reason)


def test_more_pixels_then_larger_file_win(stored) -> None:
    facts, vectors, ids = stored
    original = facts[ids["chelsea"] - 1]
    width, height = original.width * 8, original.height * 8  # type: ignore[operator]  # an enlargement: same shape
    big = dataclasses.replace(facts[ids["chelsea resized"] - 1], width=width, height=height)
    changed = [big if item.id == big.id else item for item in facts]
    group = next(g for g in find_duplicates(changed, vectors, MODEL) if g.tier == "same-image")
    assert group.keep.id == ids["chelsea resized"]
    assert group.reason == f"more pixels ({width}x{height} vs {original.width}x{original.height})"


def test_a_reference_folder_beats_every_other_rule(stored, photo_folder) -> None:
    facts, vectors, ids = stored
    reference = os.fspath(photo_folder["chelsea resized"].parent)
    group = next(
        g for g in find_duplicates(facts, vectors, MODEL, reference_folders=[reference]) if g.tier == "same-image"
    )
    assert group.keep.id == ids["chelsea resized"]
    assert group.reason == "in a reference folder"


def test_bad_inputs_raise_typed_errors(stored) -> None:
    facts, vectors, _ = stored
    with pytest.raises(DuplicatesError, match="unknown tier"):
        find_duplicates(facts, vectors, MODEL, tier="similar")
    with pytest.raises(DuplicatesError, match="vectors"):
        find_duplicates(facts, vectors[:2], MODEL)
    with pytest.raises(LookalikeError, match="no duplicate thresholds"):
        find_duplicates(facts, vectors, "resnet-9000")


def test_a_recoloured_picture_is_not_a_near_duplicate_but_a_toned_copy_is(tmp_path: Path, embedder) -> None:
    chelsea = sample_photo("chelsea").convert("RGB")
    red, green, blue = chelsea.split()
    paths = [
        save(chelsea, tmp_path / "chelsea.png"),
        save(Image.merge("RGB", (blue, red, green)), tmp_path / "chelsea-blue.png"),  # same grey levels, other hues
        save(ImageEnhance.Color(ImageEnhance.Brightness(chelsea).enhance(1.2)).enhance(0.75), tmp_path / "toned.png"),
    ]
    facts, vectors = facts_and_vectors(paths, embedder)

    assert groups_by_ids(find_duplicates(facts, vectors, MODEL)) == {frozenset({1, 3}): "near"}


def test_a_turned_a_watermarked_and_a_heavily_compressed_photo_are_near_and_a_re_encode_is_same_image(
    tmp_path: Path, embedder
) -> None:
    # A wide picture (its turn is sheared in a square thumbnail); the watermark moves its thumbnail less than a
    # re-encode can, but all in one corner; quality 10 moves its embedding far.
    wide = sample_photo("astronaut").convert("RGB").resize((900, 450), Image.Resampling.LANCZOS)
    marked = wide.copy()
    w, h = marked.size
    ImageDraw.Draw(marked, "RGBA").rectangle((w - w // 5 - 4, h - h // 14 - 4, w - 4, h - 4), fill=(0, 0, 0, 110))
    paths = [
        save(wide, tmp_path / "wide.png"),
        save(wide, tmp_path / "wide-reencoded.jpg", quality=80),
        save(wide.rotate(4, resample=Image.Resampling.BICUBIC, fillcolor="white"), tmp_path / "turned.jpg"),
        save(marked, tmp_path / "watermarked.jpg", quality=90),
        save(wide, tmp_path / "heavy.jpg", quality=10),
        save(sample_photo("chelsea").convert("RGB"), tmp_path / "other.png"),
    ]
    facts, vectors = facts_and_vectors(paths, embedder)

    groups = find_duplicates(facts, vectors, MODEL)

    assert groups_by_ids(groups) == {frozenset({1, 2}): "same-image", frozenset({1, 3, 4, 5}): "near"}


def test_several_edited_copies_of_one_photo_make_one_group_even_when_a_copy_is_kept(tmp_path: Path, embedder) -> None:
    # The toned copy is saved as PNG, so it is the larger file and the keeper; the original and four other
    # edits of it must all join that keeper, not split into a group of their own around the original.
    coffee = sample_photo("coffee").convert("RGB")
    marked = coffee.copy()
    ImageDraw.Draw(marked).rectangle((10, 10, 10 + coffee.width // 6, 10 + coffee.height // 12), fill="white")
    paths = [
        save(ImageEnhance.Contrast(coffee).enhance(1.25), tmp_path / "toned.png"),
        save(coffee, tmp_path / "original.jpg", quality=90),
        save(crop(coffee, 0.06), tmp_path / "cropped.jpg", quality=90),
        save(marked, tmp_path / "watermarked.jpg", quality=90),
        save(coffee.rotate(3, resample=Image.Resampling.BICUBIC), tmp_path / "turned.jpg", quality=90),
        save(coffee, tmp_path / "heavy.jpg", quality=12),
    ]
    facts, vectors = facts_and_vectors(paths, embedder)

    groups = find_duplicates(facts, vectors, MODEL)

    assert groups_by_ids(groups) == {frozenset(range(1, 7)): "near"}
    assert groups[0].keep.path.endswith("toned.png")


def test_a_small_drawing_re_encoded_as_jpeg_is_same_image_though_its_thumbnail_moves_more(
    tmp_path: Path, embedder
) -> None:
    # At 64 px, each thumbnail pixel averages 2 x 2 of the file's: JPEG's ringing around thin lines does not
    # average out as it does in a photo, and moves the thumbnail past the limit for larger files.
    drawing = Image.new("RGB", (64, 64), "white")
    pen = ImageDraw.Draw(drawing)
    for k in range(3):
        pen.line((0, k * 21, 63, 63 - k * 21), fill="black", width=2)
    pen.ellipse((12, 12, 52, 52), outline=(200, 30, 30), width=3)
    paths = [save(drawing, tmp_path / "icon.png"), save(drawing, tmp_path / "icon.jpg", quality=90)]
    facts, vectors = facts_and_vectors(paths, embedder)
    limits = thresholds_for(MODEL)
    assert limits.same_image_signature < signature_distance(facts[0].signature, facts[1].signature)

    assert groups_by_ids(find_duplicates(facts, vectors, MODEL)) == {frozenset({1, 2}): "same-image"}


def test_a_small_drawing_keeps_its_copies_but_not_its_sibling_in_a_series(tmp_path: Path, embedder) -> None:
    star = star_polygon(40, 15)
    paths = [
        save(star, tmp_path / "star-40.png"),
        save(toned(star), tmp_path / "star-40-toned.png"),
        save(turned(star), tmp_path / "star-40-turned.png"),
        save(star_polygon(42, 15), tmp_path / "star-42.png"),
    ]
    facts, vectors = facts_and_vectors(paths, embedder)
    # At 32 x 32 the sibling's thumbnail matches the star's as a copy's would: only the files tell them apart.
    assert thresholds_for(MODEL).near(facts[0], [(facts[3], float(vectors[0] @ vectors[3]))]) != [None]

    groups = find_duplicates(facts, vectors, MODEL)

    assert groups_by_ids(groups) == {frozenset({1, 2, 3}): "near"}
