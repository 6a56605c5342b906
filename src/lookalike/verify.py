"""Geometric verification of a shortlist, and the calibrated copy score.

A global vector says two pictures look alike; it cannot say that one is made
from the other. Local features can: RootSIFT keypoints of the query and of a
candidate are matched (Lowe's ratio test), and a homography is fitted with
OpenCV's MAGSAC++ (USAC). Matches consistent with one planar mapping (inliers)
are almost never many by chance, and they survive crops, turns, tilts,
perspective, pastes and screenshots. SIFT is not mirror-invariant, so when
the plain query verifies no candidate strongly its mirror is matched as well,
and the better of the two kept per candidate.

`copy_score` turns the inlier count and the best view's cosine similarity into
one number in [0, 1] whose threshold, COPY_THRESHOLD, is the same for every
query: at or above it a hit is called a copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .regions import as_pil

FEATURE_SIDE = 512  # pictures are shrunk to this long side before SIFT: speed, and edits rarely keep more detail
MAX_FEATURES = 800
RATIO = 0.8  # Lowe's ratio for RootSIFT
REPROJECTION_PX = 6.0  # at FEATURE_SIDE
MIN_MATCHES = 8  # fewer tentative matches cannot support a homography worth the name
STRONG_INLIERS = 30  # a candidate verified this well ends the shortlist: the copy is found

# Copy score: a logistic of verified inliers or of the best view's cosine similarity, whichever is higher.
# Measured on the copy-detection benchmark (benchmarks/copydetect.py): chance homographies on unrelated pictures
# keep 4-6 inliers (MAGSAC's minimal sample plus luck), copies that verify keep 10 to hundreds; copies that cannot
# verify (pixelated, smooth, JPEG 10) still reach cosine >= 0.92 with their original more often than unrelated
# pictures do. A similarity normalised by the query's background of far neighbours separated worse than the raw
# cosine of the best view: it flagged most no-original queries at any threshold that kept recall.
INLIER_MIDPOINT = 10.0
INLIER_SLOPE = 1.0
SIMILARITY_MIDPOINT = 0.92
SIMILARITY_SLOPE = 60.0
COPY_THRESHOLD = 0.5


@dataclass(frozen=True)
class LocalFeatures:
    """RootSIFT keypoints of one picture, in the coordinates of its FEATURE_SIDE copy."""

    points: np.ndarray  # float32 (N, 2)
    descriptors: np.ndarray  # float32 (N, 128), RootSIFT
    scale: float  # multiply points by this to get the picture's own pixels
    mirror_width: float = 0.0  # > 0: features of the mirrored picture, whose x maps back as mirror_width - x

    @property
    def count(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class Verification:
    """The outcome of matching a query with one candidate."""

    inliers: int
    matches: int
    mirrored: bool
    homography: np.ndarray | None  # query (feature copy, mirrored when `mirrored`) -> candidate (feature copy)
    query_points: np.ndarray  # inlier pairs in each picture's own pixels, for an explanation
    candidate_points: np.ndarray


NO_MATCH = Verification(0, 0, False, None, np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))


def extract_features(image: Image.Image | np.ndarray, max_features: int = MAX_FEATURES) -> LocalFeatures:
    """RootSIFT features of a picture (PIL image or uint8 RGB array)."""
    picture = as_pil(image)
    scale = max(picture.size) / FEATURE_SIDE if max(picture.size) > FEATURE_SIDE else 1.0
    if scale > 1.0:
        size = (max(1, round(picture.width / scale)), max(1, round(picture.height / scale)))
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    elif max(picture.size) < 256:  # a thumbnail: SIFT finds almost nothing at its native size
        factor = 256 / max(picture.size)
        picture = picture.resize(
            (round(picture.width * factor), round(picture.height * factor)), Image.Resampling.BICUBIC
        )
        scale = 1.0 / factor
    gray = _CLAHE.apply(cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2GRAY))
    keypoints, descriptors = _sift(max_features).detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), scale)
    points = np.asarray([kp.pt for kp in keypoints], dtype=np.float32)
    return LocalFeatures(points, root_sift(descriptors), scale)


_SIFT: dict[int, cv2.SIFT] = {}
# Local contrast equalisation and a lower contrast threshold: with OpenCV's defaults a third of the benchmark's
# photos (hazy landscapes, soft close-ups) gave under 30 keypoints; with these, under a tenth.
_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
CONTRAST_THRESHOLD = 0.02


def _sift(max_features: int) -> cv2.SIFT:
    if max_features not in _SIFT:
        create = cv2.SIFT_create  # type: ignore[attr-defined]  # OpenCV's stubs miss it; it is in every build
        _SIFT[max_features] = create(nfeatures=max_features, contrastThreshold=CONTRAST_THRESHOLD)
    return _SIFT[max_features]


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """Hellinger-kernel SIFT (L1-normalise, square root): better matches for the same cost."""
    descriptors = descriptors.astype(np.float32)
    descriptors /= descriptors.sum(axis=1, keepdims=True) + 1e-7
    return np.sqrt(descriptors)


def mirror_features(image: Image.Image | np.ndarray, max_features: int = MAX_FEATURES) -> LocalFeatures:
    """Features of the mirrored picture. Points stay in the mirrored frame (MAGSAC++ rejects reflections);
    `match` maps its inlier points back into the picture's own frame."""
    picture = as_pil(image)
    mirrored = extract_features(picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), max_features)
    return LocalFeatures(mirrored.points, mirrored.descriptors, mirrored.scale, mirror_width=float(picture.width))


def match(query: LocalFeatures, candidate: LocalFeatures) -> Verification:
    """Ratio-test matches of `query` in `candidate`, verified by a MAGSAC++ homography."""
    mirrored = query.mirror_width > 0
    if query.count < 2 or candidate.count < 2:
        return NO_MATCH
    pairs = _matcher().knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_MATCHES:
        return Verification(0, len(good), mirrored, None, NO_MATCH.query_points, NO_MATCH.candidate_points)
    source = query.points[[m.queryIdx for m in good]]
    target = candidate.points[[m.trainIdx for m in good]]
    homography, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, REPROJECTION_PX, maxIters=2000)
    if homography is None or mask is None or not _plausible(homography):
        return Verification(0, len(good), mirrored, None, NO_MATCH.query_points, NO_MATCH.candidate_points)
    inlier = mask.ravel().astype(bool)
    inliers = _distinct_points(target[inlier])  # many matches onto one spot are one piece of evidence
    query_points = source[inlier] * query.scale
    if query.mirror_width:
        query_points[:, 0] = query.mirror_width - query_points[:, 0]
    return Verification(inliers, len(good), mirrored, homography, query_points, target[inlier] * candidate.scale)


_MATCHER: list[cv2.BFMatcher] = []


def _matcher() -> cv2.BFMatcher:
    if not _MATCHER:
        _MATCHER.append(cv2.BFMatcher(cv2.NORM_L2))
    return _MATCHER[0]


def _plausible(homography: np.ndarray) -> bool:
    """Reject mappings that fold, or shrink or blow up area by more than 100x: chance fits, not copies."""
    determinant = float(np.linalg.det(homography[:2, :2]))
    return (
        0.01 < abs(determinant) < 100.0 and abs(float(homography[2, 0])) < 0.01 and abs(float(homography[2, 1])) < 0.01
    )


def _distinct_points(points: np.ndarray, cell: float = 4.0) -> int:
    return len({(int(x // cell), int(y // cell)) for x, y in points})


def verify(
    query: LocalFeatures, query_mirror: LocalFeatures | None, candidates: Sequence[LocalFeatures]
) -> list[Verification]:
    """The better of the query and its mirror against each candidate, in the candidates' order."""
    results = []
    for candidate in candidates:
        best = match(query, candidate)
        if query_mirror is not None:
            flipped = match(query_mirror, candidate)
            if flipped.inliers > best.inliers:
                best = flipped
        results.append(best)
    return results


def verify_shortlist(
    query_image: Image.Image | np.ndarray,
    candidate_features: Callable[[int], LocalFeatures | None],
    count: int,
    strong: int = STRONG_INLIERS,
) -> list[Verification]:
    """Verify candidates 0..count-1 in their order (the fused ranking); returns one Verification per candidate reached.

    `candidate_features(i)` returns the i-th candidate's features (stored ones, or extracted from its file), or
    None when it cannot be read; each is asked for once. Verification stops after a candidate with `strong`
    inliers (0: never). The query's mirror is extracted only when the plain query found no strong candidate:
    most copies are not mirrored, and the mirror costs as much as the query.
    """
    query = extract_features(query_image)
    results: list[Verification] = []
    seen: list[LocalFeatures | None] = []
    for position in range(count):
        features = candidate_features(position)
        seen.append(features)
        results.append(NO_MATCH if features is None else match(query, features))
        if strong and results[-1].inliers >= strong:
            return results
    mirrored = mirror_features(query_image)
    for position, features in enumerate(seen):
        if features is not None:
            flipped = match(mirrored, features)
            if flipped.inliers > results[position].inliers:
                results[position] = flipped
            if strong and flipped.inliers >= strong:
                return results
    return results


def rerank(similarities: Sequence[float], checks: Sequence[Verification]) -> list[tuple[int, float]]:
    """(position, copy score) best first: verified candidates by inliers, then the rest by similarity.

    `similarities` are the fused cosine scores of the ranking, best first; `checks` the verifications of its
    first len(checks) positions.
    """
    keyed = []
    for position, similarity in enumerate(similarities):
        inliers = checks[position].inliers if position < len(checks) else 0
        verified = inliers >= INLIER_MIDPOINT
        keyed.append(((verified, inliers if verified else 0, similarity), position, copy_score(inliers, similarity)))
    keyed.sort(key=lambda item: item[0], reverse=True)
    return [(position, score) for _, position, score in keyed]


def copy_score(inliers: int, similarity: float) -> float:
    """A copy score in [0, 1] from the verified inliers and the best view's cosine similarity.

    At or above COPY_THRESHOLD a hit is called a copy: 10 or more verified inliers, or a cosine of at least 0.92.
    """
    from_inliers = _logistic(INLIER_SLOPE * (inliers - INLIER_MIDPOINT + 0.5))
    from_similarity = _logistic(SIMILARITY_SLOPE * (similarity - SIMILARITY_MIDPOINT))
    return max(from_inliers, from_similarity)


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def pack_features(features: LocalFeatures) -> bytes:
    """A compact form for storage: float16 points, RootSIFT quantised to uint8, and the scale."""
    header = np.asarray([features.count, features.scale], dtype=np.float32).tobytes()
    points = features.points.astype(np.float16).tobytes()
    descriptors = np.clip(np.rint(features.descriptors * 255.0), 0, 255).astype(np.uint8).tobytes()
    return header + points + descriptors


def unpack_features(blob: bytes) -> LocalFeatures:
    """The inverse of `pack_features` (descriptors to within 1/255)."""
    count_f, scale = np.frombuffer(blob[:8], dtype=np.float32)
    count = int(count_f)
    points = np.frombuffer(blob[8 : 8 + count * 4], dtype=np.float16).reshape(count, 2).astype(np.float32)
    descriptors = np.frombuffer(blob[8 + count * 4 :], dtype=np.uint8).reshape(count, 128).astype(np.float32) / 255.0
    return LocalFeatures(points, descriptors, float(scale))


__all__ = [
    "COPY_THRESHOLD",
    "LocalFeatures",
    "Verification",
    "copy_score",
    "extract_features",
    "match",
    "mirror_features",
    "pack_features",
    "rerank",
    "unpack_features",
    "verify",
    "verify_shortlist",
]
