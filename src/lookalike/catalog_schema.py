"""The catalog's schema ladder: each version's tables, and the step from every version to the next.

Versions: 1 images, embeddings, tombstones, meta; 2 duplicate tables (catalog_duplicates.py); 3 embedding
checksums; 4 embeddings in shard files beside the catalog (embedding_shards.py).

MIGRATIONS[n] brings a catalog from version n to n + 1 (PRAGMA user_version). A new table or column is a new
step appended here; catalogs of every earlier version climb the steps they lack when they are opened.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from .catalog_duplicates import SCHEMA_2
from .embedding_shards import SCHEMA_4
from .errors import CorruptCatalogError, SchemaVersionError
from .vector_integrity import vector_checksum

# Version 1: images, embeddings, tombstones, meta.
_SCHEMA_1 = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped')),
    error TEXT
);
CREATE INDEX images_by_hash ON images (content_hash);
CREATE TABLE embeddings (
    image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE TABLE tombstones (id INTEGER PRIMARY KEY);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# Version 3: a checksum of every stored embedding, verified whenever vectors are read (a flipped bit that keeps a
# vector's norm still changes its checksum).
SCHEMA_3 = """
CREATE TABLE embedding_checksums (
    image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    crc INTEGER NOT NULL
);
"""


def run_script(connection: sqlite3.Connection, script: str) -> None:
    # executescript would COMMIT the migration's transaction; run the statements one by one inside it.
    for statement in script.strip().split(";"):
        if statement.strip():
            connection.execute(statement)


# The schema ladder: MIGRATIONS[n] brings a catalog from version n to n + 1 (PRAGMA user_version). A new table
# or column is a new step appended here; catalogs of every earlier version climb the steps they lack on open.
def _add_checksums(connection: sqlite3.Connection) -> None:
    """Step 3: the checksum table, filled for the embeddings already stored (a page at a time)."""
    run_script(connection, SCHEMA_3)
    after = 0
    query = "SELECT image_id, vector FROM embeddings WHERE image_id > ? ORDER BY image_id LIMIT 4096"
    while rows := connection.execute(query, (after,)).fetchall():
        connection.executemany(
            "INSERT INTO embedding_checksums (image_id, crc) VALUES (?, ?)",
            [(image_id, vector_checksum(vector)) for image_id, vector in rows],
        )
        after = rows[-1][0]


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    lambda connection: run_script(connection, _SCHEMA_1),
    lambda connection: run_script(connection, SCHEMA_2),  # signatures, decisions, quarantined rows
    _add_checksums,
    lambda connection: run_script(connection, SCHEMA_4),  # vectors in shard files beside the catalog
]
SCHEMA_VERSION = len(MIGRATIONS)
# Steps that only add tables. A catalog that cannot be written (read-only media) and lacks them gets them as empty
# temporary tables of its connection instead: what they would hold anyway, since nothing of this version wrote them.
TABLE_ONLY_STEPS = {1: SCHEMA_2, 2: SCHEMA_3, 3: SCHEMA_4}


def as_temporary(script: str) -> str:
    # A temporary table cannot reference a table of the main database; nothing writes to these ones anyway.
    script = script.replace("CREATE TABLE", "CREATE TEMP TABLE")
    return re.sub(r"\s+REFERENCES \w+ \(\w+\)( ON DELETE CASCADE)?", "", script)


def climb_from_nothing(connection: sqlite3.Connection) -> None:
    """Give a new catalog file every step of the ladder."""
    for version, step in enumerate(MIGRATIONS):
        step(connection)
        connection.execute(f"PRAGMA user_version = {version + 1}")


def climb_to_current(
    connection: sqlite3.Connection, path: Path, transaction: Callable[[], AbstractContextManager]
) -> None:
    """Climb the schema ladder from the catalog's version to SCHEMA_VERSION, one transaction a step."""
    version = _schema_version(connection)
    if version == 0:  # every catalog lookalike makes has climbed at least one step before it is in place
        raise CorruptCatalogError(
            f"{path} is not a lookalike catalog: restore it from a backup, or index the photos again into a new folder"
        )
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"{path} was written by a newer lookalike (schema {version}); upgrade lookalike")
    if version < SCHEMA_VERSION and not os.access(path.parent, os.W_OK):
        _stand_in_for_steps(connection, path, version)
        return
    while version < SCHEMA_VERSION:
        with transaction():
            current = _schema_version(connection)  # another process may have climbed this step meanwhile
            if current == version:
                MIGRATIONS[version](connection)
                connection.execute(f"PRAGMA user_version = {version + 1}")
        version = _schema_version(connection)


def _stand_in_for_steps(connection: sqlite3.Connection, path: Path, version: int) -> None:
    """Give a catalog on read-only media the tables of the steps it lacks, empty and for this connection only."""
    for step in range(version, SCHEMA_VERSION):
        if step not in TABLE_ONLY_STEPS:
            raise SchemaVersionError(
                f"{path} has schema {version} and cannot be written here: open it once where it can be "
                "written, so it is brought up to date"
            )
        run_script(connection, as_temporary(TABLE_ONLY_STEPS[step]))


def _schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])
