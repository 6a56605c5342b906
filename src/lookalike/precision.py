"""Reduced precision, only where it keeps the embeddings: the agreement rule.

On a GPU, fp16 with channels-last runs EfficientNet-Lite0 about twice as fast as fp32. Whether the
vectors stay the same is checked, not assumed: before a reduced precision is used, a fixed probe set
of real photographs (scikit-image's) is embedded in fp32 and in the reduced precision on the same
device, and the reduced one is accepted only if every probe's cosine to its fp32 vector is at least
MIN_COSINE. Otherwise the embedder stays in fp32 and says why.

The embedder's identity (name@weights) is the same at every precision: the rule is what makes vectors
of either precision comparable with one another, as vectors of the ONNX and torch engines are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EmbedderUnavailableError

if TYPE_CHECKING:
    from .embedders import EmbedderSpec
    from .torch_pipeline import TorchPipeline

MIN_COSINE = 0.999  # every probe's reduced-precision vector against its fp32 one
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class PrecisionDecision:
    """Which precision an embedder runs at, and the evidence for it."""

    precision: str  # "fp32", "fp16" or "bf16": what the embedder uses
    tried: str | None = None  # the reduced precision that was checked, if any
    min_cosine: float | None = None  # the worst probe's cosine to fp32
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.tried is not None and self.precision == self.tried


def probe_pixels(input_size: int) -> np.ndarray | None:
    """The probe set: scikit-image's photographs, resized as the model sees them; None without scikit-image."""
    import importlib.util

    if importlib.util.find_spec("skimage") is None:
        return None
    from .demo import SAMPLE_PHOTOS, sample_photo
    from .images import resize_for_model

    return np.stack([resize_for_model(sample_photo(name), input_size) for name in SAMPLE_PHOTOS])


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The smallest row-wise cosine between two (N, d) feature matrices (not necessarily normalised)."""
    a = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    b = candidate / np.maximum(np.linalg.norm(candidate, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(axis=1).min())


def agreement(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    probes: np.ndarray,
    threshold: float = MIN_COSINE,
) -> tuple[bool, float]:
    """The rule itself: (accepted, worst cosine) of `candidate`'s features against `reference`'s on `probes`."""
    worst = min_cosine(reference(probes), candidate(probes))
    return worst >= threshold, worst


def wanted_precision(requested: str, device: str) -> str:
    """What `requested` means on `device`: auto is fp16 on CUDA (where it pays) and fp32 elsewhere."""
    if requested not in PRECISIONS:
        raise EmbedderUnavailableError(f"unknown precision {requested!r}; choose one of: {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return requested


def choose_pipeline(
    spec: EmbedderSpec,
    module: Any,
    device: str,
    requested: str = "auto",
    chunk: int = 64,
    threshold: float = MIN_COSINE,
    probes: np.ndarray | None = None,
) -> tuple[TorchPipeline, PrecisionDecision]:
    """A pipeline for `module` on `device` at the precision the agreement rule allows, and the decision.

    `probes` (uint8 NHWC) replaces the shipped probe set, for tests.
    """
    import torch

    from .torch_pipeline import TorchPipeline

    wanted = wanted_precision(requested, device)
    reduced_module = copy.deepcopy(module) if wanted != "fp32" else None
    full = TorchPipeline(module, spec, device, chunk=chunk)
    if reduced_module is None:
        return full, PrecisionDecision("fp32", reason="fp32 asked for" if requested == "fp32" else "fp32 on the CPU")
    probes = probe_pixels(spec.input_size) if probes is None else probes
    if probes is None:
        return full, PrecisionDecision(
            "fp32", wanted, reason="no probe photos to verify reduced precision (pip install 'lookalike[demo]')"
        )
    dtype = getattr(torch, _DTYPES[wanted])
    try:
        reduced = TorchPipeline(reduced_module, spec, device, dtype=dtype, channels_last=True, chunk=chunk)
        accepted, worst = agreement(full.run, reduced.run, probes, threshold)
    except RuntimeError as error:  # a device or build without kernels for that dtype
        return full, PrecisionDecision("fp32", wanted, reason=f"{wanted} does not run here ({error})")
    verdict = f"{wanted} vs fp32 on {len(probes)} probe photos: min cosine {worst:.5f}"
    if not accepted:
        return full, PrecisionDecision("fp32", wanted, worst, f"{verdict} < {threshold}: staying in fp32")
    return reduced, PrecisionDecision(wanted, wanted, worst, f"{verdict} >= {threshold}")
