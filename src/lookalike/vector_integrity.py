"""Is a stored embedding still what the embedder wrote? A checksum per row, and what every embedding looks like.

A failing disk or a stray write can flip bits in a stored vector; ranked, it gives absurd scores. Every vector is
stored with a CRC-32 of its bytes (schema step 3), and besides, every embedder writes finite vectors of unit
length (or all zeros, for a blank image): a row failing either test is damaged and never ranked.
"""

from __future__ import annotations

import zlib

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
