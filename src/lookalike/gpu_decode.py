"""JPEG decoding on the GPU (nvJPEG through torchvision.io.decode_jpeg), with the CPU path's semantics.

On a GPU machine, decoding on the CPU is what limits ingest (12 MP JPEGs: about 240 img/s with Pillow's
draft mode on 16 cores). When torchvision is installed and CUDA is present, baseline colour JPEGs are
decoded on the GPU instead, in batches gathered from the decoding threads, and prepared as
images.decode_file prepares them: read once and hashed with the same digest, EXIF-oriented by the same
reading of the tag, then resized whole to the model's square input with an antialiased bilinear filter
(torch's antialias=True bilinear is made to match Pillow's BILINEAR resize). The one difference is that
the GPU decodes every pixel where the CPU uses draft mode; the reference path (draft=False) does the same,
and stays within cosine 0.999 of the draft one (tests/test_embedders.py).

Everything else (progressive or grey or CMYK JPEGs, other formats, big or damaged files) goes to
images.decode_file on the CPU, so every file gets exactly the CPU path's result or error. Without
torchvision or CUDA, `gpu_jpeg_decoder` returns None and nothing here imports torch.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from .errors import ImageDecodeError
from .files import read_file_bytes
from .images import IN_MEMORY_BYTES, DecodedImage, compute_content_hash, decode_file, exif_orientation

GPU_BATCH = 32  # JPEGs per nvJPEG call: 12 MP ones need about 36 MB of device memory each
GPU_MAX_MEGAPIXELS = 64.0  # bigger JPEGs are draft-decoded on the CPU rather than fully on the GPU

Item = TypeVar("Item")
Result = TypeVar("Result")
DecodeOutcome = DecodedImage | ImageDecodeError


# --- what the GPU may decode ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JpegPlan:
    """What the header of a JPEG the GPU may decode says."""

    orientation: int  # EXIF orientation, 1..8
    width: int  # after orientation, as DecodedImage records it
    height: int


def plan_jpeg(data: bytes, max_megapixels: float = GPU_MAX_MEGAPIXELS) -> JpegPlan | None:
    """Read the header only: a plan for a baseline YCbCr JPEG within `max_megapixels`, else None (use the CPU)."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
            if image.format != "JPEG" or image.mode != "RGB" or image.info.get("progressive"):
                return None
            width, height = image.size
            orientation = exif_orientation(image)
    except Exception:  # noqa: BLE001 - whatever is wrong with the file, the CPU path reports it in its words
        return None
    if width * height > max_megapixels * 1e6:
        return None
    return JpegPlan(orientation, *((width, height) if orientation < 5 else (height, width)))


# --- the preprocessing, in torch (runs on any device) -----------------------------------------------------


def orient(pixels: Any, orientation: int) -> Any:
    """Turn a (3, H, W) tensor upright as images.py does for `orientation` (Pillow's transposes, in torch)."""
    import torch

    rows, cols = -2, -1
    if orientation == 2:
        return torch.flip(pixels, (cols,))
    if orientation == 3:
        return torch.flip(pixels, (rows, cols))
    if orientation == 4:
        return torch.flip(pixels, (rows,))
    if orientation == 5:
        return pixels.transpose(rows, cols)
    if orientation == 6:
        return torch.rot90(pixels, -1, (rows, cols))
    if orientation == 7:
        return torch.flip(pixels.transpose(rows, cols), (rows, cols))
    if orientation == 8:
        return torch.rot90(pixels, 1, (rows, cols))
    return pixels


def resize_like_pillow(pixels: Any, input_size: int) -> Any:
    """(3, H, W) uint8 -> (S, S, 3) uint8: images.resize_for_model's antialiased bilinear resize, in torch."""
    import torch
    import torch.nn.functional as F

    resized = F.interpolate(
        pixels[None].float(), size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False
    )[0]
    return resized.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)


# --- gathering single-file requests from many threads into batches ----------------------------------------


class MicroBatcher(Generic[Item, Result]):
    """Runs `process` on batches of items submitted one at a time from any number of threads.

    One worker thread takes whatever has queued up (at most `max_batch`) and processes it at once;
    each caller waits only for its own item's result. With many decoding threads, batches fill
    themselves; with one, nothing waits for a batch to fill.
    """

    def __init__(self, process: Callable[[list[Item]], Sequence[Result]], max_batch: int) -> None:
        self.process = process
        self.max_batch = max(1, max_batch)
        self._queue: queue.SimpleQueue[tuple[Item, Future[Result]] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name="lookalike-gpu-decode", daemon=True)
        self._worker.start()

    def __call__(self, item: Item) -> Result:
        """Process `item` in the next batch and return its result (or raise its batch's exception)."""
        future: Future[Result] = Future()
        self._queue.put((item, future))
        return future.result()

    def close(self) -> None:
        """Stop the worker once the items already queued are done."""
        self._queue.put(None)
        self._worker.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._run(batch)

    def _run(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        try:
            results = self.process([item for item, _ in batch])
        except BaseException as error:  # noqa: BLE001 - handed to every caller of the batch, never lost
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)


# --- the decoder ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GpuJob:
    data: bytes
    plan: JpegPlan


class GpuJpegDecoder:
    """`decode_entry(path, input_size, max_megapixels)` for decoding threads: JPEGs on the GPU, the rest on the CPU."""

    def __init__(self, input_size: int, device: str = "cuda", max_batch: int = GPU_BATCH) -> None:
        self.input_size = input_size
        self.device = device
        self.decoded_on_gpu = 0  # images, and batches nvJPEG refused: only the batcher's thread counts them
        self.refused_batches = 0
        self._stream: Any = None
        self._batcher: MicroBatcher[_GpuJob, np.ndarray] = MicroBatcher(self._decode_batch, max_batch)

    def decode_entry(self, path: str, input_size: int, max_megapixels: float | None = None) -> DecodeOutcome:
        """As ingest.decode_entry: the decoded image, or the reason it could not be decoded (returned)."""
        try:
            return self._decode(path, input_size, max_megapixels)
        except ImageDecodeError as error:
            return error
        except Exception as error:  # noqa: BLE001 - one bad file must never stop the run
            return ImageDecodeError(path, f"unexpected decoder failure: {type(error).__name__}: {error}")

    def close(self) -> None:
        self._batcher.close()

    def _decode(self, path: str, input_size: int, max_megapixels: float | None) -> DecodedImage:
        try:
            data: bytes | None = read_file_bytes(path, IN_MEMORY_BYTES)
        except ImageDecodeError:
            data = None  # too big to read whole, or unreadable: the CPU path decides, and words any error
        limit = GPU_MAX_MEGAPIXELS if max_megapixels is None else min(max_megapixels, GPU_MAX_MEGAPIXELS)
        plan = plan_jpeg(data, limit) if data and input_size == self.input_size else None
        if data is None or plan is None:
            return decode_file(path, input_size, data=data, max_megapixels=max_megapixels)
        try:
            pixels = self._batcher(_GpuJob(data, plan))
        except Exception:  # noqa: BLE001 - nvJPEG refused the batch (a flavour it lacks, damage): Pillow decides
            return decode_file(path, input_size, data=data, max_megapixels=max_megapixels)
        return DecodedImage(pixels, compute_content_hash(data), plan.width, plan.height)

    def _decode_batch(self, jobs: list[_GpuJob]) -> list[np.ndarray]:
        """Decode, orient and resize a batch; the (S, S, 3) uint8 pixels come back to the host."""
        import torch

        if self._stream is None and torch.device(self.device).type == "cuda":
            # A stream of its own: waiting for the pixels must not wait for the model's work too.
            self._stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._stream) if self._stream is not None else nullcontext():
            try:
                images = self._decode_images([job.data for job in jobs])
            except Exception:
                self.refused_batches += 1
                raise
            upright = [orient(image, job.plan.orientation) for image, job in zip(images, jobs)]
            resized = torch.stack([resize_like_pillow(image, self.input_size) for image in upright])
            pixels = list(resized.cpu().numpy())
        self.decoded_on_gpu += len(jobs)
        return pixels

    def _decode_images(self, encoded: list[bytes]) -> list[Any]:
        """JPEG bytes -> (3, H, W) uint8 RGB tensors on the device, by nvJPEG."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded]
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device))


def gpu_jpeg_decoder(input_size: int, device: str = "cuda") -> GpuJpegDecoder | None:
    """A GPU JPEG decoder for `device`, or None when torchvision or a CUDA device is missing."""
    if not device.startswith("cuda") or not gpu_decoding_available():
        return None
    return GpuJpegDecoder(input_size, device)


def gpu_decoding_available() -> bool:
    """Whether torchvision (with decode_jpeg) is installed and torch sees a CUDA device."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torch
        from torchvision.io import decode_jpeg  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
