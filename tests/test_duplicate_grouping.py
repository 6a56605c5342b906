"""How near duplicates are grouped when look-alikes crowd together: made-up thumbnails and vectors, so that each
case shows exactly one rule (the real model's part is in test_duplicates.py)."""

from __future__ import annotations

import numpy as np

from lookalike.duplicates import ImageFacts, find_duplicates, thresholds_for
from lookalike.thumbnail_alignment import crop_tolerant_correlation, watermark_masked_correlation

MODEL = "efficientnet-lite0"
NEAR_CORRELATION = thresholds_for(MODEL).near_correlation


def thumbnail(pixels: np.ndarray) -> bytes:
    """A signature whose grey thumbnail is `pixels` (32 x 32) and whose colour thumbnail is grey."""
    grey = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    colour = np.repeat(grey.reshape(8, 4, 8, 4).mean(axis=(1, 3)).astype(np.uint8)[..., None], 3, axis=2)
    return grey.tobytes() + colour.tobytes()


def drawing(seed: int) -> np.ndarray:
    """A smooth 32 x 32 picture: a few blobs on a mid-grey ground."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:32, 0:32]
    picture = np.full((32, 32), 128.0)
    for _ in range(6):
        cy, cx, radius, level = rng.uniform(4, 28), rng.uniform(4, 28), rng.uniform(3, 8), rng.uniform(-90, 90)
        picture += level * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))
    return picture


def files(signatures: list[bytes], sizes: list[int]) -> list[ImageFacts]:
    """One file per signature, all 640 x 480; the larger file is kept first (the keeper rules' "larger file")."""
    return [
        ImageFacts(i + 1, f"/photos/{i}.png", size, f"{i:032x}", 640, 480, 10**18, signature)
        for i, (signature, size) in enumerate(zip(signatures, sizes))
    ]


def unit_vectors(cosines: np.ndarray) -> np.ndarray:
    """Unit vectors whose pairwise cosines are `cosines` (a symmetric positive definite matrix)."""
    return np.linalg.cholesky(cosines).astype(np.float32)


def correlation(first: bytes, second: bytes) -> float:
    """The thumbnail correlation grouping sees between two of `files`' (same size: whole, turned, a box out)."""
    aspect = 640 / 480
    whole = crop_tolerant_correlation(first, [second], crops=False, aspect=aspect)[0]
    return float(max(whole, watermark_masked_correlation(first, [second], aspect)[0]))


def members(groups) -> list[set[int]]:
    return [{member.id for member in group.members} for group in groups]


def test_an_original_that_a_sibling_reached_first_still_keeps_its_copy() -> None:
    # A sibling drawing (kept first: larger file) looks enough like the original to be linked to it, but not
    # like the original's copy. Joining the sibling would strand the copy; the original leads its own group.
    base, other = drawing(1), drawing(2)
    original, sibling, copy = base, base + 0.65 * (other - 128), base - 0.35 * (other - 128)
    signatures = [thumbnail(sibling), thumbnail(original), thumbnail(copy)]
    assert correlation(signatures[0], signatures[1]) >= NEAR_CORRELATION  # sibling ~ original
    assert correlation(signatures[0], signatures[2]) < NEAR_CORRELATION  # sibling !~ copy
    assert correlation(signatures[1], signatures[2]) > correlation(signatures[0], signatures[1])
    vectors = unit_vectors(np.array([[1, 0.8, 0.8], [0.8, 1, 0.8], [0.8, 0.8, 1]]))

    groups = find_duplicates(files(signatures, [3000, 2000, 1000]), vectors, MODEL)

    assert members(groups) == [{2, 3}]
    assert groups[0].keep.id == 2


def test_a_copy_joins_the_leader_it_is_closest_to_not_the_first() -> None:
    # Two leaders that are not duplicates of each other both link a copy; the copy goes to the closer one,
    # even though the other comes first in keeper order.
    base, change = drawing(3), drawing(4) - 128
    first, second, copy = base + 0.2 * change, base - 0.2 * change, base - 0.05 * change
    signatures = [thumbnail(first), thumbnail(second), thumbnail(copy)]
    assert correlation(signatures[0], signatures[1]) < NEAR_CORRELATION
    assert NEAR_CORRELATION <= correlation(signatures[0], signatures[2]) < correlation(signatures[1], signatures[2])
    vectors = unit_vectors(np.array([[1, 0.6, 0.8], [0.6, 1, 0.8], [0.8, 0.8, 1]]))

    groups = find_duplicates(files(signatures, [3000, 2000, 1000]), vectors, MODEL)

    assert members(groups) == [{2, 3}]


def test_a_copy_outside_its_originals_nearest_neighbours_is_still_found() -> None:
    # With one neighbour per image, the original's only neighbour is a look-alike whose pixels differ; the
    # copy lists the original, and grouping reads the lists both ways.
    original, lookalike = drawing(5), drawing(6)
    copy = original + 0.1 * (drawing(7) - 128)
    signatures = [thumbnail(original), thumbnail(lookalike), thumbnail(copy)]
    vectors = unit_vectors(np.array([[1, 0.96, 0.93], [0.96, 1, 0.85], [0.93, 0.85, 1]]))
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # the original's nearest is the look-alike

    groups = find_duplicates(files(signatures, [3000, 2000, 1000]), vectors, MODEL, neighbours=1)

    assert members(groups) == [{1, 3}]


def test_a_series_of_drawings_is_not_gathered_under_its_first_but_each_joins_what_it_matches_best() -> None:
    # Four drawings, each a step further from the first: the first lines up with all three well enough to link
    # them, but the third and fourth each match a sibling clearly better than the first (duplicate_rivals.py).
    base, step = drawing(10), drawing(11) - 128
    signatures = [thumbnail(base + 0.2 * k * step) for k in range(4)]
    assert min(correlation(signatures[0], other) for other in signatures[1:]) >= NEAR_CORRELATION
    vectors = unit_vectors(np.full((4, 4), 0.9) + 0.1 * np.eye(4))

    groups = find_duplicates(files(signatures, [4000, 3000, 2000, 1000]), vectors, MODEL)

    assert members(groups) == [{1, 2}, {3, 4}]


def test_each_neighbour_list_holds_who_it_lists_and_who_lists_it_once_best_first() -> None:
    """k-NN is not symmetric; grouping looks at the joined lists, each pair once with its best similarity."""
    from lookalike.duplicate_neighbours import neighbour_lists

    positions = np.arange(4)
    found = np.array([[1, 2], [0, -1], [3, 0], [2, 1]])  # -1: fewer neighbours than k
    sims = np.array([[0.9, 0.5], [0.9, -np.inf], [0.7, 0.5], [0.7, 0.6]], dtype=np.float32)
    extra = (np.array([3, 0]), np.array([0, 0]), np.array([0.8, 1.0], dtype=np.float32))  # 0 -> 0 is dropped
    lists = neighbour_lists(positions, sims, found, extra)
    assert {p: rows.tolist() for p, (_, rows) in lists.items()} == {0: [1, 3, 2], 1: [0, 3], 2: [3, 0], 3: [0, 2, 1]}
    np.testing.assert_allclose(lists[0][0], [0.9, 0.8, 0.5])
    np.testing.assert_allclose(lists[3][0], [0.8, 0.7, 0.6])
    # Equal similarities keep the rows in order.
    tied = neighbour_lists(np.arange(3), np.full((3, 2), 0.5, np.float32), np.array([[2, 1], [0, 2], [1, 0]]))
    assert [rows.tolist() for _, rows in tied.values()] == [[1, 2], [0, 2], [0, 1]]
