"""The server's duplicate groups: computed once per state of the collection, paged from memory; decisions.

Grouping a large collection takes seconds (one k-NN search over every embedding), so the groups of each
(tier, threshold) are kept until the collection changes: a new index, new or removed images (a move by
`lookalike duplicates` tombstones rows), or a new decision. Review decisions are the only thing the server
writes, and only to the catalog: it never moves, links or deletes a file.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ..errors import InvalidArgumentError
from ..snapshot import LiveCollection

CACHED_GROUPINGS = 4  # (tier, threshold) pairs kept; a page view asks for one at a time


class DuplicateService:
    """Duplicate groups of the live collection (read-only) and review decisions (catalog writes only)."""

    def __init__(self, live: LiveCollection) -> None:
        self.live = live
        self._cache: OrderedDict[tuple, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()  # one grouping at a time: a second request waits and reuses the first's

    def page(self, tier: str, threshold: float | None, offset: int, limit: int) -> dict[str, Any]:
        """{"total": groups, "groups": the groups offset .. offset + limit, in the contract's shape}."""
        groups = self.groups(tier, threshold)
        return {"total": len(groups), "groups": groups[offset : offset + limit]}

    def groups(self, tier: str, threshold: float | None) -> list[dict[str, Any]]:
        """Every group of the collection as the JSON contract's dicts, from the cache when nothing changed."""
        with self._lock, self.live.reading() as collection:
            key = (_state(collection), tier, threshold)
            cached = self._cache.get(key)
            if cached is None:
                cached = [group.to_dict() for group in collection.duplicates(tier, threshold)]
                self._cache[key] = cached
                while len(self._cache) > CACHED_GROUPINGS:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return cached

    def decide(self, kind: str, ids: list[int], confirm: bool) -> int:
        """Store a review decision; `confirm` must be true (a page or a script that means it)."""
        from ..collection import Collection

        if not confirm:
            raise InvalidArgumentError(
                'a decision changes later groupings: send "confirm": true to store it', "confirm"
            )
        with Collection.open(self.live.folder) as collection:
            return collection.decide(kind, ids)


def _state(collection: Any) -> tuple:
    """What the groups depend on: the index recorded, the rows (ids only grow; removals add tombstones), decisions."""
    catalog = collection.catalog
    return (
        collection.settings.index_state,
        catalog.max_image_id(),
        catalog.count_embeddings(),
        len(catalog.decisions()),
    )
