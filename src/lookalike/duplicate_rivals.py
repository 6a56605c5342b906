"""Which image a near duplicate matches best: how grouping tells one drawing of a series from a copy.

In a series of look-alike drawings (star polygons, card faces, one icon in several themes) each drawing matches a
sibling about as well as a copy matches its original, so thresholds alone link them. What differs is that a copy's
original is the picture it matches best. `NearMatches` compares each pair of the near stage once (as grouping
compares it: the image first in keeper order keeps) and tells grouping when another image matches an image
clearly better than the leader about to take it. Measured in docs/benchmarks.md ("Duplicates").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .duplicate_rules import ImageFacts, TierThresholds, same_size
from .small_files import SmallFiles

# Another image takes a near duplicate away from its leader when its misfit (1 - thumbnail correlation) with it is
# under this share of the leader's; unless it is one of the leader's own closest matches, or tied to the leader
# more tightly than to the image (both happen when the kept file is itself a copy: then its original and the
# other copies match each other best). 1.0 (any better match) kept fewer near copies for little more precision.
RIVAL_MISFIT = 0.75
RIVAL_WINDOW = 0.05  # rivals are the neighbours at most this much further in embedding than the image's closest
SURE_MISFIT = 0.005  # a pair this close (misfit below it) is linked without looking for rivals


class NearMatches:
    """The near stage's pixel comparisons of one grouping, each pair made once, and the rivals they show."""

    def __init__(
        self,
        facts: Sequence[ImageFacts],
        rank: np.ndarray,
        limits: TierThresholds,
        candidates: Callable[[int], list[tuple[int, float]]],
    ) -> None:
        self.facts, self.rank, self.limits = facts, rank, limits
        self.candidates = candidates  # an image's neighbours (image, cosine) close enough to compare
        # keeper * len(facts) + image -> `TierThresholds.near` of the pair (an int key: a tuple per pair would
        # double what this holds, one entry per pair compared, at most images x neighbours)
        self.closeness: dict[int, float | None] = {}
        self.matches: dict[int, list[tuple[float, int]]] = {}  # `_best` of each image looked at
        self.small_files = SmallFiles()

    def closeness_of(self, keeper: int, candidates: list[tuple[int, float]]) -> list[float | None]:
        """`TierThresholds.near` of `keeper` and each (image, cosine) candidate, each pair compared once."""
        new = [(q, s) for q, s in candidates if self._pair(keeper, q) not in self.closeness]
        if new:
            found = self.limits.near(self.facts[keeper], [(self.facts[q], s) for q, s in new])
            found = [self._second_look(keeper, q, close) for (q, _), close in zip(new, found)]
            self.closeness.update((self._pair(keeper, q), close) for (q, _), close in zip(new, found))
        return [self.closeness[self._pair(keeper, q)] for q, _ in candidates]

    def _second_look(self, keeper: int, image: int, closeness: float | None) -> float | None:
        """`closeness`, unless the pair is of small files that their pixels tell apart (`small_files`)."""
        first, second = self.facts[keeper], self.facts[image]
        if closeness is None or not SmallFiles.applies(first, second) or self.small_files.agree(first, second):
            return closeness
        return None

    def _pair(self, keeper: int, image: int) -> int:
        return keeper * len(self.facts) + image

    def _best(self, image: int) -> list[tuple[float, int]]:
        """(closeness, image) of `image`'s near duplicates among its closest neighbours, closest first."""
        if image not in self.matches:
            self.matches[image] = self._matches(image)
        return self.matches[image]

    def outmatched(self, image: int, leader: int, closeness: float) -> bool:
        """Whether another image matches `image` clearly better than `leader` does (`RIVAL_MISFIT`)."""
        if 1.0 - closeness < SURE_MISFIT:
            return False
        centres: set[int] | None = None  # the leader's closest matches, looked up only when a rival shows
        for rival, other in self._best(image):
            if 1.0 - rival >= RIVAL_MISFIT * (1.0 - closeness):
                return False  # the rest match it less
            if other == leader:
                continue
            if centres is None:
                centres = self._centres(leader)
                if image in centres:
                    return False
            tie = self.closeness.get(self._pair(leader, other), self.closeness.get(self._pair(other, leader)))
            if other in centres or (tie is not None and 1.0 - tie < RIVAL_MISFIT * (1.0 - rival)):
                continue  # the rival is one with the keeper: the original of a copy that was kept, or a copy
            return True
        return False

    def _centres(self, leader: int) -> set[int]:
        """The images `leader` matches about as well as its closest match (within `RIVAL_MISFIT`)."""
        matches = self._best(leader)
        best = matches[0][0] if matches else 1.0
        return {other for close, other in matches if RIVAL_MISFIT * (1.0 - close) <= 1.0 - best}

    def _matches(self, image: int) -> list[tuple[float, int]]:
        """`_best`'s list, among the neighbours within `RIVAL_WINDOW` of the image's closest."""
        candidates = self.candidates(image)
        if not candidates:
            return []
        window = max(s for _, s in candidates) - RIVAL_WINDOW
        candidates = [(q, s) for q, s in candidates if s >= window]
        # Each pair as grouping compares it (the image first in keeper order keeps; its crops are searched), but an
        # earlier image of the same size not compared yet is compared the other way round, with the rest in one
        # batch: there the order barely matters, and one comparison per pair costs many times more.
        one_by_one: list[tuple[int, float]] = []
        batch: list[tuple[int, float]] = []
        for q, s in candidates:
            earlier = self.rank[q] < self.rank[image]
            compared = self._pair(q, image) in self.closeness
            exact = earlier and (compared or not same_size(self.facts[q], self.facts[image]))
            (one_by_one if exact else batch).append((q, s))
        found = [(close, q) for (q, _), close in zip(batch, self.closeness_of(image, batch)) if close is not None]
        for q, s in one_by_one:
            close = self.closeness_of(q, [(image, s)])[0]
            if close is not None:
                found.append((close, q))
        return sorted(found, reverse=True)
