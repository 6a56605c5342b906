"""The copy-detection benchmark's data, built at run time from images that installed packages ship.

Photos: non-overlapping tiles of the photographs and wallpapers of Debian's
background packages (mate-backgrounds, ubuntu/ukui/lomiri wallpapers,
plasma-workspace-wallpapers; whatever is installed) and scikit-image's colour
photos. A tile is kept only if it has texture (a flat sky tile identifies
nothing). Distractors: clip art (openclipart-png, tuxpaint-stamps) flattened
onto white. One source in ten is held out of the collection: its tiles are the
originals of the "no original" queries. Everything is seeded; no image is
fetched from anywhere.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edits import HARD, MILD, apply_edit

WALLPAPER_GLOBS = [
    "/usr/share/backgrounds/*.jpg",
    "/usr/share/backgrounds/*.png",
    "/usr/share/backgrounds/mate/nature/*.jpg",
    "/usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg",
    "/usr/share/backgrounds/gnome/adwaita-*.webp",
]
PLASMA_FOLDERS = "/usr/share/wallpapers/*/contents/images"
CLIPART_GLOBS = ["/usr/share/openclipart/png/**/*.png", "/usr/share/tuxpaint/stamps/**/*.png"]
TILE = (640, 480)
MAX_TILES_PER_SOURCE = 24
HOLD_OUT_EVERY = 10


@dataclass
class Query:
    path: str
    tier: str  # mild, hard, none (no original in the collection)
    family: str
    original: str | None  # the collection file it was made from


def source_paths() -> list[str]:
    """Distinct source pictures: one file per wallpaper (its largest rendering), duplicates by size dropped."""
    paths = sorted({p for pattern in WALLPAPER_GLOBS for p in glob.glob(pattern) if os.path.getsize(p) > 0})
    for folder in sorted(glob.glob(PLASMA_FOLDERS)):
        files = sorted(glob.glob(os.path.join(folder, "*")), key=os.path.getsize)
        if files:
            paths.append(files[-1])
    seen: set[int] = set()
    distinct = []
    for path in paths:
        size = os.path.getsize(path)
        if size not in seen:
            seen.add(size)
            distinct.append(path)
    return distinct


def tiles_of(picture: Image.Image, limit: int) -> list[Image.Image]:
    """Non-overlapping textured tiles of a picture shrunk to at most 2,560 px."""
    picture = picture.convert("RGB")
    if max(picture.size) > 2560:
        picture.thumbnail((2560, 2560))
    tw, th = TILE if picture.width >= picture.height else TILE[::-1]
    if picture.width < tw or picture.height < th:
        return [picture] if _textured(picture) else []
    tiles = []
    for top in range(0, picture.height - th + 1, th):
        for left in range(0, picture.width - tw + 1, tw):
            tile = picture.crop((left, top, left + tw, top + th))
            if _textured(tile):
                tiles.append(tile)
    return tiles[:limit]


def _textured(image: Image.Image) -> bool:
    """A tile with almost no edges (a smooth gradient of a wallpaper) has nothing that identifies it."""
    import cv2

    small = image.convert("L")
    small.thumbnail((640, 640))
    gray = np.asarray(small)
    return float(gray.std()) > 18.0 and float((cv2.Canny(gray, 50, 150) > 0).mean()) > 0.002


def photo_tiles() -> tuple[list[Image.Image], list[Image.Image]]:
    """(collection photos, held-out photos), each a list of tiles."""
    from skimage import data

    pictures = []
    for path in source_paths():
        try:
            pictures.append(Image.open(path))
        except OSError:
            continue
    for name in (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "motorcycle_left",
        "hubble_deep_field",
        "immunohistochemistry",
    ):
        pictures.append(
            Image.fromarray(getattr(data, name)() if name != "motorcycle_left" else data.stereo_motorcycle()[0])
        )
    kept, held = [], []
    for number, picture in enumerate(pictures):
        tiles = tiles_of(picture, MAX_TILES_PER_SOURCE)
        (held if number % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1 else kept).extend(tiles)
    return kept, held


def clipart(count: int, rng: np.random.Generator) -> list[Image.Image]:
    files = sorted({p for pattern in CLIPART_GLOBS for p in glob.glob(pattern, recursive=True)})
    chosen = rng.choice(len(files), size=min(count, len(files)), replace=False)
    images = []
    for index in sorted(chosen.tolist()):
        try:
            art = Image.open(files[index]).convert("RGBA")
        except OSError:
            continue
        art.thumbnail((512, 512))
        canvas = Image.new("RGB", art.size, "white")
        canvas.paste(art, mask=art.getchannel("A"))
        images.append(canvas)
    return images


def build(folder: Path, images: int, queries: int, seed: int = 9) -> tuple[Path, list[Query]]:
    """Write the collection and the queries under `folder` (reused when its manifest matches)."""
    manifest = folder / "manifest.json"
    settings = {"images": images, "queries": queries, "seed": seed}
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved["settings"] == settings:
            return folder / "collection", [Query(**q) for q in saved["queries"]]
    rng = np.random.default_rng(seed)
    tiles, held = photo_tiles()
    order = rng.permutation(len(tiles))
    # 80% of the tiles (at most 40% of the collection) are collection photos; the rest, with the held-out
    # sources' tiles, fill mosaics and backgrounds, so that no "unrelated" part of a query is in the collection.
    in_collection = min(images * 2 // 5, len(tiles) * 4 // 5)
    photos = [tiles[i] for i in order[:in_collection]]
    filler = [tiles[i] for i in order[in_collection:]]
    distractors = clipart(images - len(photos), rng)
    collection = folder / "collection"
    collection.mkdir(parents=True, exist_ok=True)
    photo_paths = []
    for number, photo in enumerate(photos):
        path = collection / f"photo{number:05}.jpg"
        photo.save(path, quality=92)
        photo_paths.append(path)
    for number, art in enumerate(distractors):
        art.save(collection / f"art{number:05}.png")
    query_list = _write_queries(folder / "queries", photo_paths, held, filler + held, queries, rng)
    manifest.write_text(json.dumps({"settings": settings, "queries": [asdict(q) for q in query_list]}))
    return collection, query_list


def _write_queries(
    folder: Path,
    photo_paths: list[Path],
    held: list[Image.Image],
    pool: list[Image.Image],
    count: int,
    rng: np.random.Generator,
) -> list[Query]:
    """Per family an equal share: mild 30%, hard 55%, no-original 15% of `count`."""
    folder.mkdir(parents=True, exist_ok=True)

    def others() -> Image.Image:  # an unrelated photo, never one of the collection
        return pool[int(rng.integers(0, len(pool)))]

    plan = [("mild", f, max(1, round(count * 0.30 / len(MILD)))) for f in MILD]
    plan += [("hard", f, max(1, round(count * 0.55 / len(HARD)))) for f in HARD]
    none_families = ["crop", "jpeg", "paste", "browser", "phone", "meme", "small_crop", "turn", "mosaic3"]
    plan += [("none", f, max(1, round(count * 0.15 / len(none_families)))) for f in none_families]
    queries = []
    for tier, family, n in plan:
        for _ in range(n):
            seed = int(rng.integers(0, 2**31))
            if tier == "none":
                original, photo = None, held[int(rng.integers(0, len(held)))]
            else:
                original = photo_paths[int(rng.integers(0, len(photo_paths)))]
                photo = Image.open(original).convert("RGB")
            edited = apply_edit(family, photo, seed, others)
            path = folder / f"{tier}-{family}-{len(queries):04}.jpg"
            edited.save(path, quality=95)
            queries.append(Query(str(path), tier, family, str(original) if original else None))
    return queries
