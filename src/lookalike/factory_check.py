"""Faiss factory strings that Faiss builds but that then fail, crash or cannot be searched.

`faiss.index_factory` accepts strings whose index cannot work on the collection
at hand: an IVF with no lists (every search fails), an NSG graph over 100
vectors or fewer (NNDescent refuses at add time), PCA or PQ codebooks with
fewer training vectors than they need, and OPQ with fewer training vectors than
its output dimension, where Faiss writes past a buffer in OPQMatrix::train
(`xxr` holds d * n floats, the product written into it d_out * d) and the process
dies with a segmentation fault. `check_factory` refuses those with one line
before anything is built. The rules were found by building, training, adding
and searching each kind in a subprocess (Faiss 1.15), and by reading Faiss's source.

`accepts_search_parameters` says whether an index takes a SearchParameters
object at search time: flat PQ, LSH, NSG, fast-scan and additive-quantizer
(RQ, LSQ) indexes raise
"search params not supported" / "invalid search params" for any, even a plain
one, so they must be searched with params=None and tombstones filtered after.
"""

from __future__ import annotations

import faiss

from .errors import IndexSpecError

METRICS = {"cosine": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
NNDESCENT_MIN_VECTORS = 101  # NNDescent (NSG's graph build) needs more than NUM_EVAL_POINTS = 100
# Indexes whose search() refuses any SearchParameters, even a plain one carrying only an id selector.
# Fast-scan (PQ..fs, RQ..fs) and additive quantizers (RQ, LSQ, PRQ, PLSQ) refuse them in their base classes.
NO_SEARCH_PARAMETERS: tuple[type, ...] = (
    faiss.IndexPQ,
    faiss.IndexLSH,
    faiss.IndexNSG,
    faiss.IndexFastScan,
    faiss.IndexAdditiveQuantizer,
)


def check_factory(factory: str, count: int, dim: int, metric: str = "cosine", train_size: int | None = None) -> None:
    """Raise IndexSpecError (one line) if `factory` would fail or crash on `count` vectors of `dim` dimensions.

    `train_size` is how many of the vectors training will see (default: all of them). Nothing is
    trained or allocated beyond an empty index of that string.
    """
    if metric not in METRICS:
        raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
    probe = _parse(factory, dim, metric)  # owns the C++ objects: keep it referenced while the parts are read
    training = count if train_size is None else min(train_size, count)
    core, transforms = _strip_wrappers(probe)
    for transform in transforms:
        _check_transform(factory, transform, training)
    _check_core(factory, core, count, training)
    del probe


def accepts_search_parameters(index: faiss.Index) -> bool:
    """Whether `index.search(..., params=...)` accepts a SearchParameters object (of the matching kind).

    IVF kinds take SearchParametersIVF, HNSW SearchParametersHNSW, Flat and scalar quantizers a plain
    SearchParameters; NO_SEARCH_PARAMETERS kinds none at all. A Refine layer always takes
    IndexRefineSearchParameters (and no selector), whose base_index_params must stay unset when
    `accepts_search_parameters(refine.base_index)` is False.
    """
    index = faiss.downcast_index(index)
    while isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        index = faiss.downcast_index(index.index)
    return isinstance(index, faiss.IndexRefine) or not isinstance(index, NO_SEARCH_PARAMETERS)


def _parse(factory: str, dim: int, metric: str) -> faiss.Index:
    try:
        return faiss.index_factory(dim, factory, METRICS[metric])
    except RuntimeError as error:
        text = str(error)
        if "METRIC_L2" in text and metric != "l2":
            raise IndexSpecError(f"{factory!r} supports only the l2 metric") from None
        reason = text.strip().splitlines()[-1] if text.strip() else type(error).__name__
        raise IndexSpecError(f"Faiss cannot build {factory!r}: {reason.rsplit(': ', 1)[-1]}") from None


def _strip_wrappers(index: faiss.Index) -> tuple[faiss.Index, list[faiss.VectorTransform]]:
    """The index under IDMap, PreTransform and Refine layers, and the transforms met on the way."""
    index = faiss.downcast_index(index)
    transforms: list[faiss.VectorTransform] = []
    while True:
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexPreTransform):
            transforms += [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        else:
            return index, transforms


def _check_transform(factory: str, transform: faiss.VectorTransform, training: int) -> None:
    if isinstance(transform, faiss.OPQMatrix) and training < transform.d_out:
        # Below d_out training vectors OPQMatrix::train overflows a heap buffer: a segfault, not an error.
        raise IndexSpecError(
            f"{factory!r}: OPQ{transform.M} needs at least {transform.d_out} training vectors (its output "
            f"dimension); the collection has {training}. Use OPQ{transform.M}_<d> with <d> <= {training}, "
            "or no OPQ"
        )
    if isinstance(transform, faiss.PCAMatrix):
        if transform.d_out > transform.d_in:
            raise IndexSpecError(f"{factory!r}: PCA cannot output {transform.d_out} dimensions from {transform.d_in}")
        if training < transform.d_out:
            raise IndexSpecError(
                f"{factory!r}: PCA to {transform.d_out} dimensions needs at least {transform.d_out} training "
                f"vectors; the collection has {training}"
            )


def _check_core(factory: str, index: faiss.Index, count: int, training: int) -> None:
    if isinstance(index, faiss.IndexIVF):
        if index.nlist < 1:
            raise IndexSpecError(f"{factory!r}: an IVF index needs at least one list (IVF0 cannot be searched)")
        if count and index.nlist > training:
            raise IndexSpecError(
                f"{factory!r} needs at least {index.nlist} training vectors (one per list); "
                f"the collection has {training}"
            )
    if isinstance(index, faiss.IndexNSG) and count < NNDESCENT_MIN_VECTORS:
        raise IndexSpecError(
            f"{factory!r}: an NSG graph needs at least {NNDESCENT_MIN_VECTORS} vectors; the collection has {count}"
        )
    if isinstance(index, (faiss.IndexHNSW, faiss.IndexNSG)):
        index = faiss.downcast_index(index.storage)  # a graph over PQ codes trains the PQ
    pq = getattr(index, "pq", None)
    if isinstance(pq, faiss.ProductQuantizer) and count and training < pq.ksub:
        raise IndexSpecError(
            f"{factory!r}: {pq.nbits}-bit PQ codes need at least {pq.ksub} training vectors; the collection has "
            f"{training} (use fewer bits, e.g. PQ{pq.M}x{max(1, training.bit_length() - 1)})"
        )
