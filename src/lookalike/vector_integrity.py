"""Is a stored embedding still what the embedder wrote? A checksum per row, and what every embedding looks like.

A failing disk or a stray write can flip bits in a stored vector; ranked, it gives absurd scores. Every vector is
stored with a CRC-32 of its bytes (schema step 3), and besides, every embedder writes finite vectors of unit
length (or all zeros, for a blank image): a row failing either test is damaged and never ranked.
"""

from __future__ import annotations

import zlib
from collections import Counter

import numpy as np


def vector_checksum(blob: bytes) -> int:
    """The CRC-32 of a stored vector's bytes."""
    return zlib.crc32(blob)


def sound_vectors(vectors: np.ndarray, row_bytes: int) -> np.ndarray:
    """Which rows look like what an embedder stores: finite, and unit length (or all zeros, for a blank image).

    A flipped bit in a stored vector almost always breaks one of these; such a row must not be ranked.
    """
    if vectors.size == 0 or row_bytes % 4:
        return np.zeros(len(vectors), dtype=bool)
    with np.errstate(all="ignore"):
        # In float32: rounding is ~1e-7 x sqrt(dim), far inside the tolerance, and a flipped exponent bit that
        # overflows the sum to inf is caught as damage anyway. (float64 costs a copy of every vector.)
        squares = np.einsum("ij,ij->i", vectors, vectors) if vectors.dtype == np.float32 else None
        norms = np.sqrt(squares) if squares is not None else np.linalg.norm(vectors.astype(np.float64), axis=1)
    return np.isfinite(norms) & ((np.abs(norms - 1.0) < 1e-3) | (norms == 0.0))


def intact_rows(rows: list[tuple]) -> list[bool]:
    """For (.., vector bytes, crc or None) rows: True where the bytes still match their recorded checksum."""
    return [row[-1] is None or zlib.crc32(row[-2]) == row[-1] for row in rows]


def checked_vectors(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, float32 vectors) of the sound rows among (id, vector bytes, crc or None) rows, in their order.

    Left out: rows failing their checksum, rows of another length than most (a torn or foreign write), and
    vectors that are not finite and of unit length. A damaged vector is never ranked.
    """
    rows = [row for row, ok in zip(rows, intact_rows(rows)) if ok]
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    lengths = Counter(len(row[1]) for row in rows)
    size = lengths.most_common(1)[0][0]
    if len(lengths) > 1:
        rows = [row for row in rows if len(row[1]) == size]
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    # One copy of all the rows' bytes into one writable buffer (np.stack would copy them twice).
    vectors = np.frombuffer(bytearray().join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
    sound = sound_vectors(vectors, size)
    return (ids, vectors) if sound.all() else (ids[sound], vectors[sound])
