"""GPU JPEG decoding: its preprocessing against images.decode_file's, and its absence handled, on the CPU.

nvJPEG itself needs torchvision and a CUDA device (benchmarks/gpu_ingest.py checks it there). Everything
around it runs here: which files may go to the GPU, the EXIF orientation and the resize in torch, the
batching of requests from many threads, hashing and sizes, and the CPU fallback, with Pillow's full
decode standing in for nvJPEG's.
"""

from __future__ import annotations

import importlib.util
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike import load_embedder
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.embedders import Embedder, get_embedder_spec
from lookalike.gpu_decode import (
    GpuJpegDecoder,
    MicroBatcher,
    gpu_decoding_available,
    gpu_jpeg_decoder,
    orient,
    plan_jpeg,
    resize_like_pillow,
)
from lookalike.images import DecodedImage, decode_file

ORIENTATION_TAG = 0x0112


class PillowStandIn(GpuJpegDecoder):
    """The GPU decoder with Pillow's full decode where nvJPEG would run, on the CPU."""

    def __init__(self, input_size: int, max_batch: int = 4) -> None:
        super().__init__(input_size, device="cpu", max_batch=max_batch)
        self.batch_sizes: list[int] = []

    def _decode_images(self, encoded: list[bytes]) -> list[Any]:
        import torch

        self.batch_sizes.append(len(encoded))
        return [
            torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)
            for data in encoded
        ]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real photos as 1600x1200 JPEGs, each with another EXIF orientation (1..8), and one progressive."""
    folder = tmp_path_factory.mktemp("gpu-decode")
    paths = []
    for number, name in enumerate(SAMPLE_PHOTOS[:9]):
        image = sample_photo(name).resize((1600, 1200), Image.Resampling.BICUBIC)
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = number % 8 + 1
        path = folder / f"photo{number}.jpg"
        image.save(path, quality=90, exif=exif, progressive=number == 8)
        paths.append(path)
    return paths


def test_orientation_matches_pillow_for_every_exif_value() -> None:
    import torch

    from lookalike.images import _UPRIGHT

    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)  # not square, no symmetry
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    for orientation in range(1, 9):
        expected = Image.fromarray(pixels)
        if orientation in _UPRIGHT:
            expected = expected.transpose(_UPRIGHT[orientation])
        got = orient(tensor, orientation).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, np.asarray(expected), err_msg=f"orientation {orientation}")


def test_the_torch_resize_is_pillows_bilinear_resize() -> None:
    # Off by one grey level at most (rounding), for a minority of the values.
    import torch

    for name in SAMPLE_PHOTOS[:6]:
        image = sample_photo(name).resize((1600, 1200), Image.Resampling.BICUBIC)
        expected = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.int16)
        got = resize_like_pillow(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1), 224).numpy()
        difference = np.abs(got.astype(np.int16) - expected)
        assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
        assert difference.max() <= 1 and difference.mean() < 0.15, (name, difference.max(), difference.mean())


def test_only_baseline_colour_jpegs_are_planned_for_the_gpu(photos: list[Path]) -> None:
    plan = plan_jpeg(photos[5].read_bytes())  # orientation 6: a quarter turn
    assert plan is not None and plan.orientation == 6 and (plan.width, plan.height) == (1200, 1600)
    assert plan_jpeg(photos[8].read_bytes()) is None  # progressive
    grey, png = io.BytesIO(), io.BytesIO()
    sample_photo("camera").convert("L").save(grey, format="JPEG")
    sample_photo("camera").save(png, format="PNG")
    assert plan_jpeg(grey.getvalue()) is None and plan_jpeg(png.getvalue()) is None
    assert plan_jpeg(b"\xff\xd8\xff garbage") is None
    assert plan_jpeg(photos[0].read_bytes(), max_megapixels=1.0) is None  # 1.9 MP: too big for that limit


def test_decoder_gives_what_decode_file_gives(photos: list[Path], embedder) -> None:
    decoder = PillowStandIn(224)
    try:
        results = [decoder.decode_entry(str(path), 224) for path in photos]
    finally:
        decoder.close()
    references = [decode_file(str(path), 224) for path in photos]
    for result, reference in zip(results, references):
        assert isinstance(result, DecodedImage)
        assert (result.content_hash, result.width, result.height) == (
            reference.content_hash,
            reference.width,
            reference.height,
        )
    assert sum(decoder.batch_sizes) == len(photos) - 1  # the progressive one went to the CPU
    assert decoder.decoded_on_gpu == len(photos) - 1 and decoder.refused_batches == 0
    # The GPU decodes every pixel, as decode_file's reference path (draft=False) does: through the real model
    # they agree to 0.999. Against the draft path they differ by what draft mode itself moves (on a dark,
    # low-contrast photo, scikit-image's moon, draft vs reference is 0.9989; benchmarks/gpu_agreement_cpu.py).
    ours = embedder.embed(np.stack([r.pixels for r in results if isinstance(r, DecodedImage)]))
    full = [decode_file(str(path), 224, draft=False) for path in photos]
    reference = (ours * embedder.embed(np.stack([r.pixels for r in full]))).sum(axis=1)
    assert reference.min() >= 0.999, reference
    draft = (ours * embedder.embed(np.stack([r.pixels for r in references]))).sum(axis=1)
    assert draft.min() >= 0.997, draft


def test_errors_and_other_formats_take_the_cpu_path(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    sample_photo("coffee").save(tmp_path / "coffee.png")
    decoder = PillowStandIn(224)
    try:
        empty, broken, png, missing = (
            decoder.decode_entry(str(tmp_path / name), 224)
            for name in ("empty.jpg", "broken.jpg", "coffee.png", "gone")
        )
    finally:
        decoder.close()
    assert "empty file" in getattr(empty, "reason", "")
    assert getattr(broken, "reason", "").startswith(("not an image", "corrupt"))
    assert isinstance(png, DecodedImage) and png.pixels.shape == (224, 224, 3)
    assert getattr(missing, "reason", "")
    assert decoder.batch_sizes == []


def test_micro_batcher_answers_every_thread_with_its_own_result() -> None:
    sizes: list[int] = []

    def square(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [item * item for item in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(square, max_batch=5)
    answers: dict[int, int] = {}

    def ask(start: int) -> None:
        for item in range(start, start + 50):
            answers[item] = batcher(item)

    threads = [threading.Thread(target=ask, args=(start,)) for start in range(0, 400, 50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert answers == {item: item * item for item in range(400)}
    assert sum(sizes) == 400 and max(sizes) <= 5


def test_a_failing_batch_fails_its_callers_only() -> None:
    def fussy(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("unlucky")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(fussy, max_batch=1)
    with pytest.raises(RuntimeError, match="unlucky"):
        batcher(13)
    assert batcher(12) == 12
    batcher.close()


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_without_torchvision_there_is_no_gpu_decoder_and_the_cpu_decodes() -> None:
    assert not gpu_decoding_available()
    assert gpu_jpeg_decoder(224, "cuda") is None
    # An embedder on CUDA asks for a GPU decoder and, without torchvision, is told to decode on the CPU.
    on_cuda = Embedder(get_embedder_spec("colour-layout"), lambda batch: batch, "numpy", "cuda")
    assert on_cuda.file_decoder() is None and on_cuda.file_decoder() is None
    assert load_embedder("colour-layout").file_decoder() is None
