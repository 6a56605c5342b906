"""The public surface: the error tree, the names `import lookalike` offers, sizes, and a start-up that loads little."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import lookalike
from lookalike import errors
from lookalike.sizes import format_size, parse_size


def test_the_public_names_are_pinned() -> None:
    assert lookalike.__all__ == [
        "BusyError",
        "CatalogWriteError",
        "Collection",
        "CollectionInfo",
        "CollectionNotFoundError",
        "CorruptCatalogError",
        "CorruptError",
        "CorruptIndexError",
        "DEFAULT_EMBEDDER",
        "EmbedderMismatchError",
        "EmbedderUnavailableError",
        "Hit",
        "ImageDecodeError",
        "IndexNotFoundError",
        "IndexPlan",
        "IndexSpecError",
        "IngestReport",
        "InvalidArgumentError",
        "KINDS",
        "LiveCollection",
        "LookalikeError",
        "NotFoundError",
        "NotIndexedError",
        "Query",
        "QueryResult",
        "SchemaVersionError",
        "StorageError",
        "UnknownEmbedderError",
        "__version__",
        "embedder_names",
        "load_embedder",
        "plan_index",
    ]
    for name in lookalike.__all__:
        assert getattr(lookalike, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Colection'"):
        lookalike.Colection  # noqa: B018


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (errors.IndexSpecError, errors.InvalidArgumentError),
        (errors.UnknownEmbedderError, errors.InvalidArgumentError),
        (errors.EmbedderMismatchError, errors.InvalidArgumentError),
        (errors.CollectionNotFoundError, errors.NotFoundError),
        (errors.NotIndexedError, errors.NotFoundError),
        (errors.CorruptIndexError, errors.CorruptError),
        (errors.CatalogWriteError, errors.StorageError),
        (errors.BusyError, errors.LookalikeError),
    ],
)
def test_every_error_belongs_to_its_kind(error: type, kind: type) -> None:
    assert issubclass(error, kind) and issubclass(error, errors.LookalikeError)


def test_the_old_name_of_a_missing_collection_still_catches_it() -> None:
    assert errors.IndexNotFoundError is errors.CollectionNotFoundError


def test_a_bad_argument_names_the_parameter_for_the_shells() -> None:
    error = errors.InvalidArgumentError("the number of results must be between 1 and 10000, not 0", "k")
    assert error.argument == "k" and str(error).startswith("the number of results")


def test_the_library_never_names_a_command_line_flag() -> None:
    """Library messages say what is wrong; the CLI adds the flag (see cli/common.py)."""
    from pathlib import Path

    package = Path(lookalike.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.parent.name in ("cli", "server"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(flag in line for flag in ("--index", "--kind", "--target-recall", "--engine", "-k must")):
                offenders.append(f"{path.name}:{number}")
    assert offenders == []


def test_importing_the_command_line_loads_no_heavy_library() -> None:
    code = (
        "import sys, json, lookalike.cli\n"
        "print(json.dumps([m for m in ('faiss', 'torch', 'onnxruntime', 'fastapi', 'numpy') if m in sys.modules]))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == []


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GB", 2_000_000_000), ("512MB", 512_000_000), ("1.5GiB", 1_610_612_736), ("1000000", 1_000_000), ("4 kb", 4000)],
)
def test_sizes_parse_as_people_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1GB", "2 GX", "lots"])
def test_a_size_that_is_not_one_is_a_bad_argument(text: str) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        parse_size(text)


def test_sizes_print_in_decimal_units() -> None:
    assert [format_size(v) for v in (12, 640_000, 1_500_000_000, 2e12)] == ["12 B", "640 kB", "1.5 GB", "2 TB"]
    assert format_size(2e9, ".2f") == "2.00 GB"
