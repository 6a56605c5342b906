"""Where the model runs: resolving `--device`, and how many images each device takes per forward pass.

`--device auto` is a rule, not a measurement: CUDA whenever a CUDA build of torch and an NVIDIA device
are present, else the CPU. A measurement at start-up would cost more than it could save (importing torch
and starting CUDA take seconds, as long as a small ingest), and with the model on the GPU every core is
left to decoding, which is what limits ingest on either device. benchmarks/gpu_ingest.py checks the
rule: it times `lookalike index` with cuda, cpu and auto, and reports whether auto was the fastest.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import EmbedderUnavailableError

# Images per forward pass. On CPU, small batches keep activations in cache: EfficientNet-Lite0 in ONNX Runtime
# ran 365 img/s at batch 4 and 268 img/s at batch 32 on 2 cores (benchmarks/ingest.py measures the ceiling).
# On a GPU, big batches fill the device: the model alone on an H200 ran about 9,900 img/s in fp32 at batch 64
# and 20,000 in fp16 channels-last at batch 256 (benchmarks/gpu_ingest.py measures both batch sizes).
FORWARD_BATCH = {("onnx", "cpu"): 4, ("torch", "cpu"): 4, ("onnx", "cuda"): 64, ("torch", "cuda"): 256}
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a CUDA build of torch and an NVIDIA device are present, else 'cpu'."""
    if device not in DEVICES:
        raise EmbedderUnavailableError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "auto":
        return "cuda" if _cuda_likely() else "cpu"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise EmbedderUnavailableError("--device cuda was asked for, but torch sees no CUDA device")
    return device


def _cuda_likely() -> bool:
    # Decided without importing torch (2 s): a CUDA build of torch and a device node.
    if not os.path.exists("/dev/nvidia0"):
        return False
    import importlib.util

    found = importlib.util.find_spec("torch")
    if found is None or not found.submodule_search_locations:
        return False
    version_file = Path(list(found.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_file.read_text()
    except OSError:
        return False
    return re.search(r"^cuda\s*[:=].*['\"]\d", text, re.MULTILINE) is not None


def onnxruntime_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None
