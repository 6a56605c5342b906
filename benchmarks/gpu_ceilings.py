"""Ceilings for benchmarks/gpu_ingest.py: decoding alone (Pillow on all cores, nvJPEG) and the model alone."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.embedders import get_embedder_spec
from lookalike.gpu_decode import gpu_jpeg_decoder
from lookalike.images import DecodedImage, decode_file

CORES = os.cpu_count() or 1
DECODE_SAMPLE = 1200  # files per set for the decode ceilings


def _rate(count: int, started: float) -> float:
    return round(count / (time.perf_counter() - started), 1)


def decode_ceilings(sets: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """Decode-only images/s with every core: Pillow (decode_file), and the GPU decoder when there is one."""
    for name, folder in sets.items():
        files = [str(path) for path in sorted(folder.glob("*.jpg"))[:DECODE_SAMPLE]]
        with ThreadPoolExecutor(CORES) as pool:
            started = time.perf_counter()
            cpu = list(pool.map(lambda path: decode_file(path, 224), files))
            yield {"set": name, "decoder": f"pillow draft, {CORES} threads", "images_per_s": _rate(len(files), started)}
        decoder = gpu_jpeg_decoder(224, "cuda")
        if decoder is None:
            continue
        try:
            decoder.decode_entry(files[0], 224)  # nvJPEG's start-up, outside the timing
            with ThreadPoolExecutor(CORES) as pool:
                started = time.perf_counter()
                gpu = list(pool.map(decoder.decode_entry, files, [224] * len(files)))
                rate = _rate(len(files), started)
        finally:
            decoder.close()
        pairs = [(a, b) for a, b in zip(cpu, gpu) if isinstance(b, DecodedImage)]
        difference = [float(np.abs(a.pixels.astype(np.int16) - b.pixels).mean()) for a, b in pairs[:200]]
        yield {
            "set": name,
            "decoder": f"nvJPEG (torchvision), {CORES} threads",
            "images_per_s": rate,
            "decoded": len(pairs),
            "decoded_on_gpu": decoder.decoded_on_gpu,
            "refused_batches": decoder.refused_batches,
            "mean_abs_pixel_difference_vs_pillow": round(float(np.mean(difference)), 3) if difference else None,
        }


def model_ceilings() -> Iterator[dict[str, Any]]:
    """The model alone on CUDA: from device tensors, and through TorchPipeline from host uint8 pixels."""
    import torch

    from lookalike.precision import probe_pixels
    from lookalike.torch_pipeline import TorchPipeline

    spec = get_embedder_spec("efficientnet-lite0")
    module = spec.torch_module()
    photos = probe_pixels(spec.input_size)
    assert photos is not None
    host = np.concatenate([photos] * (1024 // len(photos) + 1))[:1024]  # 1,024 real photos' pixels
    for batch in (64, 256):
        for mode, dtype, channels_last in (("fp32", torch.float32, False), ("fp16-cl", torch.float16, True)):
            pipeline = TorchPipeline(copy.deepcopy(module), spec, "cuda", dtype, channels_last, chunk=batch)
            yield {
                "batch": batch,
                "mode": mode,
                "from": "device tensors",
                "images_per_s": _device_rate(pipeline, batch),
            }
            pipeline.run(host[:batch])  # warm-up
            torch.cuda.synchronize()
            started = time.perf_counter()
            pending = [pipeline.submit(host) for _ in range(4)]
            for ticket in pending:
                ticket.result()
            yield {
                "batch": batch,
                "mode": mode,
                "from": "host uint8, pipelined",
                "images_per_s": _rate(4 * len(host), started),
            }


def _device_rate(pipeline: Any, batch: int, rounds: int = 30) -> float:
    import torch

    pixels = torch.randn(batch, 3, 224, 224, device="cuda").to(pipeline.dtype)
    pixels = pixels.contiguous(memory_format=pipeline.memory_format)
    with torch.inference_mode():
        for _ in range(5):
            pipeline.module(pixels)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(rounds):
            pipeline.module(pixels)
        torch.cuda.synchronize()
    return _rate(batch * rounds, started)
