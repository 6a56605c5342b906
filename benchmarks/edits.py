"""The benchmark's edits live in the package (`lookalike.edits`), which `lookalike eval` uses too."""

from lookalike.edits import HARD, HARD_SINGLE, MILD, PAIR_FIRST, PAIR_SECOND, Edit, Others, apply_edit

__all__ = ["HARD", "HARD_SINGLE", "MILD", "PAIR_FIRST", "PAIR_SECOND", "Edit", "Others", "apply_edit"]
