"""Ingest on a GPU: end-to-end speed per device, embedding agreement with the CPU path, and the ceilings.

    python benchmarks/gpu_ingest.py --out gpu-ingest.json          # on a machine with CUDA; ~5 min on 16 cores
    python benchmarks/gpu_ingest.py --n12 40 --nweb 80 --quick     # a look at the plumbing (also without a GPU)

Prints one JSON object per measurement as it goes (a run cut short keeps what it printed) and writes
them all to --out. What it measures:
- `lookalike index` (a fresh process, as a user runs it) with --device cuda, cpu and auto, on 12 MP
  and 800x600 JPEG sets made from real photos on all cores; whether auto was the fastest;
- the embedder --device auto loads: its precision decision (fp16 agreement on the probe photos);
- cosine per image between the CUDA and the CPU catalogs (same files);
- in-process, on CUDA (on the CPU without one): Collection.add_folder with the model loaded in the same process
  (GPU JPEG decoding when torchvision is installed, batches of 256, the model overlapped with committing), and
  that catalog's cosines to the CPU one;
- ceilings: the model alone on the GPU (fp32 and fp16 channels-last, batch 64 and 256, from device
  tensors and through TorchPipeline from host uint8 pixels), Pillow draft decoding on all cores, and
  GPU JPEG decoding when torchvision is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_ceilings import decode_ceilings, model_ceilings  # noqa: E402

CORES = os.cpu_count() or 1
RESULTS: list[dict[str, Any]] = []


def record(**values: Any) -> None:
    """Print one measurement as a JSON line (flushed at once) and keep it for --out."""
    RESULTS.append(values)
    print(json.dumps(values), flush=True)


# --- photo sets, made on all cores -------------------------------------------------------------------------

_SOURCES: list[Any] = []


def _load_sources() -> None:
    from photosets import source_photos

    _SOURCES[:] = source_photos()


def _make_one(job: tuple[str, int, int, int]) -> None:
    from PIL import Image

    from photosets import variation

    folder, number, width, height = job
    rng = np.random.default_rng(number)
    image = variation(_SOURCES[number % len(_SOURCES)], (width, height), rng)
    # Sensor-like noise, so JPEG sizes (and decoding costs) are those of photos, not of smooth upscales.
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(f"{folder}/img{number:06}.jpg", quality=90)


def make_set(folder: Path, count: int, width: int, height: int) -> Path:
    """`count` JPEGs of width x height in `folder` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) != count:
        with Pool(CORES, initializer=_load_sources) as pool:
            pool.map(_make_one, [(str(folder), n, width, height) for n in range(count)], chunksize=8)
    return folder


# --- lookalike index, as a user runs it --------------------------------------------------------------------


def cli_index(folder: Path, index: Path, device: str) -> dict[str, Any]:
    """Run `lookalike index` in a fresh process; its summary's rate and the process's wall time."""
    shutil.rmtree(index, ignore_errors=True)
    command = [sys.executable, "-m", "lookalike.cli", "index", str(folder), "--index", str(index), "--device", device]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    summary = next((line for line in done.stdout.splitlines() if "files scanned" in line), "")
    rate = summary.split(" s, ")[-1].split(" images/s")[0] if "images/s" in summary else None
    return {
        "images_per_s": float(rate) if rate else None,
        "wall_s": round(wall, 2),
        "files_per_wall_s": round(len(list(folder.glob("*.jpg"))) / wall, 1),
        "summary": summary or done.stderr[-400:],
    }


def catalog_vectors(index: Path) -> dict[str, np.ndarray]:
    """Path -> stored vector of every indexed image of an index folder."""
    from lookalike.catalog import Catalog

    catalog = Catalog.open(index)
    try:
        vectors: dict[str, np.ndarray] = {}
        for ids, rows in catalog.iter_embeddings():
            paths = catalog.indexed_paths(ids.tolist())
            vectors.update({paths[i]: row for i, row in zip(ids.tolist(), rows) if i in paths})
        return vectors
    finally:
        catalog.close()


def agreement(reference: Path, other: Path) -> dict[str, Any]:
    """Cosine per image between two catalogs of the same files."""
    a, b = catalog_vectors(reference), catalog_vectors(other)
    common = sorted(set(a) & set(b))
    cosine = np.array([float(a[path] @ b[path]) for path in common])
    return {
        "reference": reference.name,
        "other": other.name,
        "common": len(common),
        "n_reference": len(a),
        "n_other": len(b),
        "cos_min": round(float(cosine.min()), 6) if len(cosine) else None,
        "cos_mean": round(float(cosine.mean()), 6) if len(cosine) else None,
        "below_0.999": int((cosine < 0.999).sum()),
    }


# --- in process: add_folder with the model in this process -------------------------------------------------


def in_process(folder: Path, index: Path, device: str) -> dict[str, Any]:
    """Index `folder` in this process (model load included)."""
    import lookalike

    shutil.rmtree(index, ignore_errors=True)
    started = time.perf_counter()
    with lookalike.Collection.create(index, device=device) as collection:
        report = collection.add_folder(folder)
        embedder = collection.embedder()
    seconds = time.perf_counter() - started
    return {
        "images_per_s": round(report.embedded / seconds, 1),
        "embedded": report.embedded,
        "skipped": len(report.skipped),
        "precision": embedder.precision.precision,
        "gpu_decoding": embedder.file_decoder() is not None,
    }


# --- the run ------------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import importlib.util

    import torch

    from lookalike.faiss_gpu import gpu_count
    from lookalike.gpu_decode import gpu_decoding_available

    return {
        "cores": CORES,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torchvision": importlib.util.find_spec("torchvision") is not None,
        "gpu_jpeg_decoding": gpu_decoding_available(),
        "faiss_gpus": gpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n12", type=int, default=1200, help="12 MP JPEGs (4000x3000)")
    parser.add_argument("--nweb", type=int, default=4000, help="800x600 JPEGs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookalike-gpu-ingest"))
    parser.add_argument("--out", type=Path, help="write every measurement here as a JSON list")
    parser.add_argument("--quick", action="store_true", help="skip the ceilings")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    # The sets first: their worker processes are forked before this process starts CUDA.
    sets = {"12mp": make_set(args.work / "12mp", args.n12, 4000, 3000)}
    sets["800x600"] = make_set(args.work / "800x600", args.nweb, 800, 600)
    record(step="environment", **environment())
    record(step="photo sets", **{name: len(list(folder.glob("*.jpg"))) for name, folder in sets.items()})
    cli_index(sets["800x600"], args.work / "warm", "cpu")  # the ONNX export, once, outside the timings
    if cuda:
        from lookalike import load_embedder

        started = time.perf_counter()
        embedder = load_embedder(device="cuda")
        decision = embedder.precision
        record(step="precision on cuda", load_s=round(time.perf_counter() - started, 2), **decision.__dict__)
    devices = ("cuda", "cpu", "auto") if cuda else ("cpu", "auto")
    for name, folder in sets.items():
        rates = {}
        for device in devices:
            result = cli_index(folder, args.work / f"{name}-{device}", device)
            rates[device] = result["files_per_wall_s"]
            record(step="lookalike index", set=name, device=device, **result)
        fastest = max(rates, key=lambda device: rates[device])
        record(
            step="auto vs fastest",
            set=name,
            fastest=fastest,
            files_per_wall_s=rates,
            auto_within_5pct=rates["auto"] >= 0.95 * rates[fastest],
        )
        if cuda:
            record(step="agreement", set=name, **agreement(args.work / f"{name}-cpu", args.work / f"{name}-cuda"))
        device = "cuda" if cuda else "cpu"  # without a GPU this checks the plumbing
        result = in_process(folder, args.work / f"{name}-in-process", device)
        record(step=f"in-process {device}", set=name, **result)
        record(step="agreement", set=name, **agreement(args.work / f"{name}-cpu", args.work / f"{name}-in-process"))
    if not args.quick:
        for values in decode_ceilings(sets):
            record(step="decode ceiling", **values)
        if cuda:
            for values in model_ceilings():
                record(step="model ceiling", **values)
    if args.out:
        args.out.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
