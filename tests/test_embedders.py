"""Embedders: real pretrained features, identical across engines and across the fast and reference decode paths."""

from __future__ import annotations

import glob
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import EmbedderUnavailableError, UnknownEmbedderError, load_embedder
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.embedders import get_embedder_spec
from lookalike.images import decode_file, open_image, read_file_bytes
from lookalike.onnx_export import ensure_onnx_export, onnx_model_path

MATE_PHOTOS = sorted(glob.glob("/usr/share/backgrounds/mate/nature/*.jpg"))


@pytest.fixture(scope="module")
def phone_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """12 MP JPEGs: real photos (scikit-image's, and Debian's mate-backgrounds when installed) at phone size."""
    folder = tmp_path_factory.mktemp("phone")
    sources = [sample_photo(name) for name in SAMPLE_PHOTOS[:6]] + [Image.open(p) for p in MATE_PHOTOS[:6]]
    paths = []
    for number, source in enumerate(sources):
        path = folder / f"phone{number}.jpg"
        source.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def test_embeddings_are_unit_vectors_of_the_pooled_features(embedder) -> None:
    pixels = np.stack([np.asarray(sample_photo(name).resize((224, 224))) for name in ("chelsea", "rocket")])
    vectors = embedder.embed(pixels)
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.5  # a cat and a rocket are far apart
    assert (vectors >= 0).all()  # pooled ReLU6 activations, not logits


def test_the_weights_are_the_real_imagenet_ones(embedder) -> None:
    # The classifier head of the same weights must call chelsea a cat (ImageNet classes 281-285).
    import torch

    spec = get_embedder_spec("efficientnet-lite0")
    network = spec.build_torch(spec.weights_path()).network
    pixels = spec.normalise(np.asarray(sample_photo("chelsea").resize((224, 224)))[None])
    with torch.no_grad():
        logits = network(torch.from_numpy(pixels))
    assert 281 <= int(logits.argmax()) <= 285


def test_onnx_and_torch_agree(embedder) -> None:
    torch_embedder = load_embedder(engine="torch")
    pixels = np.stack([np.asarray(sample_photo(n).resize((224, 224))) for n in SAMPLE_PHOTOS[:8]])
    assert embedder.engine == "onnx"
    cosine = (embedder.embed(pixels) * torch_embedder.embed(pixels)).sum(axis=1)
    assert cosine.min() >= 0.9999


def test_fast_path_matches_the_reference_path(embedder, phone_photos: list[Path]) -> None:
    """Draft decoding + ONNX Runtime vs full-resolution decoding + PyTorch: cosine >= 0.999 for every image."""
    torch_embedder = load_embedder(engine="torch")
    fast = embedder.embed(np.stack([decode_file(str(p), 224).pixels for p in phone_photos]))
    reference = torch_embedder.embed(np.stack([decode_file(str(p), 224, draft=False).pixels for p in phone_photos]))
    cosine = (fast * reference).sum(axis=1)
    assert cosine.min() >= 0.999, cosine


def test_draft_decoding_never_gives_the_model_fewer_pixels_than_its_input(phone_photos: list[Path]) -> None:
    for path in phone_photos:
        image = open_image(read_file_bytes(str(path)), str(path), min_size=224)
        assert min(image.size) >= 224 and image.width < 4032


def test_identity_names_model_and_weights() -> None:
    spec = get_embedder_spec("efficientnet-lite0")
    name, digest = spec.identity().split("@")
    assert name == "efficientnet-lite0" and len(digest) == 12 and int(digest, 16) >= 0


def test_the_onnx_export_is_cached_and_redone_when_damaged(embedder) -> None:
    spec = get_embedder_spec("efficientnet-lite0")
    path = onnx_model_path(spec)
    assert path.is_file() and path.with_suffix(".json").is_file()
    stamp = path.stat().st_mtime_ns
    assert ensure_onnx_export(spec) == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(b"damaged")
    ensure_onnx_export(spec)
    assert path.stat().st_size > 1_000_000


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownEmbedderError, match="choose one of: colour-layout, efficientnet-lite0, resnet50"):
        load_embedder("vgg99")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_resnet50_without_torchvision_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(EmbedderUnavailableError, match=r"pip install 'lookalike\[torchvision\]'"):
        load_embedder("resnet50", engine="torch")


def test_unknown_device_and_engine_are_refused() -> None:
    with pytest.raises(EmbedderUnavailableError, match="unknown device"):
        load_embedder(device="tpu")
    with pytest.raises(EmbedderUnavailableError, match="unknown engine"):
        load_embedder(engine="tensorrt")


def test_the_model_takes_the_threads_the_environment_gives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray task of one CPU (Ray sets OMP_NUM_THREADS=1) must not start a model thread per core of its node."""
    import os

    from lookalike.embedders import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert cpu_threads() == len(os.sched_getaffinity(0))
