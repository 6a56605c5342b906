"""What every command shares: turning library errors into one line, progress, shared options."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

MAX_SHOWN_SKIPS = 20
INTERRUPTED = "interrupted: everything embedded so far is kept; run the same command again to resume"

# The library names its parameters; the flag that sets each one, for the hint after an error.
FLAGS = {
    "k": "-k",
    "target_recall": "--target-recall",
    "queries": "--queries",
    "embedder": "--model",
    "root": "PHOTO_DIR",
    "size": "--max-memory",
    "token": "--token (or LOOKALIKE_TOKEN)",
    "kind": "--kind",
    "metric": "--metric",
    "sample": "--sample",
    "edits": "--edits",
    "families": "--families",
    "scratch": "TMPDIR",
}


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one `error:` line and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run(action: Callable[[], Any]) -> Any:
    """Run a library call; a LookalikeError becomes one line on stderr (with the flag to change) and exit status 1.

    Ctrl-C is not caught here: the command group turns it into one line and status 130 wherever it lands.
    """
    from ..errors import CollectionNotFoundError, EmbedderMismatchError, InvalidArgumentError, LookalikeError

    try:
        return action()
    except CollectionNotFoundError as error:
        folder = _current_param("index_dir")
        fail(f"{error}: build one with 'lookalike index PHOTO_DIR --index {folder}'" if folder else str(error))
    except EmbedderMismatchError as error:
        fail(f"{error}: give another --index folder")
    except InvalidArgumentError as error:
        flag = FLAGS.get(error.argument or "")
        fail(f"{error} ({flag})" if flag else str(error))
    except LookalikeError as error:
        fail(str(error))
    except OSError as error:
        fail(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))


def interrupted_import(error: ImportError) -> bool:
    """True for an import that Ctrl-C broke off (a C extension's initialisation reports it as ImportError)."""
    return isinstance(error.__context__, KeyboardInterrupt) or isinstance(error.__cause__, KeyboardInterrupt)


def _current_param(name: str) -> Any:
    context = click.get_current_context(silent=True)
    return context.params.get(name) if context is not None else None


def notice(message: str) -> None:
    """Print a library notice."""
    click.echo(f"note: {message}", err=True)


class Progress:
    """A tqdm bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, unit: str = "img") -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.unit = unit
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit, dynamic_ncols=True, file=sys.stderr)
        if total != self.bar.total:  # a cluster ingest's total grows while the scan goes on
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


index_option = click.option(
    "--index", "index_dir", required=True, type=click.Path(file_okay=False), help="The index folder."
)
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the CNN runs.",
)


max_megapixels_option = click.option(
    "--max-megapixels",
    type=click.FloatRange(1, min_open=False),
    help="Largest image to decode, in megapixels (default: what the memory available allows); larger ones are "
    "refused as possible decompression bombs.",
)


def index_options(function: Callable) -> Callable:
    """Options that shape an index kind (all optional; kinds pick sensible values)."""
    for option in reversed(
        [
            click.option("--nlist", type=click.IntRange(1), help="IVF: number of lists (default ~8 x sqrt(N))."),
            click.option("--m", "pq_m", type=click.IntRange(1), help="IVFPQ: sub-quantizers (must divide the dim)."),
            click.option("--nbits", type=click.IntRange(1, 16), help="IVFPQ: bits per sub-quantizer (default 8)."),
            click.option("--hnsw-m", type=click.IntRange(2), help="HNSW: neighbours per node (default 32)."),
            click.option("--ef-construction", type=click.IntRange(1), help="HNSW: build-time beam (default 80)."),
        ]
    ):
        function = option(function)
    return function


def collect_options(
    nlist: int | None, pq_m: int | None, nbits: int | None, hnsw_m: int | None, ef_construction: int | None
) -> dict[str, int]:
    given = {"nlist": nlist, "m": pq_m, "nbits": nbits, "M": hnsw_m, "efConstruction": ef_construction}
    return {key: value for key, value in given.items() if value is not None}
