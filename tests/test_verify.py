"""Geometric verification: many inliers for edited copies of a photo, few for an unrelated photo."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from lookalike.demo import sample_photo
from lookalike.verify import (
    COPY_THRESHOLD,
    copy_score,
    extract_features,
    match,
    mirror_features,
    pack_features,
    rerank,
    unpack_features,
    verify,
    verify_shortlist,
)


def rotated_crop(name: str) -> Image.Image:
    """Half of the photo's width and height (a quarter of its area), tilted by 25 degrees."""
    photo = sample_photo(name)
    w, h = photo.size
    crop = photo.crop((w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2))
    return crop.rotate(25, resample=Image.Resampling.BICUBIC, expand=True)


def test_a_rotated_crop_has_many_inliers_and_an_unrelated_photo_few() -> None:
    query = extract_features(rotated_crop("astronaut"))
    original = match(query, extract_features(sample_photo("astronaut")))
    unrelated = match(query, extract_features(sample_photo("coffee")))
    assert original.inliers >= 40
    assert unrelated.inliers < 12


def test_the_homography_maps_the_crop_back_into_its_original() -> None:
    photo = sample_photo("chelsea")
    crop = photo.crop((100, 50, 350, 250))
    result = match(extract_features(crop), extract_features(photo))
    centre = result.homography @ np.array([125.0 / _scale(crop), 100.0 / _scale(crop), 1.0])
    x, y = centre[:2] / centre[2] * _scale(photo)
    assert abs(x - 225) < 8 and abs(y - 150) < 8


def _scale(picture: Image.Image) -> float:
    return extract_features(picture).scale


def test_a_mirrored_copy_is_verified_through_the_mirror_only() -> None:
    photo = sample_photo("rocket")
    query = ImageOps.mirror(photo.crop((0, 0, 400, 300)))
    original = extract_features(photo)
    (plain,) = verify(extract_features(query), None, [original])
    (both,) = verify(extract_features(query), mirror_features(query), [original])
    assert both.mirrored and both.inliers >= 30
    assert plain.inliers < both.inliers / 3


def test_a_pixelated_thumbnail_still_verifies() -> None:
    photo = sample_photo("astronaut")
    thumbnail = photo.resize((96, 96))
    result = match(extract_features(thumbnail), extract_features(photo))
    assert result.inliers >= 14


def test_the_copy_score_calls_a_verified_hit_a_copy_and_noise_not() -> None:
    assert copy_score(60, 0.5) >= COPY_THRESHOLD
    assert copy_score(5, 0.8) < COPY_THRESHOLD  # chance homographies keep 4-6 inliers
    assert copy_score(0, 0.97) >= COPY_THRESHOLD  # unverifiable (a pixelated copy) but nearly the same vector


def test_the_shortlist_puts_the_verified_original_first_and_stops_there() -> None:
    names = ["coffee", "chelsea", "astronaut", "rocket"]  # the fused ranking, the original third
    features = {name: extract_features(sample_photo(name)) for name in names}
    asked: list[int] = []

    def candidate(position: int):
        asked.append(position)
        return features[names[position]]

    checks = verify_shortlist(rotated_crop("astronaut"), candidate, count=4)
    assert asked == [0, 1, 2]  # the astronaut verified strongly: the rocket was never read
    order = rerank([0.71, 0.70, 0.69, 0.60], checks)
    assert order[0][0] == 2 and order[0][1] >= COPY_THRESHOLD
    assert all(score < COPY_THRESHOLD for _, score in order[1:])


def test_packed_features_match_like_the_originals() -> None:
    photo = sample_photo("coffee")
    stored = extract_features(photo)
    restored = unpack_features(pack_features(stored))
    assert restored.count == stored.count
    assert len(pack_features(stored)) == 8 + stored.count * (4 + 128)
    query = extract_features(photo.crop((50, 50, 450, 350)))
    assert abs(match(query, restored).inliers - match(query, stored).inliers) <= max(3, stored.count // 50)
