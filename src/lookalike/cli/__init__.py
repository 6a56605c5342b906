"""The `lookalike` command: a thin shell that parses, calls the library, formats and translates errors.

Each command module imports the library inside its functions, so `lookalike --help` loads neither
Faiss nor the embedder's frameworks.
"""

from __future__ import annotations

import click

from .indexing import index, reindex
from .searching import demo, info, models, search
from .serving import serve
from .tuning import plan, tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lookalike")
def main() -> None:
    """Find the photos that look like this one."""


for command in (index, reindex, search, info, models, demo, serve, tune, plan):
    main.add_command(command)

__all__ = ["main"]
