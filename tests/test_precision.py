"""The agreement rule: reduced precision only where real photos keep their embeddings (cosine >= 0.999).

Run on the CPU with torch, which has float16 and bfloat16 convolutions: fp16 keeps every probe photo
above 0.9999 and is accepted; bfloat16 (8 bits of mantissa) falls to about 0.997 and must be refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import EmbedderUnavailableError, load_embedder
from lookalike.demo import SAMPLE_PHOTOS, sample_photo
from lookalike.embedders import get_embedder_spec
from lookalike.images import decode_file
from lookalike.precision import MIN_COSINE, choose_pipeline, min_cosine, probe_pixels

SPEC = get_embedder_spec("efficientnet-lite0")


@pytest.fixture(scope="module")
def fp16_embedder():
    return load_embedder(device="cpu", engine="torch", precision="fp16")


@pytest.fixture(scope="module")
def fp32_embedder():
    return load_embedder(device="cpu", engine="torch", precision="fp32")


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real photos the probe set does not contain: crops of scikit-image's, saved as JPEGs, decoded as ingest does."""
    folder = tmp_path_factory.mktemp("precision")
    paths = []
    for number, name in enumerate(SAMPLE_PHOTOS[:8]):
        image = sample_photo(name)
        width, height = image.size
        path = folder / f"crop{number}.jpg"
        image.crop((width // 5, height // 6, width, height)).resize((900, 700), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def test_the_probe_set_is_real_photos_at_the_model_input_size() -> None:
    probes = probe_pixels(224)
    assert probes is not None and probes.shape == (len(SAMPLE_PHOTOS), 224, 224, 3) and probes.dtype == np.uint8
    assert probes.reshape(len(probes), -1).std(axis=1).min() > 10  # pictures, not flat fields


def test_fp16_is_accepted_and_keeps_the_embeddings(fp16_embedder, fp32_embedder, photo_files: list[Path]) -> None:
    decision = fp16_embedder.precision
    assert decision.accepted and decision.precision == "fp16"
    assert decision.min_cosine is not None and decision.min_cosine >= MIN_COSINE
    pixels = np.stack([decode_file(str(path), 224).pixels for path in photo_files])
    cosine = (fp16_embedder.embed(pixels) * fp32_embedder.embed(pixels)).sum(axis=1)
    assert cosine.min() >= MIN_COSINE, cosine


def test_precision_does_not_change_the_identity(fp16_embedder, fp32_embedder) -> None:
    # The rule is what makes fp16 and fp32 vectors comparable: one collection may hold both.
    assert fp16_embedder.identity == fp32_embedder.identity == SPEC.identity()
    assert fp32_embedder.precision.precision == "fp32" and not fp32_embedder.precision.accepted


def test_bfloat16_is_too_coarse_and_is_refused(fp32_embedder) -> None:
    embedder = load_embedder(device="cpu", engine="torch", precision="bf16")
    decision = embedder.precision
    assert decision.tried == "bf16" and decision.precision == "fp32" and not decision.accepted
    assert decision.min_cosine is not None and decision.min_cosine < MIN_COSINE
    assert "staying in fp32" in decision.reason
    # Refused means the embedder really runs in fp32: its vectors are the fp32 ones.
    pixels = probe_pixels(224)
    assert pixels is not None
    assert min_cosine(embedder.embed(pixels), fp32_embedder.embed(pixels)) > 0.99999


def test_a_threshold_fp16_cannot_meet_is_refused() -> None:
    probes = probe_pixels(224)
    assert probes is not None
    strict = 0.999999
    pipeline, decision = choose_pipeline(SPEC, SPEC.torch_module(), "cpu", "fp16", probes=probes[:2], threshold=strict)
    assert decision.tried == "fp16" and decision.precision == "fp32"
    assert decision.min_cosine is not None and MIN_COSINE <= decision.min_cosine < strict
    assert pipeline.dtype.is_floating_point and pipeline.dtype.itemsize == 4


def test_without_probe_photos_reduced_precision_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import lookalike.precision

    monkeypatch.setattr(lookalike.precision, "probe_pixels", lambda size: None)
    pipeline, decision = choose_pipeline(SPEC, SPEC.torch_module(), "cpu", "fp16")
    assert decision.precision == "fp32" and decision.min_cosine is None and "lookalike[demo]" in decision.reason


def test_auto_precision_is_fp32_on_the_cpu_without_a_check(fp32_embedder) -> None:
    embedder = load_embedder(device="cpu", engine="torch")
    assert embedder.precision.precision == "fp32" and embedder.precision.tried is None


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(EmbedderUnavailableError, match="unknown precision"):
        load_embedder(device="cpu", engine="torch", precision="int4")
