"""IVF training on GPUs: without a GPU build of Faiss (as here) it must change nothing."""

from __future__ import annotations

import faiss
import numpy as np

from lookalike.faiss_gpu import gpu_count, ivf_training_on_gpus
from seeded import clustered_unit_vectors


def test_without_gpus_training_is_the_cpu_training() -> None:
    vectors = clustered_unit_vectors(4000, seed=3)
    trained = []
    for use_context in (False, True):
        index = faiss.index_factory(vectors.shape[1], "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.seed = 7
        if use_context:
            with ivf_training_on_gpus(index) as on_gpus:
                index.train(vectors)
            assert on_gpus is (gpu_count() > 0)
        else:
            index.train(vectors)
        trained.append(faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, 32))
    if gpu_count() == 0:
        np.testing.assert_array_equal(trained[0], trained[1])


def test_indexes_without_an_ivf_layer_are_left_alone() -> None:
    for factory in ("Flat", "HNSW16"):
        index = faiss.index_factory(64, factory)
        with ivf_training_on_gpus(index) as on_gpus:
            assert on_gpus is False
