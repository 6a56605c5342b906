"""The torch pipeline's batching and ordering, on the CPU (where the double buffer's copy is a no-op).

On CUDA the same code stages chunk N+1 through pinned memory while chunk N computes; what it computes
and in which order is what these tests pin down, against the plain path: normalise on the host, one
forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike import load_embedder
from lookalike.embedders import get_embedder_spec
from lookalike.precision import probe_pixels
from lookalike.torch_pipeline import TorchPipeline

SPEC = get_embedder_spec("efficientnet-lite0")


@pytest.fixture(scope="module")
def module():
    return SPEC.torch_module()


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    pixels = probe_pixels(224)
    assert pixels is not None
    return pixels  # 14 real photos


@pytest.fixture(scope="module")
def plain(module, photos: np.ndarray) -> np.ndarray:
    """Features the simple way: host normalisation, the whole batch at once."""
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(SPEC.normalise(photos))).numpy()


@pytest.mark.parametrize("chunk", [1, 4, 5, 64])
def test_chunked_pipeline_equals_the_plain_path_in_order(module, photos: np.ndarray, plain: np.ndarray, chunk) -> None:
    features = TorchPipeline(module, SPEC, "cpu", chunk=chunk).run(photos)
    assert features.shape == plain.shape and features.dtype == np.float32
    np.testing.assert_allclose(features, plain, rtol=1e-4, atol=1e-4)
    # Each row is its own photo's: no chunk was dropped, repeated or reordered.
    assert (np.argmax(features @ plain.T, axis=1) == np.arange(len(photos))).all()


def test_submitted_batches_are_collected_in_any_order(module, photos: np.ndarray, plain: np.ndarray) -> None:
    pipeline = TorchPipeline(module, SPEC, "cpu", chunk=3)
    batches = [(0, 5), (5, 6), (6, 14)]
    pending = [pipeline.submit(photos[start:end]) for start, end in batches]
    for (start, end), ticket in reversed(list(zip(batches, pending))):
        np.testing.assert_allclose(ticket.result(), plain[start:end], rtol=1e-4, atol=1e-4)


def test_embedder_submit_gives_what_embed_gives(photos: np.ndarray) -> None:
    for embedder in (load_embedder(device="cpu", engine="torch"), load_embedder(device="cpu", engine="onnx")):
        first, second = embedder.submit(photos[:7]), embedder.submit(photos[7:])
        vectors = np.concatenate([first.result(), second.result()])
        np.testing.assert_allclose(vectors, embedder.embed(photos), atol=1e-5)
        assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(len(photos)), abs=1e-5)
    assert embedder.submit(photos[:0]).result().shape == (0, 1280)


def test_channels_last_changes_layout_not_features(module, photos: np.ndarray, plain: np.ndarray) -> None:
    import copy

    features = TorchPipeline(copy.deepcopy(module), SPEC, "cpu", channels_last=True, chunk=8).run(photos)
    np.testing.assert_allclose(features, plain, rtol=1e-3, atol=1e-3)
