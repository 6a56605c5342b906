"""Running a torch embedder on batches of uint8 pixels, with the GPU kept busy.

The host hands over uint8 (N, S, S, 3) pixels, a quarter of the bytes of the float32 batch the model
reads; normalisation and the NHWC -> NCHW change happen on the device (on a GPU the permuted view is
already channels-last, the layout its fp16 convolutions are fastest in).

A batch is split into chunks of `chunk` images. On CUDA each chunk is copied into pinned memory and
on to the device on a stream of its own, without blocking: the host stages chunk N+1 while the device
computes chunk N, and features come back into pinned memory the same way. `submit` returns before the
device is done, so a caller can decode its next batch meanwhile and collect the vectors later. On the
CPU the same object runs with the copy a no-op, which is how its ordering is tested without a GPU.

torch is imported only inside functions: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .embedders import EmbedderSpec


class Pending:
    """Features of a submitted batch, available from `result()` (which waits for the device)."""

    @property
    def on_device(self) -> bool:
        """Whether the device may still be computing: worth doing other work before `result()`."""
        return False

    def result(self) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Ready(Pending):
    """Features computed already (engines that run synchronously)."""

    value: np.ndarray

    def result(self) -> np.ndarray:
        return self.value


@dataclass
class Mapped(Pending):
    """Another pending result with a function applied to it on collection (e.g. L2 normalisation)."""

    inner: Pending
    apply: Callable[[np.ndarray], np.ndarray]

    @property
    def on_device(self) -> bool:
        return self.inner.on_device

    def result(self) -> np.ndarray:
        return self.apply(self.inner.result())


@dataclass
class _Staged:
    pixels: Any  # uint8 NHWC tensor on the device (or still being copied there)
    ready: Any  # CUDA event recorded after the copy; None on the CPU


@dataclass
class _InFlight(Pending):
    """Feature chunks being copied back to the host; `done` fires when the last copy has landed."""

    parts: list[Any]  # float32 host tensors (pinned on CUDA)
    done: Any  # CUDA event, or None on the CPU

    @property
    def on_device(self) -> bool:
        return self.done is not None

    def result(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return np.concatenate([part.numpy() for part in self.parts])


class TorchPipeline:
    """A torch network on one device, at one precision: uint8 NHWC batches in, float32 features out."""

    def __init__(
        self,
        module: Any,
        spec: EmbedderSpec,
        device: str,
        dtype: Any = None,
        channels_last: bool = False,
        chunk: int = 64,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = dtype or torch.float32
        self.channels_last = channels_last
        self.chunk = max(1, chunk)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device=self.device, dtype=self.dtype, memory_format=self.memory_format).eval()
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(shape)
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        if self.cuda:
            # Batch shapes repeat for a whole ingest: let cuDNN pick its fastest kernels once per shape.
            torch.backends.cudnn.benchmark = True

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Features of a uint8 (N, S, S, 3) batch, waiting for them."""
        return self.submit(pixels).result()

    def submit(self, pixels: np.ndarray) -> Pending:
        """Start computing the features of a uint8 (N, S, S, 3) batch; `.result()` waits for them."""
        if len(pixels) == 0:
            return Ready(np.zeros((0, 0), dtype=np.float32))
        return self.submit_chunks([pixels[start : start + self.chunk] for start in range(0, len(pixels), self.chunk)])

    def submit_chunks(self, chunks: Sequence[np.ndarray]) -> Pending:
        """The double buffer: chunk N+1 is staged while chunk N computes; results keep the chunks' order."""
        import torch

        parts: list[Any] = []
        with torch.inference_mode():
            staged = self._stage(chunks[0])
            for number in range(len(chunks)):
                features = self._compute(staged)  # queued on the device: returns at once on CUDA
                if number + 1 < len(chunks):
                    staged = self._stage(chunks[number + 1])  # the host's copy overlaps that computation
                parts.append(self._fetch(features))
            done = None
            if self.cuda:
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(self.device))
        return _InFlight(parts, done)

    def _stage(self, pixels: np.ndarray) -> _Staged:
        """Start moving a chunk to the device: through pinned memory on the copy stream, without blocking."""
        import torch

        source = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8))
        if not self.cuda:
            return _Staged(source, None)
        # torch's caching host allocator hands out pinned blocks and keeps one from reuse until the copy
        # that reads it has finished, so a block is never overwritten while the device still reads it.
        pinned = torch.empty(source.shape, dtype=torch.uint8, pin_memory=True)
        pinned.copy_(source)
        with torch.cuda.stream(self.copy_stream):
            on_device = pinned.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.copy_stream)
        return _Staged(on_device, ready)

    def _compute(self, staged: _Staged) -> Any:
        """Queue normalisation and the forward pass of a staged chunk on the compute stream."""
        import torch

        pixels = staged.pixels
        if staged.ready is not None:
            compute_stream = torch.cuda.current_stream(self.device)
            compute_stream.wait_event(staged.ready)
            # Allocated on the copy stream, used on this one: the allocator must not recycle it early.
            pixels.record_stream(compute_stream)
        # The same arithmetic as EmbedderSpec.normalise, in float32, before any cast to reduced precision.
        batch = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
        batch = batch.to(self.dtype).contiguous(memory_format=self.memory_format)
        return self.module(batch)

    def _fetch(self, features: Any) -> Any:
        """Start copying a chunk's features back to the host as float32."""
        import torch

        if not self.cuda:
            return features.float()
        host = torch.empty(features.shape, dtype=torch.float32, pin_memory=True)
        # Cast on the device first: a copy that also converts would not be asynchronous.
        host.copy_(features.float(), non_blocking=True)
        return host
