"""The ingest hooks of the GPU path, applied in a subclass, so their effect is measured before ingest uses them.

Three changes to Ingester, each a few lines there (see docs/benchmarks.md, "Ingest on a GPU"):
- decoding threads call the embedder's file decoder (JPEGs on the GPU) when it has one;
- batches are the embedder's forward batch (256 on CUDA) rather than the 32 the CLI passes;
- a batch is submitted to the model and committed only after the next one has been submitted, so the
  GPU computes while the main thread gathers (and the threads decode) the next batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from lookalike.embedders import Embedder
from lookalike.errors import ImageDecodeError
from lookalike.files import FileEntry
from lookalike.images import DecodedImage
from lookalike.ingest import INLINE_LIMIT, READ_AHEAD, Ingester, decode_entry, signature_of
from lookalike.torch_pipeline import Pending


class HookedIngester(Ingester):
    """Ingester with the GPU path's hooks (benchmark only: the library's Ingester is unchanged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: tuple[list, Pending] | None = None
        self.gpu_decoding = False

    def _embedder_now(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.load_embedder()
        return self._embedder

    def _decode_all(
        self, todo: Iterator[FileEntry], total: int
    ) -> Iterator[tuple[FileEntry, DecodedImage | ImageDecodeError]]:
        # Hook 1: the embedder's decoder (GPU JPEG decoding), else the CPU's; otherwise Ingester._decode_all.
        decode: Callable[..., DecodedImage | ImageDecodeError] = self._embedder_now().file_decoder() or decode_entry
        self.gpu_decoding = decode is not decode_entry
        if total < INLINE_LIMIT or self.workers <= 1:
            for entry in todo:
                yield entry, decode(entry.path, self.input_size, self.max_megapixels)
            return
        window: deque[tuple[FileEntry, Future]] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="lookalike-decode") as pool:
            for entry in todo:
                window.append((entry, pool.submit(decode, entry.path, self.input_size, self.max_megapixels)))
                if len(window) >= self.workers * READ_AHEAD:
                    done, future = window.popleft()
                    yield done, future.result()
            while window:
                done, future = window.popleft()
                yield done, future.result()

    def _process(self) -> None:
        # Hook 2: batches of the model's size.
        self.batch_size = max(self.batch_size, self._embedder_now().forward_batch)
        super()._process()
        self._embed_and_store([])  # commit the batch still in flight

    def _embed_and_store(self, batch: list) -> None:
        # Hook 3: submit this batch, then commit the previous one while the device computes this one.
        previous, self._in_flight = self._in_flight, None
        if batch:
            pixels = np.stack([item.decoded.pixels for item in batch])
            self._in_flight = (batch, self._embedder_now().submit(pixels))
        if previous is not None:
            self._store(*previous)

    def _store(self, batch: list, pending: Pending) -> None:
        from lookalike.ingest import _new_image

        vectors = pending.result()
        self.catalog.add_indexed(
            [
                _new_image(item.entry, item.decoded, vector, signature_of(item.entry.path, item.decoded))
                for item, vector in zip(batch, vectors)
            ]
        )
        self.report.embedded += len(batch)
