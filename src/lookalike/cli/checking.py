"""`lookalike check`: verify every file of a collection, and repair what can be repaired."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .common import index_option, run


@click.command()
@index_option
@click.option("--repair", is_flag=True, help="Re-embed damaged vectors (next index run), rebuild the index, etc.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(index_dir: str, repair: bool, as_json: bool) -> None:
    """Verify the catalog, stored embeddings, index file, manifest and temp files; exit 0 when healthy."""
    from ..check import check_collection

    def action() -> Any:
        return check_collection(index_dir, repair=repair)

    report = run(action)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for finding in report.findings:
            state = "ok" if finding.healthy else ("repaired" if finding.repaired else "PROBLEM")
            click.echo(f"{finding.part:<11} {state:<9} {finding.detail}")
        click.echo("healthy" if report.healthy else "not healthy: run 'lookalike check --repair', or see above")
    if not report.healthy:
        sys.exit(1)
