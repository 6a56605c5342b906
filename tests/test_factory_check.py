"""Faiss factory strings: what check_factory refuses, and that everything it accepts builds, trains and searches.

Every accepted case runs in a subprocess with real Faiss (a wrong rule could crash Faiss, and must not take
the test run with it): build as lookalike does (IndexIDMap2 unless IVF), train, add, search with the
SearchParameters that accepts_search_parameters allows, and check each vector finds itself.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap

import faiss
import pytest

from lookalike.errors import IndexSpecError
from lookalike.factory_check import accepts_search_parameters, check_factory

PROBE = textwrap.dedent(
    """
    import json, sys
    import faiss, numpy as np
    from lookalike.factory_check import METRICS, accepts_search_parameters

    factory, count, dim, metric = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((count, dim)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.index_factory(dim, factory, METRICS[metric])
    below = faiss.downcast_index(index)
    while isinstance(below, faiss.IndexPreTransform):
        below = faiss.downcast_index(below.index)
    for part in (below, faiss.downcast_index(below.storage) if hasattr(below, "storage") else None):
        if isinstance(part, faiss.IndexPQ):
            part.do_polysemous_training = False  # seconds to minutes of training that search never uses
    if not isinstance(below, faiss.IndexIVF):  # as lookalike does: other kinds take ids through an IDMap
        index = faiss.IndexIDMap2(index)
    index.train(x)
    index.add_with_ids(x, np.arange(100, 100 + count, dtype="int64"))
    params = None
    if isinstance(below, faiss.IndexRefine):  # takes only its own kind, and no selector
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = below.k_factor
    elif accepts_search_parameters(index) and not isinstance(below, faiss.IndexIVF):
        params = faiss.SearchParameters()
        params.sel = faiss.IDSelectorNot(faiss.IDSelectorRange(0, 1))  # a tombstone filter, as lookalike's
    elif isinstance(below, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = int(below.nlist)
    queries = x[: min(count, 20)]
    distances, ids = index.search(queries, min(3, count), params=params)
    found = float(np.mean(ids[:, 0] == np.arange(100, 100 + len(queries))))
    print(json.dumps({"found": found, "params": params is not None}))
    """
)


def run_probe(factory: str, count: int, dim: int, metric: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-c", PROBE, factory, str(count), str(dim), metric],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=no_core_dump,  # a crash must not write a core file (slow, and litter)
    )


def no_core_dump() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize(
    ("factory", "count", "dim", "metric", "words"),
    [
        ("IVF0,Flat", 300, 64, "cosine", "at least one list"),  # issue row 15: every search raised
        ("NSG32,Flat", 40, 64, "cosine", "at least 101 vectors"),  # row 17: NNDescent traceback at add
        ("NSG32,Flat", 100, 64, "l2", "at least 101 vectors"),
        ("OPQ16,IVF4,PQ16x4", 300, 1280, "cosine", "at least 1280 training vectors"),  # row 18: segfault
        ("OPQ8,PQ8x4", 319, 320, "cosine", "at least 320 training vectors"),
        ("OPQ8_1024,PQ8x4", 700, 512, "cosine", "at least 1024 training vectors"),
        ("PCA64,Flat", 40, 512, "cosine", "needs at least 64 training vectors"),
        ("PCA600,Flat", 300, 512, "cosine", "cannot output 600 dimensions"),
        ("PQ8x12", 300, 64, "l2", "at least 4096 training vectors"),
        ("IVF4,PQ8x4", 10, 64, "cosine", "at least 16 training vectors"),
        ("NSG16,PQ8", 150, 64, "l2", "at least 256 training vectors"),
        ("HNSW32,PQ16", 200, 64, "cosine", "at least 256 training vectors"),
        ("IVF400,Flat", 300, 64, "cosine", "at least 400 training vectors"),
        ("LSH", 300, 64, "cosine", "only the l2 metric"),
        ("NotAFactory", 300, 64, "cosine", "Faiss cannot build"),
    ],
)
def test_factory_strings_that_fail_or_crash_are_refused_in_one_line(factory, count, dim, metric, words):
    with pytest.raises(IndexSpecError) as caught:
        check_factory(factory, count, dim, metric)

    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_training_size_is_what_counts():
    check_factory("OPQ8,PQ8x4", 5000, 512)
    with pytest.raises(IndexSpecError, match="at least 512 training vectors"):
        check_factory("OPQ8,PQ8x4", 5000, 512, train_size=300)


@pytest.mark.parametrize(
    ("factory", "count", "dim", "metric", "takes_params"),
    [
        ("Flat", 1, 64, "cosine", True),
        ("IVF1,Flat", 1, 64, "cosine", True),
        ("IVF300,Flat", 300, 64, "cosine", True),
        ("PQ16", 300, 128, "cosine", False),  # issue row 16: searches raised "invalid search params"
        ("PQ4x4", 300, 128, "l2", False),
        ("LSH", 300, 64, "l2", False),
        ("NSG32,Flat", 101, 64, "l2", False),
        ("NSG16,PQ8", 300, 64, "l2", False),
        ("OPQ8,PQ8x4", 320, 320, "cosine", False),  # the OPQ boundary itself
        ("OPQ8_32,IVF2,PQ8x4", 300, 512, "cosine", True),  # OPQ to fewer dimensions: n >= d_out is enough
        ("PCA64,Flat", 64, 512, "cosine", True),
        ("PCAR64,IVF4,Flat", 300, 512, "cosine", True),
        ("HNSW32,Flat", 40, 64, "cosine", True),
        ("HNSW32,SQ8", 40, 64, "cosine", True),
        ("SQ8", 1, 64, "cosine", True),
        ("IVF4,PQ8x4", 16, 64, "cosine", True),
        ("PQ8x4fs", 300, 64, "cosine", False),
        ("IVF2,PQ8x4fs", 300, 64, "cosine", True),
        ("RQ4x4", 300, 64, "cosine", False),
        ("PRQ2x2x4", 300, 64, "cosine", False),
        ("IVF2,RQ4x4", 300, 64, "cosine", True),
        ("PQ8x4,RFlat", 300, 64, "cosine", True),  # Refine's own parameters, none for its PQ base
        ("HNSW32,Flat,RFlat", 300, 64, "cosine", True),
        ("RR64,Flat", 40, 64, "cosine", True),
    ],
)
def test_accepted_factory_strings_build_train_add_and_search(factory, count, dim, metric, takes_params):
    check_factory(factory, count, dim, metric)
    assert accepts_search_parameters(faiss.index_factory(dim, factory, faiss.METRIC_L2)) is takes_params

    result = run_probe(factory, count, dim, metric)

    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["found"] >= (0.5 if "PQ" in factory or "LSH" in factory else 0.95)


def test_the_opq_rule_is_where_faiss_crashes():
    """If this fails, Faiss no longer crashes on small OPQ training sets: the OPQ rule can be relaxed."""
    crashed = run_probe("OPQ8,PQ8x4", 300, 320, "cosine")

    assert crashed.returncode < 0  # killed by a signal (SIGSEGV or SIGABRT), not an exception
