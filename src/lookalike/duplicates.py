"""Duplicate groups in three labelled tiers, from stored file facts, embeddings and pixel signatures.

Tiers, strictest first:

- `identical`: the same bytes (same size, then the same content hash);
- `same-image`: the same picture in another file (re-encoded, resized, converted, metadata stripped,
  transparency flattened): embeddings close *and* 32 x 32 grey thumbnails (`signatures.py`) a grey level or
  two apart;
- `near`: light edits of one picture (small crop, tone change, heavy JPEG, small turn, small watermark):
  embeddings close.

Grouping runs tier by tier. Each tier groups the *keepers* of the tier before it, so every file that is not
kept appears in exactly one group, under the tier that links it to its keeper: a byte copy of a photo and a
crop of it give an `identical` group and a `near` group sharing the same keeper.

Groups are stars, not chains: images are visited in keeper order (the rules of `keeper_order`), each image
not yet grouped becomes a leader, and takes every ungrouped image among its k nearest neighbours that is
within the tier's threshold *of the leader*. The leader is therefore the group's keeper, every member is
within the threshold of it, and a series of ever more edited copies does not collapse into one group.
Connected components (`linkage="components"`) are available on request. Neighbours come from one Faiss
k-NN search (exact up to 10,000 images, IVF beyond), so memory is O(N x k), never N x N. The same inputs
give the same groups: every order is a sort with the image id as the last key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .duplicate_rules import (
    TIERS,
    Decisions,
    ImageFacts,
    TierThresholds,
    keeper_order,
    keeper_reason,
    thresholds_for,
)
from .errors import LookalikeError

__all__ = [
    "TIERS",
    "Decisions",
    "DuplicateGroup",
    "DuplicatesError",
    "ImageFacts",
    "Member",
    "TierThresholds",
    "find_duplicates",
    "nearest_neighbours",
    "thresholds_for",
]

DEFAULT_NEIGHBOURS = 32
EXACT_SEARCH_UP_TO = 10_000
_SEARCH_BATCH = 4096
_PROJECTED_DIM = 256


class DuplicatesError(LookalikeError):
    """Inputs to duplicate grouping that do not fit together (unknown tier, mismatched vectors)."""


@dataclass(frozen=True)
class Member:
    """One file of a group and its cosine similarity with the group's keeper (1.0 for the keeper)."""

    id: int
    path: str
    similarity: float


@dataclass(frozen=True)
class DuplicateGroup:
    """A keeper and the files that duplicate it at one tier; `reason` says why this one is kept."""

    tier: str
    keep: Member
    members: tuple[Member, ...]  # the keeper first, then the others by decreasing similarity
    reason: str
    facts: dict[int, ImageFacts] = field(default_factory=dict, repr=False, compare=False)

    @property
    def others(self) -> tuple[Member, ...]:
        """The members that are not the keeper: what an action would move or link."""
        return tuple(member for member in self.members if member.id != self.keep.id)

    def to_dict(self) -> dict:
        """The JSON contract: {"tier", "keep": {"id", "path"}, "members": [{"id", "path", "similarity"}]}."""
        return {
            "tier": self.tier,
            "keep": {"id": self.keep.id, "path": self.keep.path},
            "members": [{"id": m.id, "path": m.path, "similarity": round(m.similarity, 4)} for m in self.members],
        }


def find_duplicates(
    facts: Sequence[ImageFacts],
    vectors: np.ndarray,
    embedder: str,
    *,
    tier: str = "near",
    threshold: float | None = None,
    decisions: Decisions | None = None,
    reference_folders: Iterable[str] = (),
    linkage: str = "star",
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> list[DuplicateGroup]:
    """Group `facts` (one per row of `vectors`, L2-normalised) into duplicate groups up to `tier`.

    `tier` is the loosest tier reported (stricter tiers are always included). `threshold` replaces the
    cosine threshold of that loosest tier (ignored for `identical`). `embedder` is the embedder's name:
    thresholds are measured per embedder. Groups that `decisions` marks "keep all" are left out, and
    images it marks "not duplicates" are never put together.
    """
    if tier not in TIERS:
        raise DuplicatesError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
    if linkage not in ("star", "components"):
        raise DuplicatesError(f"unknown linkage {linkage!r}: choose star or components")
    if len(facts) != len(vectors):
        raise DuplicatesError(f"{len(facts)} images but {len(vectors)} vectors")
    limits = thresholds_for(embedder).with_override(tier, threshold)
    decisions = decisions or Decisions()
    folders = tuple(reference_folders)
    order = keeper_order(facts, folders)
    rank = np.empty(len(facts), dtype=np.int64)
    rank[order] = np.arange(len(facts))
    groups, leaders = _identical_groups(facts, order, rank, decisions)
    if tier != "identical" and len(leaders) > 1:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # One k-NN search over the distinct files serves both embedding tiers: a later tier only looks up
        # the neighbour lists of the leaders left by the tier before it.
        distinct = np.sort(np.asarray(leaders))
        # No copy of the vectors unless some files are byte copies (then only the distinct ones are copied).
        searched = vectors if len(distinct) == len(vectors) else vectors[distinct]
        sims, found = nearest_neighbours(searched, min(neighbours, len(distinct) - 1))
        found = np.where(found >= 0, distinct[np.maximum(found, 0)], -1)
        lists = {int(p): (sims[row], found[row]) for row, p in enumerate(distinct)}
        context = _Context(facts, rank, decisions, limits, linkage)
        for stage in TIERS[1 : TIERS.index(tier) + 1]:
            stage_groups, leaders = context.group(stage, leaders, lists)
            groups += stage_groups
    built = [_group(stage, members, facts, vectors, rank, folders) for stage, members in groups]
    return [group for group in built if not decisions.keeps_all(m.id for m in group.members)]


def nearest_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product k-NN of every row among the rows: (similarities, row numbers), N x k each, -1 if none.

    Exact (flat) up to 10,000 vectors. Beyond, the search runs on a 256-d PCA projection with IVF-Flat
    (2 x sqrt(N) lists, 8 searched): five times fewer multiplications per distance, and duplicates sit much
    closer together than lists are wide (docs/benchmarks.md, "Duplicates", measures how many close
    neighbours it misses). The similarities returned are always recomputed on the full vectors.
    """
    import faiss

    count, dim = vectors.shape
    k = max(1, min(k + 1, count))  # +1: every vector finds itself first
    if count <= EXACT_SEARCH_UP_TO:
        index, queries = faiss.IndexFlatIP(dim), vectors
        index.add(vectors)
    else:
        index, queries = _approximate_index(vectors)
    sims = np.empty((count, k), dtype=np.float32)
    found = np.empty((count, k), dtype=np.int64)
    for start in range(0, count, _SEARCH_BATCH):
        sims[start : start + _SEARCH_BATCH], found[start : start + _SEARCH_BATCH] = index.search(
            queries[start : start + _SEARCH_BATCH], k
        )
    if queries is not vectors:
        _exact_similarities(vectors, sims, found)
    return sims, found


def _approximate_index(vectors: np.ndarray) -> tuple[object, np.ndarray]:
    """An IVF-Flat index over a PCA projection of `vectors`, filled, and the projected vectors."""
    import faiss

    count, dim = vectors.shape
    nlist = int(2 * np.sqrt(count))
    sample = vectors[np.sort(np.random.default_rng(1338).choice(count, size=min(count, nlist * 40), replace=False))]
    pca = faiss.PCAMatrix(dim, min(dim, _PROJECTED_DIM))
    pca.train(sample)
    projected = np.empty((count, pca.d_out), dtype=np.float32)
    for start in range(0, count, _SEARCH_BATCH):
        projected[start : start + _SEARCH_BATCH] = pca.apply(vectors[start : start + _SEARCH_BATCH])
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(pca.d_out), pca.d_out, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # coarse lists only need to be roughly right: 10 k-means rounds, not 25
    index.train(pca.apply(sample))
    index.nprobe = 8
    index.add(projected)
    return index, projected


def _exact_similarities(vectors: np.ndarray, sims: np.ndarray, found: np.ndarray) -> None:
    """Replace approximate similarities by exact ones (in place), each row re-sorted best first."""
    for start in range(0, len(vectors), 512):
        rows = slice(start, start + 512)
        neighbours = vectors[np.maximum(found[rows], 0)]
        exact = np.einsum("nd,nkd->nk", vectors[rows], neighbours)
        exact[found[rows] < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")
        sims[rows] = np.take_along_axis(exact, order, axis=1)
        found[rows] = np.take_along_axis(found[rows], order, axis=1)


def _identical_groups(
    facts: Sequence[ImageFacts], order: np.ndarray, rank: np.ndarray, decisions: Decisions
) -> tuple[list[tuple[str, list[int]]], list[int]]:
    """Group same-size, same-hash files (in keeper order) and return the groups and the leaders left."""
    buckets: dict[tuple[int, str], list[int]] = {}
    for position in order:
        item = facts[position]
        if item.content_hash is None:
            buckets[(-1, f"#{item.id}")] = [int(position)]  # no hash: never identical to anything
        else:
            buckets.setdefault((item.size, item.content_hash), []).append(int(position))
    groups: list[tuple[str, list[int]]] = []
    leaders: list[int] = []
    for bucket in buckets.values():
        while bucket:
            leader, rest = bucket[0], bucket[1:]
            taken = [p for p in rest if not decisions.apart(facts[leader].id, facts[p].id)]
            if taken:
                groups.append(("identical", [leader, *taken]))
            leaders.append(leader)
            bucket = [p for p in rest if p not in taken]
    leaders.sort(key=lambda p: int(rank[p]))
    return groups, leaders


@dataclass
class _Context:
    facts: Sequence[ImageFacts]
    rank: np.ndarray
    decisions: Decisions
    limits: TierThresholds
    linkage: str

    def group(
        self, stage: str, leaders: list[int], neighbours: dict[int, tuple[np.ndarray, np.ndarray]]
    ) -> tuple[list[tuple[str, list[int]]], list[int]]:
        """Group the current leaders at `stage`; return the groups and the leaders of the next stage."""
        active = set(leaders)
        if self.linkage == "star":
            clusters = self._stars(stage, leaders, active, neighbours)
        else:
            edges = {p: self._links(stage, p, active, neighbours[p]) for p in leaders}
            clusters = self._components(leaders, edges)
        groups = [(stage, members) for members in clusters if len(members) > 1]
        return groups, sorted((members[0] for members in clusters), key=lambda p: int(self.rank[p]))

    def _links(
        self, stage: str, leader: int, allowed: set[int], neighbours: tuple[np.ndarray, np.ndarray]
    ) -> list[int]:
        """The images among `leader`'s neighbours (still in `allowed`) that duplicate it at `stage`."""
        sims, found = neighbours
        close = sims >= self.limits.floor(stage)  # most neighbours fail here, before any Python-level check
        candidates = [
            (q, s)
            for s, q in zip(sims[close].tolist(), found[close].tolist())
            if q in allowed and q != leader and not self._apart(leader, q)
        ]
        keeper = self.facts[leader]
        if stage == "same-image":
            return [q for q, s in candidates if self.limits.same_image(s, keeper, self.facts[q])]
        verdicts = self.limits.near(keeper, [(self.facts[q], s) for q, s in candidates])
        return [q for (q, _), linked in zip(candidates, verdicts) if linked]

    def _apart(self, first: int, second: int) -> bool:
        if not self.decisions.not_duplicates:
            return False
        return self.decisions.apart(self.facts[first].id, self.facts[second].id)

    def _stars(
        self, stage: str, leaders: list[int], active: set[int], neighbours: dict[int, tuple[np.ndarray, np.ndarray]]
    ) -> list[list[int]]:
        free = set(active)
        clusters = []
        for leader in leaders:  # already in keeper order
            if leader not in free:
                continue
            free.discard(leader)
            members: list[int] = []
            for candidate in self._links(stage, leader, free, neighbours[leader]):
                if not any(self._apart(candidate, other) for other in members):
                    members.append(candidate)
            free.difference_update(members)
            clusters.append([leader, *members])
        return clusters

    def _components(self, leaders: list[int], edges: dict[int, list[int]]) -> list[list[int]]:
        parent = {p: p for p in leaders}

        def root(p: int) -> int:
            while parent[p] != p:
                parent[p] = parent[parent[p]]
                p = parent[p]
            return p

        for p, targets in edges.items():
            for q in targets:
                a, b = root(p), root(q)
                if a != b:  # the better-ranked root wins, so a component's root is its keeper
                    parent[max(a, b, key=lambda x: int(self.rank[x]))] = min(a, b, key=lambda x: int(self.rank[x]))
        members: dict[int, list[int]] = {}
        for p in leaders:
            members.setdefault(root(p), []).append(p)
        return [sorted(group, key=lambda p: int(self.rank[p])) for group in members.values()]


def _group(
    stage: str,
    positions: list[int],
    facts: Sequence[ImageFacts],
    vectors: np.ndarray,
    rank: np.ndarray,
    folders: tuple[str, ...],
) -> DuplicateGroup:
    keeper = positions[0]
    if stage == "identical":
        sims = np.ones(len(positions), dtype=np.float32)
    else:
        sims = np.asarray(vectors)[positions] @ np.asarray(vectors)[keeper]
        sims[0] = 1.0
    others = sorted(range(1, len(positions)), key=lambda i: (-float(sims[i]), int(rank[positions[i]])))
    members = tuple(Member(facts[positions[i]].id, facts[positions[i]].path, float(sims[i])) for i in [0, *others])
    runner_up = facts[positions[others[0]]]
    return DuplicateGroup(
        tier=stage,
        keep=members[0],
        members=members,
        reason=keeper_reason(facts[keeper], runner_up, folders),
        facts={facts[p].id: facts[p] for p in positions},
    )
