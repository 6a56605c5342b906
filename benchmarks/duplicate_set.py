"""A labelled duplicate set built at run time from images that installed packages ship (nothing is committed).

Sources, each written once as an "original": clip art (openclipart PNGs and Tux Paint stamps, with their
transparency; simple graphics collide easily), tiles of photos (mate-backgrounds' nature photos, the GNOME
wallpapers and scikit-image's photos, each cut into 2 x 2 tiles so that neighbouring tiles are hard negatives).
A seeded subset of the sources also gets copies, each labelled with the tier it should be found in:

- identical: the same bytes under another name;
- same-image: re-encoded JPEG (quality 70-95), resized (50-80%), converted PNG <-> JPEG/WebP, metadata
  stripped, transparency flattened onto white;
- near: cropped (2-10% per side), toned (brightness, contrast, gamma, saturation), heavy JPEG (quality 8-20),
  turned (2-5 degrees), watermarked (a small label in a corner);

and a few sources get a chain: eight images each a little more cropped and brightened than the last (the
last is cut by 42% on two sides), so that the ends are far apart. Every image records its source, so any
reported pair can be judged.
"""

from __future__ import annotations

import glob
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from copydetect_data import source_paths
from duplicate_variants import VARIANT_EDITS
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.signatures import THUMBNAIL_BYTES, compute_signature

CLIPART = ("/usr/share/openclipart/**/*.png", "/usr/share/tuxpaint/stamps/**/*.png")
PHOTOS = (
    "/usr/share/backgrounds/mate/nature/*.jpg",
    "/usr/share/backgrounds/gnome/*-l.webp",
)  # "-d" files are dark variants

SAME_IMAGE_EDITS = ("reencode", "resize", "convert", "strip", "flatten")
NEAR_EDITS = ("crop", "tone", "heavy-jpeg", "turn", "watermark")
CHAIN_LENGTH = 8
MAX_SIDE = 1024
DISTINCT_SOURCES = 3.0  # grey levels (RMS of 32 x 32 thumbnails) under which two sources count as one picture
VISIBLE_TONE = 3.0  # mean absolute grey-level change a tone edit must make to count as an edit


@dataclass(frozen=True)
class LabelledFile:
    """One file of the set: which source it shows, and how it was made from the source's original."""

    path: str
    source: int
    tier: str  # "original", "identical", "same-image", "near" or "chain"
    edit: str  # the edit applied ("" for originals), or the chain step ("step3")


def _source_images(quick: bool, rng: np.random.Generator) -> list[Image.Image]:
    clipart = sorted(p for pattern in CLIPART for p in glob.glob(pattern, recursive=True))
    picked = [clipart[i] for i in sorted(rng.choice(len(clipart), size=300 if quick else 2400, replace=False))]
    sources = [_thumbnail(Image.open(path)) for path in picked]
    photos = [Image.open(path) for pattern in PHOTOS for path in sorted(glob.glob(pattern))]
    photos += [sample_photo(name) for name in SAMPLE_PHOTOS]
    for photo in photos[: 12 if quick else None]:
        sources += _tiles(photo.convert("RGB"))
    return _distinct(sources)


def _wallpaper_sources(quick: bool) -> list[Image.Image]:
    """The wallpapers the system ships (photographs, and some abstract or painted ones; one rendering of each,
    as the copy-detection set picks them, dark variants left out) and scikit-image's photos, each cut into
    3 x 3 tiles: neighbouring tiles share light, colours and texture, so they are the hard negatives a photo
    library is full of."""
    paths = [path for path in source_paths() if "-d." not in path]  # "-d" files are dark variants of "-l" ones
    photos = [Image.open(path) for path in paths[: 8 if quick else None]]
    photos += [sample_photo(name) for name in SAMPLE_PHOTOS]
    sources: list[Image.Image] = []
    for photo in photos:
        photo = photo.convert("RGB")
        photo.thumbnail((3 * MAX_SIDE, 3 * MAX_SIDE))
        sources += _tiles(photo, 3)
    return sources


def _distinct(sources: list[Image.Image]) -> list[Image.Image]:
    """Drop sources whose pixels repeat an earlier one's: clip art collections hold the same drawing in
    several files, and such a pair is a true duplicate, not a false positive."""
    kept: list[Image.Image] = []
    thumbnails = np.zeros((len(sources), THUMBNAIL_BYTES), dtype=np.float32)
    for image in sources:
        pixels = np.asarray(_flatten(image).resize((224, 224), Image.Resampling.BILINEAR))
        thumbnail = np.frombuffer(compute_signature(pixels), dtype=np.uint8, count=THUMBNAIL_BYTES).astype(np.float32)
        if kept:
            distances = np.sqrt(np.mean((thumbnails[: len(kept)] - thumbnail) ** 2, axis=1))
            if float(distances.min()) <= DISTINCT_SOURCES:
                continue
        thumbnails[len(kept)] = thumbnail
        kept.append(image)
    return kept


def _thumbnail(image: Image.Image) -> Image.Image:
    image = image.convert("RGBA") if image.mode in ("P", "PA", "LA", "RGBA") else image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


def _tiles(photo: Image.Image, per_side: int = 2) -> list[Image.Image]:
    w, h = photo.size
    xs = [w * i // per_side for i in range(per_side + 1)]
    ys = [h * i // per_side for i in range(per_side + 1)]
    boxes = [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(per_side) for i in range(per_side)]
    return [_thumbnail(photo.crop(box)) for box in boxes]


def _save_original(image: Image.Image, path: Path) -> Path:
    """Originals carry metadata (EXIF in JPEGs, a text chunk in PNGs) so that stripping it is an edit."""
    if image.mode == "RGBA":
        path = path.with_suffix(".png")
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Description", f"original {path.stem}")
        image.save(path, pnginfo=info)
    else:
        path = path.with_suffix(".jpg")
        exif = Image.Exif()
        exif[0x010E] = f"original {path.stem}"  # ImageDescription
        image.save(path, quality=92, exif=exif)
    return path


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image).convert("RGB")


def _same_image(image: Image.Image, edit: str, rng: np.random.Generator, target: Path) -> Path:
    if edit == "reencode":
        target = target.with_suffix(".jpg")
        _flatten(image).save(target, quality=int(rng.integers(70, 96)))
    elif edit == "resize":
        scale = float(rng.uniform(0.5, 0.8))
        size = (max(16, round(image.width * scale)), max(16, round(image.height * scale)))
        resized = image.resize(size, Image.Resampling.LANCZOS)
        target = target.with_suffix(".png" if image.mode == "RGBA" else ".jpg")
        resized.save(target, **({} if image.mode == "RGBA" else {"quality": 90}))
    elif edit == "convert":
        target = target.with_suffix(".webp" if rng.random() < 0.5 else (".jpg" if image.mode == "RGBA" else ".png"))
        (image if target.suffix != ".jpg" else _flatten(image)).save(target, quality=90)
    elif edit == "strip":
        target = target.with_suffix(".png" if image.mode == "RGBA" else ".jpg")
        image.save(target, **({} if image.mode == "RGBA" else {"quality": 92}))
    else:  # flatten
        target = target.with_suffix(".png")
        _flatten(image).save(target)
    return target


def _near(image: Image.Image, edit: str, rng: np.random.Generator, target: Path) -> Path:
    rgb = _flatten(image)
    w, h = rgb.size
    if edit == "crop":
        left, top, right, bottom = (float(x) for x in rng.uniform(0.02, 0.10, size=4))
        rgb = rgb.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))
    elif edit == "tone":
        rgb = _visible_tone(rgb, rng)
    elif edit == "heavy-jpeg":
        target = target.with_suffix(".jpg")
        rgb.save(target, quality=int(rng.integers(8, 21)))
        return target
    elif edit == "turn":
        angle = float(rng.uniform(2, 5)) * (1 if rng.random() < 0.5 else -1)
        rgb = rgb.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    else:
        rgb = _watermark(rgb, rng)
    target = target.with_suffix(".jpg")
    rgb.save(target, quality=90)
    return target


def _visible_tone(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A tone edit that changes the picture (saturating a grey drawing changes nothing): retried, then forced."""
    grey = np.asarray(rgb.convert("L"), dtype=np.float32)
    for _ in range(6):
        toned = _tone(rgb, rng)
        if float(np.abs(np.asarray(toned.convert("L"), dtype=np.float32) - grey).mean()) >= VISIBLE_TONE:
            return toned
    return ImageEnhance.Brightness(rgb).enhance(0.75)


def _tone(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    kind = int(rng.integers(0, 4))
    amount = float(rng.uniform(1.12, 1.3)) ** (1 if rng.random() < 0.5 else -1)
    if kind == 0:
        return ImageEnhance.Brightness(rgb).enhance(amount)
    if kind == 1:
        return ImageEnhance.Contrast(rgb).enhance(amount)
    if kind == 2:
        return ImageEnhance.Color(rgb).enhance(amount * amount)
    table = [round(255 * (i / 255) ** amount) for i in range(256)] * 3  # gamma
    return rgb.point(table)


def _watermark(rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = rgb.size
    box_w, box_h = max(8, w // 5), max(6, h // 14)
    corner = int(rng.integers(0, 4))
    x = 4 if corner % 2 == 0 else w - box_w - 4
    y = 4 if corner < 2 else h - box_h - 4
    overlay = Image.new("RGBA", rgb.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((x, y, x + box_w, y + box_h), fill=(0, 0, 0, 110))
    draw.text((x + 3, y + 1), "(c) 2026", fill=(255, 255, 255, 230))
    return Image.alpha_composite(rgb.convert("RGBA"), overlay).convert("RGB")


def _chain_step(image: Image.Image, step: int) -> Image.Image:
    """Step n: n x 6% cut from the left and top, and n x 6% brighter: each step is a light edit of the last."""
    rgb = _flatten(image)
    w, h = rgb.size
    cut = 0.06 * step
    rgb = rgb.crop((round(w * cut), round(h * cut), w, h))
    return ImageEnhance.Brightness(rgb).enhance(1 + 0.06 * step)


def build_set(folder: Path, quick: bool = False, seed: int = 1338, kind: str = "mixed") -> list[LabelledFile]:
    """Write the labelled set into `folder` (emptied first) and return what each file is. `kind` "mixed" is
    clip art and photo tiles, a third of them copied; "wallpapers" is tiles of photographs alone, half copied;
    "variants" is the same tiles, half of them copied once with one of duplicate_variants.VARIANT_EDITS."""
    rng = np.random.default_rng(seed)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = _source_images(quick, rng) if kind == "mixed" else _distinct(_wallpaper_sources(quick))
    make_copies = _variant_copies if kind == "variants" else _copies
    share = 3 if kind == "mixed" else 2
    copied = set(int(i) for i in rng.choice(len(sources), size=len(sources) // share, replace=False))
    chained = set(int(i) for i in rng.choice(sorted(set(range(len(sources))) - copied), size=10 if quick else 40))
    files: list[LabelledFile] = []
    for number, image in enumerate(sources):
        stem = folder / f"s{number:05}"
        original = _save_original(image, stem)
        files.append(LabelledFile(str(original), number, "original", ""))
        if number in copied:
            files += make_copies(image, original, number, rng)
        if number in chained:
            for step in range(1, CHAIN_LENGTH):
                target = folder / "chains" / f"s{number:05}-step{step}.jpg"
                target.parent.mkdir(exist_ok=True)
                _chain_step(image, step).save(target, quality=90)
                files.append(LabelledFile(str(target), number, "chain", f"step{step}"))
    return files


def _copies(image: Image.Image, original: Path, number: int, rng: np.random.Generator) -> list[LabelledFile]:
    copies = original.parent / "copies"
    copies.mkdir(exist_ok=True)
    twin = copies / f"s{number:05}-identical{original.suffix}"
    shutil.copyfile(original, twin)
    same_edit = SAME_IMAGE_EDITS[int(rng.integers(len(SAME_IMAGE_EDITS)))]
    near_edit = NEAR_EDITS[int(rng.integers(len(NEAR_EDITS)))]
    same = _same_image(image, same_edit, rng, copies / f"s{number:05}-same-{same_edit}")
    near = _near(image, near_edit, rng, copies / f"s{number:05}-near-{near_edit}")
    return [
        LabelledFile(str(twin), number, "identical", "copy"),
        LabelledFile(str(same), number, "same-image", same_edit),
        LabelledFile(str(near), number, "near", near_edit),
    ]


def _variant_copies(image: Image.Image, original: Path, number: int, rng: np.random.Generator) -> list[LabelledFile]:
    """One copy with the next of the variant edits, in turn, labelled with its tier."""
    copies = original.parent / "copies"
    copies.mkdir(exist_ok=True)
    name = list(VARIANT_EDITS)[number % len(VARIANT_EDITS)]
    tier, edit, quality = VARIANT_EDITS[name]
    target = copies / f"s{number:05}-{tier}-{name}.jpg"
    edit(_flatten(image), rng).save(target, quality=quality)
    return [LabelledFile(str(target), number, tier, name)]
