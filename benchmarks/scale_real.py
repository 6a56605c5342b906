"""Tens of thousands of real EfficientNet-Lite0 embeddings, for fitting and checking the scale generator.

    python benchmarks/scale_real.py --count 30000

Sources, all shipped by installed packages (nothing is fetched): the photographs under
/usr/share/backgrounds and /usr/share/wallpapers (Debian/Ubuntu wallpapers), scikit-image's photos and its
LFW face subset, and as non-photos the clip art of openclipart and tuxpaint's stamps. Each photo gives many
distinct images: random crops anywhere from 3% to 100% of its area (so most crops of one wallpaper show
different regions and are not near-copies of each other), flips, rotations, colour/brightness/contrast
changes, blur and JPEG re-encoding at a random quality. Clip art is embedded as is and with one variant.

Every image is embedded with the real model (`lookalike.load_embedder()`, the ONNX engine when installed)
at its 224 x 224 input; the result is cached as .npy in the work folder, never in git.
"""

from __future__ import annotations

import argparse
import glob
import io
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

PHOTO_GLOBS = ("/usr/share/backgrounds/**/*", "/usr/share/wallpapers/**/*")
CLIPART_GLOBS = ("/usr/share/openclipart/**/*.png", "/usr/share/tuxpaint/stamps/**/*.png")
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
WORK_SIDE = 768  # photos are decoded once and kept at this long side: crops stay fast, 224-px inputs stay sharp


def _open(path: str, side: int) -> Image.Image | None:
    try:
        image = Image.open(path)
        image.draft("RGB", (side, side))
        image = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return image if min(image.size) >= 64 else None


def photo_sources() -> list[Image.Image]:
    """Wallpaper photographs (deduplicated by name stem: several sizes of one wallpaper) and scikit-image's."""
    import skimage.data

    from lookalike.demo import SAMPLE_PHOTOS, sample_photo

    seen, photos = set(), []
    for pattern in PHOTO_GLOBS:
        for path in sorted(glob.glob(pattern, recursive=True)):
            p = Path(path)
            stem = p.stem.split(".")[0].lower()
            if p.suffix.lower() not in PHOTO_SUFFIXES or stem in seen or p.stat().st_size < 30_000:
                continue  # tiny files are icons, previews and gradients
            image = _open(path, WORK_SIDE)
            if image is not None:
                seen.add(stem)
                photos.append(image)
    photos += [sample_photo(name) for name in SAMPLE_PHOTOS]
    photos += [Image.fromarray(side).convert("RGB") for side in skimage.data.stereo_motorcycle()[:2]]
    return photos


def clipart_sources(limit: int, rng: np.random.Generator) -> list[Image.Image]:
    paths = sorted(p for pattern in CLIPART_GLOBS for p in glob.glob(pattern, recursive=True))
    picks = rng.permutation(len(paths))[:limit]
    out = []
    for i in sorted(picks):
        try:
            image = Image.open(paths[i])
            if image.width * image.height > 4_000_000:
                continue  # a few posters are hundreds of megapixels: slow to decode, and art like the rest
            image = image.convert("RGBA")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))  # transparent art on white, as shown
        out.append(Image.alpha_composite(background, image).convert("RGB"))
    return out


def variant(image: Image.Image, rng: np.random.Generator, min_area: float = 0.03) -> Image.Image:
    """A random crop (3-100% of the area, any aspect 1:2..2:1) with photometric and encoding changes."""
    w, h = image.size
    area = math.exp(rng.uniform(math.log(min_area), 0.0))  # log-uniform: as many small crops as large ones
    aspect = math.exp(rng.uniform(-0.7, 0.7))
    cw = int(min(w, max(32, w * math.sqrt(area * aspect))))
    ch = int(min(h, max(32, h * math.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    if rng.random() < 0.25:
        out = out.rotate(float(rng.uniform(-30, 30)), resample=Image.Resampling.BILINEAR, expand=False)
    out = ImageEnhance.Color(out).enhance(float(rng.uniform(0.4, 1.6)))
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.6, 1.4)))
    out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.7, 1.3)))
    if rng.random() < 0.2:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        out.save(buffer, "JPEG", quality=int(rng.integers(30, 95)))
        out = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return out


def images(count: int, seed: int):
    """Yield (image, group) pairs: ~85% photo crops spread over every photo, the rest clip art."""
    rng = np.random.default_rng(seed)
    photos = photo_sources()
    faces = [Image.fromarray(face).convert("RGB") for face in __import__("skimage.data").data.lfw_subset()]
    clip = clipart_sources(int(count * 0.1), rng)
    n_faces = min(len(faces) * 3, int(count * 0.05))
    n_clip = min(len(clip) * 2, count - int(count * 0.85) - n_faces)
    n_photo = count - n_faces - n_clip
    for i in range(n_photo):
        yield variant(photos[i % len(photos)], rng), "photo"
    for i in range(n_faces):
        face = faces[i % len(faces)]
        yield (face if i < len(faces) else variant(face, rng, 0.5)), "face"
    for i in range(n_clip):
        art = clip[i % len(clip)]
        yield (art if i < len(clip) else variant(art, rng, 0.3)), "clipart"


def real_embeddings(cache: Path, count: int, seed: int = 17) -> np.ndarray:
    """`count` real embeddings (float32, unit length), cached as real-{count}-{seed}.npy in `cache`."""
    path = cache / f"real-{count}-{seed}.npy"
    if path.is_file():
        return np.load(path)
    import lookalike
    from lookalike.images import resize_for_model

    embedder = lookalike.load_embedder()
    size = embedder.input_size
    vectors, batch, started = [], [], time.perf_counter()
    for number, (image, _) in enumerate(images(count, seed), 1):
        batch.append(resize_for_model(image, size))
        if len(batch) == 64 or number == count:
            vectors.append(embedder.embed(np.stack(batch)))
            batch = []
        if number % 2048 == 0:
            print(f"  {number}/{count} embedded, {time.perf_counter() - started:.0f} s", flush=True)
    result = np.concatenate(vectors).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-scale")
    args = parser.parse_args()
    started = time.perf_counter()
    vectors = real_embeddings(args.workdir, args.count)
    print(f"{len(vectors)} embeddings in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
