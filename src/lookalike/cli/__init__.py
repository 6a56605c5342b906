"""The `lookalike` command: a thin shell that parses, calls the library, formats and translates errors.

Each command module imports the library inside its functions, so `lookalike --help` loads neither
Faiss nor the embedder's frameworks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

_INTERRUPTED_EARLY = "interrupted while starting: nothing was changed\n"


def _interrupted_while_starting(signum: int, frame: object) -> None:
    sys.stderr.write(_INTERRUPTED_EARLY)
    os._exit(130)


# Ctrl-C while the command's own modules load ends with one line, not a traceback from an import.
_main_thread = threading.current_thread() is threading.main_thread()
if _main_thread:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import click  # noqa: E402

from .checking import check  # noqa: E402
from .common import INTERRUPTED, interrupted_import  # noqa: E402
from .duplicates import duplicates  # noqa: E402
from .evaluating import evaluate  # noqa: E402
from .indexing import index, reindex  # noqa: E402
from .searching import demo, info, models, search  # noqa: E402
from .serving import serve  # noqa: E402
from .tuning import plan, tune  # noqa: E402

if _main_thread:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class _Commands(click.Group):
    """The command group; Ctrl-C anywhere in a command (its imports too) ends with one line and status 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, ImportError) as error:
            if isinstance(error, ImportError) and not interrupted_import(error):
                raise
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lookalike")
def main() -> None:
    """Find the photos that look like this one."""


for command in (index, reindex, search, info, models, demo, serve, tune, plan, check, duplicates, evaluate):
    main.add_command(command)

__all__ = ["main"]
