"""Rendering: the tuning plot, tables and JSON."""

from __future__ import annotations

from pathlib import Path

from lookalike.render import write_plot
from seeded import *  # noqa: F403


def test_write_plot_handles_a_single_point(tmp_path: Path) -> None:
    from lookalike.tune import OperatingPoint, TuneResult

    point = OperatingPoint("efSearch", 16, 0.9, 0.9, 0.5, 0.6, 0.1)
    write_plot(TuneResult("HNSW32,Flat", 100, 10, 10, 0.95, "efSearch", [point], point), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
