"""Edited copies of a collection's images for `lookalike eval`: seeded, written to a folder the caller gives.

Each copy's edit (`edits.py`) is seeded from (seed, image id, family), so the same call makes the same copies.
Originals are decoded in bounded memory and edited at `EDIT_SIDE` pixels on their long side at most. Images
pasted into a copy (paste backgrounds, mosaic tiles) are other images of the collection, drawn from a seeded
pool and never the image being copied, or generated ones when the collection holds no other readable image;
each copy records the collection images pasted into it.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .edits import HARD, MILD, Edit, apply_edit
from .errors import ImageDecodeError, InvalidArgumentError
from .images import open_image_file

if TYPE_CHECKING:
    from .collection import Collection

TIERS: dict[str, dict[str, Edit]] = {"mild": MILD, "hard": HARD}
EDIT_SIDE = 1024  # originals are edited at this long side at most: a phone photo's full size only slows the edits
OTHER_SIDE = 640  # images pasted into copies need no more
OTHERS_POOL = 16  # other images decoded once and reused for pastes and mosaics, so memory stays bounded


@dataclass(frozen=True)
class EditedCopy:
    """One edited copy of a sampled image, written to `path`."""

    family: str
    original_id: int
    original: str  # the original's path in the collection
    seed: int  # the edit's own seed
    path: str
    others: tuple[int, ...] = ()  # ids of the collection's images pasted into the copy


def choose_families(edits: str, families: Sequence[str] | None = None) -> list[str]:
    """The families of the tier `edits`, or the given ones (each must belong to that tier)."""
    if edits not in TIERS:
        raise InvalidArgumentError(f"the edits must be one of {', '.join(TIERS)}, not {edits!r}", "edits")
    known = list(TIERS[edits])
    if not families:
        return known
    unknown = [name for name in families if name not in known]
    if unknown:
        raise InvalidArgumentError(
            f"no {edits} edit family is called {', '.join(unknown)}; the {edits} families are {', '.join(known)}",
            "families",
        )
    return list(dict.fromkeys(families))


def edit_seed(seed: int, image_id: int, family: str) -> int:
    """The seed of one copy's edit: stable across runs, versions and family orders."""
    state = np.random.SeedSequence([seed, image_id, zlib.crc32(family.encode())]).generate_state(1)
    return int(state[0])


def open_original(path: str, side: int = EDIT_SIDE, max_megapixels: float | None = None) -> Image.Image:
    """An original decoded in bounded memory and shrunk to at most `side` on its long side."""
    picture = open_image_file(path, min_size=side, max_megapixels=max_megapixels)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return picture


class OtherImages:
    """Images to paste into a copy: a seeded pool of the collection's images, never the one being copied."""

    def __init__(self, collection: Collection, seed: int, pool: int = OTHERS_POOL) -> None:
        ids = collection.catalog.embedding_ids()
        chosen = np.random.default_rng(seed + 1).permutation(ids)[: pool + 1]  # one more: one may be the original
        self.paths = collection.catalog.indexed_paths(int(i) for i in chosen)
        self.order = [int(i) for i in chosen if int(i) in self.paths]
        self.max_megapixels = collection.max_megapixels
        self.cache: dict[int, Image.Image | None] = {}

    def drawer(self, original_id: int, seed: int) -> tuple[Callable[[], Image.Image], list[int]]:
        """A callable giving another image each time (seeded), for the copy of `original_id`; the ids it gave."""
        rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the edit's
        candidates = [i for i in self.order if i != original_id]
        used: list[int] = []

        def draw() -> Image.Image:
            readable = [i for i in candidates if self._picture(i) is not None]
            if not readable:
                return generated_image(rng)
            chosen = readable[int(rng.integers(0, len(readable)))]
            used.append(chosen)
            picture = self._picture(chosen)
            assert picture is not None  # readable ones decode
            return picture

        return draw, used

    def _picture(self, image_id: int) -> Image.Image | None:
        if image_id not in self.cache:
            try:
                self.cache[image_id] = open_original(self.paths[image_id], OTHER_SIDE, self.max_megapixels)
            except (ImageDecodeError, OSError):  # a file gone or damaged since it was indexed: use the others
                self.cache[image_id] = None
        return self.cache[image_id]


def generated_image(rng: np.random.Generator, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A smooth random colour field, for a collection with no other image to paste."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)


def write_copies(
    collection: Collection, ids: Sequence[int], families: Sequence[str], seed: int, folder: str | os.PathLike
) -> tuple[list[EditedCopy], list[tuple[str, str]]]:
    """Write one edited copy of each image per family into `folder` (created if need be); also the originals that
    could not be read."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = collection.catalog.indexed_paths(ids)
    others = OtherImages(collection, seed)
    copies: list[EditedCopy] = []
    skipped: list[tuple[str, str]] = []
    for image_id in ids:
        try:
            photo = open_original(paths[image_id], max_megapixels=collection.max_megapixels)
        except ImageDecodeError as error:
            skipped.append((paths[image_id], error.reason))
            continue
        except OSError as error:
            skipped.append((paths[image_id], error.strerror or str(error)))
            continue
        for family in families:
            copy_seed = edit_seed(seed, image_id, family)
            draw, used = others.drawer(image_id, copy_seed)
            edited = apply_edit(family, photo, copy_seed, draw)
            path = folder / f"{image_id}-{family}.png"  # lossless: the edit alone decides what is lost
            edited.save(path)
            copies.append(EditedCopy(family, image_id, paths[image_id], copy_seed, str(path), tuple(sorted(set(used)))))
    return copies, skipped
