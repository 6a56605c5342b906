"""What the GPU path's agreement checks give on the CPU, where torch also has fp16 and bf16 kernels.

    python benchmarks/gpu_agreement_cpu.py

- the agreement rule's decision for fp16 and bf16 (channels-last) on the probe photos;
- fp16 against fp32 on other real photos (seeded crops of scikit-image's, as JPEGs, decoded as ingest does);
- the GPU decoder's preprocessing in torch (EXIF orientation, antialiased bilinear resize of the full decode)
  against images.decode_file's draft path (what ingest uses on the CPU) and reference path (full decode),
  through the model, and the draft path against the reference path, for scale.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from lookalike import load_embedder
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.gpu_decode import orient, plan_jpeg, resize_like_pillow
from lookalike.images import decode_file
from lookalike.precision import min_cosine

HELD_OUT = 24  # crops per source photo set


def held_out_jpegs() -> list[bytes]:
    """Seeded 1600x1200 crops of the sample photos, as JPEGs with every EXIF orientation."""
    rng = np.random.default_rng(7)
    jpegs = []
    for number in range(HELD_OUT):
        image = sample_photo(SAMPLE_PHOTOS[number % len(SAMPLE_PHOTOS)])
        width, height = image.size
        left, top = int(rng.integers(0, width // 4)), int(rng.integers(0, height // 4))
        crop = image.crop((left, top, left + width * 3 // 4, top + height * 3 // 4))
        exif = Image.Exif()
        exif[0x0112] = number % 8 + 1
        buffer = io.BytesIO()
        crop.resize((1600, 1200), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90, exif=exif)
        jpegs.append(buffer.getvalue())
    return jpegs


def torch_preprocessing(data: bytes) -> np.ndarray:
    """The GPU decoder's steps after nvJPEG, with Pillow's full decode standing in for it."""
    import torch

    plan = plan_jpeg(data)
    assert plan is not None
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)
    return resize_like_pillow(orient(pixels, plan.orientation), 224).numpy()


def main() -> None:
    fp32 = load_embedder(device="cpu", engine="torch", precision="fp32")
    results: dict[str, object] = {}
    for precision in ("fp16", "bf16"):
        decision = load_embedder(device="cpu", engine="torch", precision=precision).precision
        results[f"{precision} rule"] = {
            "used": decision.precision,
            "probe min cosine": round(decision.min_cosine or 0, 6),
        }
    jpegs = held_out_jpegs()
    cpu_path = np.stack([decode_file(f"photo{n}.jpg", 224, data=data).pixels for n, data in enumerate(jpegs)])
    fp16 = load_embedder(device="cpu", engine="torch", precision="fp16")
    results["fp16 vs fp32, held-out photos, min cosine"] = round(
        min_cosine(fp32.embed(cpu_path), fp16.embed(cpu_path)), 6
    )
    reference = np.stack([decode_file("photo.jpg", 224, data=data, draft=False).pixels for data in jpegs])
    results["draft vs reference (full decode) path, fp32: min cosine"] = round(
        min_cosine(fp32.embed(reference), fp32.embed(cpu_path)), 6
    )
    gpu_path = np.stack([torch_preprocessing(data) for data in jpegs])
    results["torch preprocessing vs reference path, fp32: min cosine"] = round(
        min_cosine(fp32.embed(reference), fp32.embed(gpu_path)), 6
    )
    difference = np.abs(gpu_path.astype(np.int16) - cpu_path)
    results["torch preprocessing vs draft path: mean abs pixel difference"] = round(float(difference.mean()), 3)
    results["torch preprocessing vs draft path: min cosine (fp32)"] = round(
        min_cosine(fp32.embed(cpu_path), fp32.embed(gpu_path)), 6
    )
    results["torch preprocessing + fp16 vs draft path + fp32: min cosine"] = round(
        min_cosine(fp32.embed(cpu_path), fp16.embed(gpu_path)), 6
    )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
