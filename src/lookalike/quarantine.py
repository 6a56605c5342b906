"""Safe actions on duplicate groups: move non-keepers into a quarantine folder (and undo it), hard-link copies.

Every action is planned first (`plan_move`, `plan_hardlinks`): a plan is plain data that says what would
happen and touches nothing, so a dry run is simply a plan that is not applied. Applying refuses to overwrite
anything, never deletes a user's file outright, and reports each step through a callback, so the catalog can
follow every move as it happens.

- Moving keeps each file's path relative to a root (the common folder of the moved files, or one given),
  under the quarantine folder, and writes `lookalike-undo.json` there (atomically) *before* the first move
  and again after each one, so an interrupted run can still be undone. `undo(folder)` puts every file back
  and checks its bytes against the hash recorded before it moved.
- Hard-linking replaces an `identical` copy by a hard link to its keeper: the copy is first renamed aside,
  the link made, and only then is the renamed copy removed, because at that point its bytes still exist
  under the keeper's name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LookalikeError
from .images import compute_content_hash
from .storage import atomic_write_bytes, file_checksum

MANIFEST = "lookalike-undo.json"
MANIFEST_VERSION = 1


class QuarantineError(LookalikeError):
    """An action that would overwrite or lose a file, or a quarantine folder that cannot be undone."""


@dataclass(frozen=True)
class Step:
    """One file operation: `kind` is "move", "restore" or "hardlink"; `image_id` is the catalog id moved."""

    kind: str
    image_id: int | None
    source: str
    target: str
    content_hash: str
    size: int


@dataclass(frozen=True)
class Plan:
    """What an action would do. `apply_plan` does it; until then nothing on disk has changed."""

    kind: str
    steps: tuple[Step, ...]
    folder: str | None = None  # the quarantine folder of a move

    @property
    def bytes_freed(self) -> int:
        """Bytes the moved or linked files take today (what deleting the quarantine would free)."""
        return sum(step.size for step in self.steps)


def plan_move(groups: Iterable, folder: str | Path, root: str | Path | None = None) -> Plan:
    """Plan moving every non-keeper of `groups` (DuplicateGroup objects) into `folder`, under its path
    relative to `root` (default: the deepest folder holding all of them)."""
    files = [(member.id, member.path) for group in groups for member in group.others]
    if not files:
        return Plan("move", (), str(folder))
    folder = Path(folder).absolute()
    root = (
        Path(root).absolute()
        if root is not None
        else Path(os.path.commonpath([str(Path(p).absolute().parent) for _, p in files]))
    )
    steps = []
    for image_id, path in files:
        source = Path(path).absolute()
        if folder == source or folder in source.parents:
            raise QuarantineError(f"{source} is already inside the quarantine folder {folder}")
        try:
            relative = source.relative_to(root)
        except ValueError:
            raise QuarantineError(f"{source} is not under {root}; give a root that holds every file") from None
        steps.append(
            Step("move", image_id, str(source), str(folder / relative), file_checksum(source), source.stat().st_size)
        )
    _refuse_overwrites(steps)
    return Plan("move", tuple(steps), str(folder))


def plan_hardlinks(groups: Iterable) -> Plan:
    """Plan replacing each copy of an `identical` group by a hard link to the group's keeper (same folder
    tree and file system only; others are left out of the plan)."""
    steps = []
    for group in groups:
        if group.tier != "identical":
            continue
        keeper = Path(group.keep.path).absolute()
        for member in group.others:
            copy = Path(member.path).absolute()
            if _same_file(keeper, copy) or keeper.stat().st_dev != copy.stat().st_dev:
                continue
            steps.append(Step("hardlink", member.id, str(keeper), str(copy), file_checksum(copy), copy.stat().st_size))
    return Plan("hardlink", tuple(steps))


def apply_plan(plan: Plan, on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Carry out `plan`, calling `on_step(step)` after each file operation; return the steps done.

    Before each step the source is checked against the plan (same bytes) and the target must not exist:
    a plan made before the files changed stops with `QuarantineError` instead of doing the wrong thing.
    """
    done: list[Step] = []
    if plan.kind not in ("move", "hardlink"):
        raise QuarantineError(f"cannot apply a {plan.kind!r} plan; use undo() to restore")
    if plan.kind == "move" and plan.steps:
        assert plan.folder is not None
        if (Path(plan.folder) / MANIFEST).exists():
            raise QuarantineError(f"{plan.folder} already holds an earlier move's {MANIFEST}: use another folder")
        Path(plan.folder).mkdir(parents=True, exist_ok=True)
        _write_manifest(Path(plan.folder), plan.steps, done)
    for step in plan.steps:
        _check_source(step)
        if plan.kind == "hardlink":
            _check_source(Step(step.kind, step.image_id, step.target, step.source, step.content_hash, step.size))
        if plan.kind == "move":
            _move(Path(step.source), Path(step.target))
        else:
            _hardlink(Path(step.source), Path(step.target))
        done.append(step)
        if plan.kind == "move":
            _write_manifest(Path(plan.folder), plan.steps, done)  # type: ignore[arg-type]
        if on_step is not None:
            on_step(step)
    return done


def plan_undo(folder: str | Path) -> Plan:
    """Plan putting back every file a move into `folder` took, from its manifest."""
    folder = Path(folder).absolute()
    manifest = folder / MANIFEST
    try:
        record = json.loads(manifest.read_bytes())
    except FileNotFoundError:
        raise QuarantineError(f"{folder} holds no {MANIFEST}: nothing lookalike moved there can be undone") from None
    except (OSError, ValueError) as error:
        raise QuarantineError(f"cannot read {manifest}: {error}") from None
    if record.get("version") != MANIFEST_VERSION:
        raise QuarantineError(f"{manifest} has version {record.get('version')}, expected {MANIFEST_VERSION}")
    # A file whose quarantined copy is gone was already put back (an interrupted undo ran before).
    steps = [
        Step("restore", moved["image_id"], moved["target"], moved["source"], moved["content_hash"], moved["size"])
        for moved in record["moved"]
        if Path(moved["target"]).exists()
    ]
    _refuse_overwrites(steps)
    return Plan("restore", tuple(steps), str(folder))


def undo(folder: str | Path, on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Restore every file moved into `folder` to where it was, byte for byte; return the steps done."""
    plan = plan_undo(folder)
    done = []
    for step in plan.steps:
        _check_source(step)
        _move(Path(step.source), Path(step.target))
        done.append(step)
        if on_step is not None:
            on_step(step)
    return done


def _refuse_overwrites(steps: Iterable[Step]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.kind != "hardlink" and (Path(step.target).exists() or Path(step.target).is_symlink()):
            raise QuarantineError(f"{step.target} exists: lookalike never overwrites a file")
        if step.target in seen:
            raise QuarantineError(f"two files would go to {step.target}")
        seen.add(step.target)


def _check_source(step: Step) -> None:
    path = Path(step.source)
    if not path.is_file():
        raise QuarantineError(f"{path} is gone since the plan was made; nothing after it was done")
    if file_checksum(path) != step.content_hash:
        raise QuarantineError(f"{path} changed since the plan was made; nothing after it was done")


def _move(source: Path, target: Path) -> None:
    """Move one file without ever overwriting: a hard link then an unlink on one file system, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # fails if target exists: no overwrite, even in a race
    except FileExistsError:
        raise QuarantineError(f"{target} exists: lookalike never overwrites a file") from None
    except OSError:
        _copy_exclusive(source, target)  # another file system (or no hard links there)
    os.unlink(source)


def _copy_exclusive(source: Path, target: Path) -> None:
    data = source.read_bytes()
    with open(target, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.utime(target, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
    if compute_content_hash(target.read_bytes()) != compute_content_hash(data):
        target.unlink()
        raise QuarantineError(f"copying {source} to {target} did not give the same bytes; {source} is kept")


def _hardlink(keeper: Path, copy: Path) -> None:
    aside = copy.with_name(f".{copy.name}.lookalike-aside")
    if aside.exists():
        raise QuarantineError(f"{aside} exists: lookalike never overwrites a file")
    os.link(copy, aside)  # the copy's bytes stay reachable until the link is in place
    os.unlink(copy)
    try:
        os.link(keeper, copy)
    except OSError as error:
        os.link(aside, copy)
        os.unlink(aside)
        raise QuarantineError(f"cannot link {copy} to {keeper}: {error.strerror or error}; the copy is kept") from None
    os.unlink(aside)  # the copy's bytes are identical to the keeper's, which now also lives at this path


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _write_manifest(folder: Path, steps: Iterable[Step], done: list[Step]) -> None:
    record = {
        "version": MANIFEST_VERSION,
        "planned": [asdict(step) for step in steps],
        "moved": [asdict(step) for step in done],
    }
    atomic_write_bytes(folder / MANIFEST, json.dumps(record, indent=1).encode())
