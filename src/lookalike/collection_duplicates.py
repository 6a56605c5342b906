"""The duplicate-finding part of the collection facade: groups, review decisions, and acting on them.

`Collection` inherits these methods; the work itself is in dedupe.py (grouping from the catalog, actions
that the catalog follows), duplicates.py and quarantine.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog import Catalog
    from .duplicates import DuplicateGroup
    from .embedders import EmbedderSpec
    from .index import VectorIndex
    from .quarantine import Plan, Step
    from .settings import Settings
    from .storage import FolderLock


class DuplicateFinding:
    """Duplicate groups of a collection and the safe actions on them (a part of `Collection`)."""

    catalog: Catalog
    _lock: FolderLock
    _index: VectorIndex | None

    @property
    def settings(self) -> Settings:
        raise NotImplementedError

    @property
    def embedder_spec(self) -> EmbedderSpec:
        raise NotImplementedError

    def _check_writable(self) -> None:
        raise NotImplementedError

    def duplicates(
        self,
        tier: str = "near",
        threshold: float | None = None,
        reference: Sequence[str | os.PathLike] = (),
        linkage: str = "star",
    ) -> list[DuplicateGroup]:
        """Duplicate groups of the collection up to `tier` ("identical", "same-image" or "near"), from the stored
        embeddings and signatures (no decoding, no model), respecting the stored decisions (see dedupe.py)."""
        from .dedupe import group_collection

        identity = self.settings.embedder_id or self.embedder_spec.name
        return group_collection(self.catalog, identity, tier, threshold, [os.fspath(r) for r in reference], linkage)

    def decide(self, kind: str, ids: Sequence[int]) -> int:
        """Store a review decision ("not-duplicates" or "keep-all") over indexed images; later groupings respect
        it. It is stored by content hash, so it survives a re-index or a move."""
        from .dedupe import record_decision

        self._check_writable()
        return record_decision(self.catalog, kind, ids)

    def plan_duplicate_action(
        self, action: str, groups: Sequence[DuplicateGroup] = (), folder: str | os.PathLike | None = None
    ) -> Plan:
        """What an action would do, changing nothing: "move" the groups' non-keepers into the quarantine
        `folder`, "hardlink" identical copies to their keeper, or "undo" an earlier move into `folder`."""
        from .dedupe import plan_action

        return plan_action(action, groups, folder, self.settings.scanned_roots)

    def apply_duplicate_action(self, plan: Plan) -> list[Step]:
        """Carry out a plan from `plan_duplicate_action`; the catalog follows every file it moves or links."""
        from .dedupe import apply_action

        self._check_writable()
        with self._lock.hold():
            try:
                return apply_action(self.catalog, plan)
            finally:
                self._index = None  # moved files leave the results; restored ones come back on the next load
