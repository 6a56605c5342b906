"""Shared fixtures: a sample collection of real photos (scikit-image's), indexed once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.demo import sample_photo
from lookalike.index import VectorIndex
from seeded import COUNT, IDS, K, build, clustered_unit_vectors, make_collection, mixture

_RUN_CACHE: list[str] = []  # the model cache this run made, removed when it ends


def pytest_configure(config: pytest.Config) -> None:
    # Every run exports the ONNX model into its own cache, as a fresh machine would.
    if "LOOKALIKE_CACHE" not in os.environ:
        import tempfile

        os.environ["LOOKALIKE_CACHE"] = tempfile.mkdtemp(prefix="lookalike-test-cache-")
        _RUN_CACHE.append(os.environ["LOOKALIKE_CACHE"])


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _RUN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("LOOKALIKE_CACHE", None)


@pytest.fixture(scope="session")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the sample originals only, in nested folders and several formats."""
    from lookalike.demo import make_sample_collection

    folder = tmp_path_factory.mktemp("originals")
    make_sample_collection(folder, transforms=())
    return folder


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, originals: Path) -> Path:
    """An index folder over `originals`, built once; copy it before changing it."""
    from lookalike import Collection

    folder = tmp_path_factory.mktemp("index") / "idx"
    with Collection.create(folder) as collection:
        collection.add_folder(originals)
    return folder


@pytest.fixture
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    """A private copy of the session index, free to change."""
    target = tmp_path / "idx"
    shutil.copytree(built_index, target)
    return target


@pytest.fixture(scope="session")
def embedder():
    """The default model, loaded once."""
    from lookalike import load_embedder

    return load_embedder()


# --- seeded vectors, shared by the index, planner and store tests ----------------------------------


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_unit_vectors(COUNT, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    """New photos of the same kinds as the collection's (not in it)."""
    return clustered_unit_vectors(200, seed=2)


@pytest.fixture(scope="module")
def built(vectors: np.ndarray) -> Callable[[str], VectorIndex]:
    """The collection indexed as `kind`, built once per module (tests only search it)."""
    cache: dict[str, VectorIndex] = {}

    def get(kind: str) -> VectorIndex:
        if kind not in cache:
            cache[kind] = build(kind, vectors, IDS)
        return cache[kind]

    return get


@pytest.fixture(scope="module")
def exact(built: Callable[[str], VectorIndex], queries: np.ndarray) -> np.ndarray:
    """The true top-K ids of every query, from the flat index."""
    return built("flat").search(queries, K)[1]


@pytest.fixture(scope="session")
def ivf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tune") / "idx"
    make_collection(folder, mixture(20_000), "ivf", {"nlist": 128})
    return folder


# --- disks of their own: small, full or read-only ---------------------------------------------------------


@pytest.fixture
def media(tmp_path: Path):  # noqa: ANN201 - yields the mount point
    """A 16 MiB tmpfs of this test's own (needs root; skipped elsewhere), unmounted afterwards.

    `remount(media, "ro")` makes it read-only, `remount(media, "size=64m")` bigger; a file left open blocks "ro".
    """
    import subprocess

    mount_point = tmp_path / "media"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    """scikit-image's coffee photo: the picture the signature and alignment tests edit."""
    return sample_photo("coffee")
