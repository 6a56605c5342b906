"""The ONNX Runtime path of an embedder: export the PyTorch network once, verified, and run it.

The network is exported into the user's cache (see embedders.cache_dir), checked against PyTorch's own
output on a seeded batch, and recorded with a receipt (its sha256); every later process loads the
export without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .embedders import EmbedderSpec, cache_dir, cpu_threads, l2_normalise, weights_digest
from .errors import EmbedderUnavailableError

ONNX_TOLERANCE = 1e-3  # max abs difference of L2-normalised features between torch and ONNX


def onnx_model_path(spec: EmbedderSpec) -> Path:
    """Where the ONNX export of `spec` is cached for this machine."""
    return cache_dir() / "models" / f"{spec.name}-{weights_digest(spec.weights_file())[:12]}.onnx"


def onnx_runner(spec: EmbedderSpec) -> Callable[[np.ndarray], np.ndarray]:
    """Run the cached ONNX export of `spec` in ONNX Runtime, on the CPU."""
    import onnxruntime

    path = ensure_onnx_export(spec)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    options.log_severity_level = 3
    # Idle ORT threads must sleep, not spin: during an ingest the decoding threads need those cores
    # (12 MP ingest on 2 cores: 93 img/s without spinning, 81 with).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in onnxruntime.get_available_providers()
    ]
    session = onnxruntime.InferenceSession(str(path), options, providers=providers[-1:])

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"pixels": batch})[0]

    return run


def ensure_onnx_export(spec: EmbedderSpec) -> Path:
    """Export `spec` to ONNX once (verified against torch), and return the cached file."""
    path = onnx_model_path(spec)
    receipt = path.with_suffix(".json")
    if path.is_file() and receipt.is_file() and _receipt_matches(path, receipt):
        return path
    export_onnx(spec, path)
    return path


def _receipt_matches(path: Path, receipt: Path) -> bool:
    try:
        recorded = json.loads(receipt.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("sha256") == _file_sha256(path)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_onnx(spec: EmbedderSpec, path: Path) -> None:
    """Export the torch network to `path` atomically, after checking ONNX Runtime agrees with torch."""
    import warnings

    import onnxruntime
    import torch

    from .storage import atomic_write_bytes

    module = spec.torch_module()
    probe = np.random.default_rng(1338).integers(0, 256, (2, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    batch = spec.normalise(probe)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + f".{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.from_numpy(batch),),
            str(scratch),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    try:
        with torch.inference_mode():
            expected = l2_normalise(module(torch.from_numpy(batch)).numpy())
        session = onnxruntime.InferenceSession(str(scratch), providers=["CPUExecutionProvider"])
        got = l2_normalise(session.run(None, {"pixels": batch})[0])
        difference = float(np.abs(expected - got).max())
        if difference > ONNX_TOLERANCE:
            raise EmbedderUnavailableError(
                f"the ONNX export of {spec.name} differs from torch by {difference:.2g}; run it with the torch engine"
            )
        data = scratch.read_bytes()
    finally:
        scratch.unlink(missing_ok=True)
    atomic_write_bytes(path, data)
    receipt = {"sha256": hashlib.sha256(data).hexdigest(), "max_abs_difference": difference, "torch": torch.__version__}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(receipt, indent=2).encode())
