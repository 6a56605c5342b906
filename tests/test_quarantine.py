"""Acting on duplicate groups: plans change nothing, moves undo byte for byte, nothing is overwritten."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lookalike.demo import sample_photo
from lookalike.duplicates import DuplicateGroup, Member
from lookalike.quarantine import (
    MANIFEST,
    QuarantineError,
    apply_plan,
    plan_hardlinks,
    plan_move,
    plan_undo,
    undo,
)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Real photos with byte copies and re-encoded copies in nested folders."""
    root = tmp_path / "photos"
    for name in ("astronaut", "coffee"):
        (root / "2024").mkdir(parents=True, exist_ok=True)
        sample_photo(name).save(root / "2024" / f"{name}.jpg", quality=90)
        (root / "backup" / "old").mkdir(parents=True, exist_ok=True)
        (root / "backup" / "old" / f"{name}.jpg").write_bytes((root / "2024" / f"{name}.jpg").read_bytes())
        sample_photo(name).save(root / "backup" / f"{name}-small.jpg", quality=70)
    return root


def group(tier: str, keep: Path, *others: Path) -> DuplicateGroup:
    members = (Member(1, str(keep), 1.0),) + tuple(Member(i + 2, str(p), 0.99) for i, p in enumerate(others))
    return DuplicateGroup(tier=tier, keep=members[0], members=members, reason="more pixels")


@pytest.fixture
def groups(photos: Path) -> list[DuplicateGroup]:
    return [
        group("identical", photos / "2024/astronaut.jpg", photos / "backup/old/astronaut.jpg"),
        group(
            "same-image",
            photos / "2024/coffee.jpg",
            photos / "backup/old/coffee.jpg",
            photos / "backup/coffee-small.jpg",
        ),
    ]


def test_a_plan_is_a_dry_run(photos: Path, groups: list[DuplicateGroup], tmp_path: Path) -> None:
    before = snapshot(photos)
    plan = plan_move(groups, tmp_path / "quarantine")
    assert [Path(step.source).name for step in plan.steps] == ["astronaut.jpg", "coffee.jpg", "coffee-small.jpg"]
    assert plan.bytes_freed == sum(Path(step.source).stat().st_size for step in plan.steps)
    plan_hardlinks(groups)
    assert snapshot(photos) == before
    assert not (tmp_path / "quarantine").exists()


def test_move_keeps_relative_paths_and_undo_restores_every_byte(
    photos: Path, groups: list[DuplicateGroup], tmp_path: Path
) -> None:
    before = snapshot(photos)
    followed: list[tuple[int | None, str, str]] = []
    apply_plan(
        plan_move(groups, tmp_path / "quarantine"), on_step=lambda s: followed.append((s.image_id, s.source, s.target))
    )

    assert not (photos / "backup/old/astronaut.jpg").exists()
    assert (tmp_path / "quarantine/old/astronaut.jpg").read_bytes() == before["backup/old/astronaut.jpg"]
    assert (tmp_path / "quarantine/coffee-small.jpg").exists()  # relative to backup/, the common folder
    assert [image_id for image_id, _, _ in followed] == [2, 2, 3]
    manifest = json.loads((tmp_path / "quarantine" / MANIFEST).read_text())
    assert len(manifest["moved"]) == 3

    restored = undo(tmp_path / "quarantine")
    assert len(restored) == 3
    assert snapshot(photos) == before
    assert plan_undo(tmp_path / "quarantine").steps == ()  # a second undo has nothing left to do


def test_move_refuses_to_overwrite(photos: Path, groups: list[DuplicateGroup], tmp_path: Path) -> None:
    target = tmp_path / "quarantine" / "old" / "astronaut.jpg"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    with pytest.raises(QuarantineError, match="never overwrites"):
        plan_move(groups, tmp_path / "quarantine")
    assert target.read_bytes() == b"someone else's file"


def test_a_quarantine_folder_is_used_once(photos: Path, groups: list[DuplicateGroup], tmp_path: Path) -> None:
    apply_plan(plan_move(groups[:1], tmp_path / "quarantine"))
    with pytest.raises(QuarantineError, match="earlier move"):
        apply_plan(plan_move(groups[1:], tmp_path / "quarantine", root=photos))


def test_a_file_changed_after_planning_stops_the_move(
    photos: Path, groups: list[DuplicateGroup], tmp_path: Path
) -> None:
    plan = plan_move(groups, tmp_path / "quarantine")
    (photos / "backup/old/coffee.jpg").write_bytes(b"edited since")
    with pytest.raises(QuarantineError, match="changed since the plan"):
        apply_plan(plan)
    assert (photos / "backup/old/coffee.jpg").read_bytes() == b"edited since"
    undo(tmp_path / "quarantine")  # the one move done before the stop is undone too
    assert (photos / "backup/old/astronaut.jpg").exists()


def test_undo_checks_the_bytes_it_restores(photos: Path, groups: list[DuplicateGroup], tmp_path: Path) -> None:
    apply_plan(plan_move(groups[:1], tmp_path / "quarantine"))  # one file: relative to its own folder
    (tmp_path / "quarantine/astronaut.jpg").write_bytes(b"tampered")
    with pytest.raises(QuarantineError, match="changed"):
        undo(tmp_path / "quarantine")
    with pytest.raises(QuarantineError, match="nothing lookalike moved"):
        undo(photos)


def test_hardlinks_replace_identical_copies_only(photos: Path, groups: list[DuplicateGroup]) -> None:
    before = snapshot(photos)
    done = apply_plan(plan_hardlinks(groups))
    assert [Path(step.target).name for step in done] == ["astronaut.jpg"]  # same-image copies are left alone
    assert os.path.samefile(photos / "2024/astronaut.jpg", photos / "backup/old/astronaut.jpg")
    assert snapshot(photos) == before  # every path still holds the same bytes
    assert plan_hardlinks(groups).steps == ()  # already linked
