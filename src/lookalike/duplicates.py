"""Duplicate groups in three labelled tiers, from stored file facts, embeddings and pixel signatures.

Tiers, strictest first:

- `identical`: the same bytes (same size, then the same content hash);
- `same-image`: the same picture in another file (re-encoded, resized, converted, metadata stripped,
  transparency flattened): embeddings close *and* 32 x 32 grey thumbnails (`signatures.py`) a grey level or
  two apart;
- `near`: light edits of one picture (small crop, tone change, heavy JPEG, small turn, small watermark):
  embeddings close and thumbnails that line up once cropped, turned or with a watermark box left out
  (`thumbnail_alignment.py`); a heavily compressed JPEG is also found by its thumbnail.

Both embedding tiers refuse two files whose colour thumbnails put other hues in the same places.

Grouping runs tier by tier. Each tier groups the *keepers* of the tier before it, so every file that is not
kept appears in exactly one group, under the tier that links it to its keeper: a byte copy of a photo and a
crop of it give an `identical` group and a `near` group sharing the same keeper.

Groups are stars, not chains: every member is within the tier's threshold *of the group's keeper*, so a
series of ever more edited copies does not collapse into one group. Images are visited in keeper order (the
rules of `keeper_order`); one that no earlier leader links becomes a leader, and so does one that an earlier
leader links but that is closer still to later images no leader links (among look-alike drawings, the
original of a copy that a sibling reached first). A near duplicate is not linked to a leader when another
image matches its pixels clearly better (`duplicate_rivals.py`): that is how one drawing of a series is told
from a copy. Each linked image then joins the leader whose pixels are closest to its own, not the first that
links it. Connected components (`linkage="components"`) are available
on request. Neighbours come from one Faiss k-NN search read both ways (`duplicate_neighbours.py`), so memory
is O(N x k), never N x N. The same inputs give the same groups: every order is a sort with the image id as
the last key.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .duplicate_neighbours import DEFAULT_NEIGHBOURS, nearest_neighbours, neighbour_lists, thumbnail_neighbours
from .duplicate_rivals import NearMatches
from .duplicate_rules import (
    TIERS,
    Decisions,
    ImageFacts,
    TierThresholds,
    heavy_jpeg,
    keeper_order,
    keeper_reason,
    pixel_closeness,
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

# How much closer (in `pixel_closeness` or thumbnail correlation) a claimed image must be to an unclaimed one
# than to its claiming leader to lead a group of its own; files that repeat each other's pixels tie exactly.
CLOSER_BY = 0.005


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
        heavy = np.asarray([heavy_jpeg(item) for item in facts], dtype=bool)
        extra = None
        if tier == "near" and heavy[distinct].any():
            extra = thumbnail_neighbours(distinct[heavy[distinct]], distinct, [f.signature for f in facts], vectors)
        lists = neighbour_lists(distinct, sims, found, extra)
        context = _Context(facts, rank, decisions, limits, linkage, heavy)
        for stage in TIERS[1 : TIERS.index(tier) + 1]:
            stage_groups, leaders = context.group(stage, leaders, lists)
            groups += stage_groups
    built = [_group(stage, members, facts, vectors, rank, folders) for stage, members in groups]
    return [group for group in built if not decisions.keeps_all(m.id for m in group.members)]


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
    heavy: np.ndarray  # by position: a heavily compressed JPEG (duplicate_rules.heavy_jpeg)
    matches: NearMatches | None = None  # the near stage's comparisons

    def group(
        self, stage: str, leaders: list[int], neighbours: dict[int, tuple[np.ndarray, np.ndarray]]
    ) -> tuple[list[tuple[str, list[int]]], list[int]]:
        """Group the current leaders at `stage`; return the groups and the leaders of the next stage."""
        active = set(leaders)
        if stage == "near":

            def comparable(image: int) -> list[tuple[int, float]]:
                return self._candidates(stage, image, active, neighbours[image])

            self.matches = NearMatches(self.facts, self.rank, self.limits, comparable)
        if self.linkage == "star":
            clusters = self._stars(stage, leaders, active, neighbours)
        else:
            edges = {p: [q for q, _ in self._links(stage, p, active, neighbours[p])] for p in leaders}
            clusters = self._components(leaders, edges)
        groups = [(stage, members) for members in clusters if len(members) > 1]
        return groups, sorted((members[0] for members in clusters), key=lambda p: int(self.rank[p]))

    def _candidates(
        self, stage: str, leader: int, allowed: Container[int], neighbours: tuple[np.ndarray, np.ndarray]
    ) -> list[tuple[int, float]]:
        """`leader`'s neighbours (still in `allowed`) close enough in embedding to be linked at `stage`."""
        sims, found = neighbours
        close = sims >= self.limits.floor(stage)  # most neighbours fail here, before any Python-level check
        heavy_floor = self.limits.heavy_jpeg_floor(stage)
        if heavy_floor < self.limits.floor(stage):  # a heavy JPEG on either side may be linked from lower
            close |= (sims >= heavy_floor) & (self.heavy[leader] | self.heavy[found])
        return [
            (q, s)
            for s, q in zip(sims[close].tolist(), found[close].tolist())
            if q in allowed and q != leader and not self._apart(leader, q)
        ]

    def _links(
        self, stage: str, leader: int, allowed: Container[int], neighbours: tuple[np.ndarray, np.ndarray]
    ) -> list[tuple[int, float]]:
        """The images among `leader`'s neighbours (still in `allowed`) that duplicate it at `stage`, each with
        how close its pixels are to the leader's, higher is closer (`pixel_closeness`, `TierThresholds.near`):
        the embedding barely tells a copy's original from a sibling drawing."""
        candidates = self._candidates(stage, leader, allowed, neighbours)
        keeper = self.facts[leader]
        if stage == "same-image":
            return [
                (q, pixel_closeness(keeper, self.facts[q], s))
                for q, s in candidates
                if self.limits.same_image(s, keeper, self.facts[q])
            ]
        assert self.matches is not None
        closeness = self.matches.closeness_of(leader, candidates)
        found = [(q, close) for (q, _), close in zip(candidates, closeness) if close is not None]
        return [(q, close) for q, close in found if not self.matches.outmatched(q, leader, close)]

    def _apart(self, first: int, second: int) -> bool:
        if not self.decisions.not_duplicates:
            return False
        return self.decisions.apart(self.facts[first].id, self.facts[second].id)

    def _stars(
        self, stage: str, leaders: list[int], active: set[int], neighbours: dict[int, tuple[np.ndarray, np.ndarray]]
    ) -> list[list[int]]:
        """Leader grouping. In keeper order, an image that no earlier leader links becomes a leader; so does one
        that an earlier leader links but that is closer still to later images no leader links (the original
        of a copy, which a sibling drawing happened to reach first). Then each linked image joins the leader
        it is closest to, not the first that links it, which would let that sibling take the copy away."""
        options: dict[int, list[tuple[float, int]]] = {}  # linked image -> (-closeness, leader rank) per leader
        group_leaders: list[int] = []
        for image in leaders:  # already in keeper order
            # Images linked by an earlier leader stay candidates: a later leader may be closer to them.
            later = _Later(active, self.rank, int(self.rank[image]))
            if image in options:
                # Only images that no leader links can make a claimed image a leader: without any among its
                # neighbours, no pixels need comparing.
                unclaimed = _Later(active, self.rank, int(self.rank[image]), options)
                if not self._candidates(stage, image, unclaimed, neighbours[image]):
                    continue
                links = self._links(stage, image, later, neighbours[image])
                claimed = -min(options[image])[0] + CLOSER_BY
                if not any(closeness > claimed and q not in options for q, closeness in links):
                    continue
                del options[image]
            else:
                links = self._links(stage, image, later, neighbours[image])
            group_leaders.append(image)
            for candidate, closeness in links:
                options.setdefault(candidate, []).append((-closeness, int(self.rank[image])))
        by_rank = {int(self.rank[leader]): leader for leader in group_leaders}
        members: dict[int, list[int]] = {leader: [] for leader in group_leaders}
        lone: list[int] = []
        for candidate in sorted(options, key=lambda p: int(self.rank[p])):
            for _, leader_rank in sorted(options[candidate]):
                chosen = by_rank[leader_rank]
                if not any(self._apart(candidate, other) for other in members[chosen]):
                    members[chosen].append(candidate)
                    break
            else:
                lone.append(candidate)  # every leader that links it holds an image a person keeps apart from it
        clusters = [[leader, *members[leader]] for leader in group_leaders] + [[p] for p in lone]
        return sorted(clusters, key=lambda cluster: int(self.rank[cluster[0]]))

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


@dataclass(frozen=True)
class _Later:
    """The images of `active` ranked after `rank` in keeper order (and not in `unless`), as a container that
    `in` tests without building a set."""

    active: set[int]
    ranks: np.ndarray
    rank: int
    unless: Container[int] = ()

    def __contains__(self, position: object) -> bool:
        return position in self.active and int(self.ranks[position]) > self.rank and position not in self.unless


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
