"""Query region proposals: the tile of a mosaic, the photo inside a screenshot or pasted on another, turns."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookalike.demo import sample_photo
from lookalike.errors import LookalikeError
from lookalike.regions import find_rectangles, fuse_view_hits, grid_boxes, propose_views, squash

COLLECTION = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
FILLERS = ("camera", "moon", "coins", "brick", "grass", "gravel", "cell", "hubble_deep_field", "retina")


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def mosaic_3x3(photo: str, slot: int, tile: int = 200) -> Image.Image:
    """A 3x3 mosaic with `photo` in `slot` and photos that are not in the collection elsewhere."""
    canvas = Image.new("RGB", (3 * tile, 3 * tile))
    fillers = iter(FILLERS)
    for i in range(9):
        picture = sample_photo(photo if i == slot else next(fillers)).resize((tile, tile))
        canvas.paste(picture, ((i % 3) * tile, (i // 3) * tile))
    return canvas


def browser_screenshot(photo: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A flat page with a header and lines of text, and the photo at about 30% of the screen."""
    screen = Image.new("RGB", (1280, 720), (250, 250, 250))
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, 1280, 70), fill=(210, 215, 225))
    for y in range(90, 700, 24):
        draw.rectangle((60, y, 1200 if y % 48 else 800, y + 7), fill=(60, 60, 60))
    box = (700, 180, 700 + 520, 180 + 346)
    screen.paste(photo.resize((box[2] - box[0], box[3] - box[1])), box[:2])
    return screen, box


@pytest.fixture(scope="module")
def collection_vectors(embedder) -> np.ndarray:
    return embedder.embed(np.stack([squash(sample_photo(name), embedder.input_size) for name in COLLECTION]))


def best_match(embedder, collection_vectors: np.ndarray, query: Image.Image) -> tuple[str, str]:
    """(name of the best collection photo, kind of the view that found it), fusing every view by max."""
    views = propose_views(query, embedder.input_size)
    scores = embedder.embed(np.stack([v.pixels for v in views])) @ collection_vectors.T
    ids = np.tile(np.arange(len(COLLECTION)), (len(views), 1))
    image_id, _, view = fuse_view_hits(ids, scores)[0]
    return COLLECTION[image_id], views[view].kind


def test_a_3x3_mosaic_has_its_tiles_among_the_views() -> None:
    mosaic = mosaic_3x3("coffee", slot=5)
    boxes = [view.box for view in propose_views(mosaic, pieces=("whole", "grid")) if view.kind == "grid3"]
    assert (400, 200, 600, 400) in boxes
    assert grid_boxes((600, 600), 3)[5] == (400, 200, 600, 400)


def test_the_original_of_a_mosaic_tile_ranks_first_through_its_tile_view(embedder, collection_vectors) -> None:
    assert best_match(embedder, collection_vectors, mosaic_3x3("chelsea", slot=7)) == ("chelsea", "grid3")


def test_the_photo_inside_a_browser_screenshot_is_found_as_a_rectangle() -> None:
    screen, box = browser_screenshot(sample_photo("rocket"))
    found = find_rectangles(screen)
    assert max(iou(candidate, box) for candidate in found) > 0.9


def test_a_screenshot_finds_its_photo_first(embedder, collection_vectors) -> None:
    screen, _ = browser_screenshot(sample_photo("astronaut"))
    name, kind = best_match(embedder, collection_vectors, screen)
    assert name == "astronaut"
    assert kind == "rect"


def test_a_photo_pasted_onto_another_is_found_by_its_outline() -> None:
    background = sample_photo("brick").resize((900, 700))
    box = (300, 150, 300 + 420, 150 + 320)
    background.paste(sample_photo("chelsea").resize((420, 320)), box[:2])
    assert max(iou(candidate, box) for candidate in find_rectangles(background)) > 0.85


def test_a_quarter_turn_is_found_through_the_turned_view(embedder, collection_vectors) -> None:
    turned = sample_photo("rocket").transpose(Image.Transpose.ROTATE_90)
    assert best_match(embedder, collection_vectors, turned) == ("rocket", "turn270")


def test_a_flat_picture_proposes_no_rectangles() -> None:
    assert find_rectangles(Image.new("RGB", (800, 600), (30, 120, 200))) == []


def test_fusion_keeps_each_image_once_at_its_best_view() -> None:
    ids = np.array([[3, 1, -1], [1, 2, 3]])
    scores = np.array([[0.9, 0.5, 0.0], [0.8, 0.7, 0.1]], dtype=np.float32)
    assert [(i, round(s, 2), v) for i, s, v in fuse_view_hits(ids, scores)] == [(3, 0.9, 0), (1, 0.8, 1), (2, 0.7, 1)]


def test_an_unknown_piece_is_refused() -> None:
    with pytest.raises(LookalikeError, match="unknown view pieces"):
        propose_views(Image.new("RGB", (64, 64)), pieces=("whole", "zoom"))


def test_background_normalisation_demotes_a_view_that_is_close_to_everything() -> None:
    ids = np.array([[7, 8, 9, 10], [5, 6, 11, 12]])
    scores = np.array([[0.80, 0.79, 0.79, 0.78], [0.75, 0.40, 0.38, 0.37]], dtype=np.float32)  # a flat tile, a photo
    assert fuse_view_hits(ids, scores)[0][0] == 7
    top_id, top_score, top_view = fuse_view_hits(ids, scores, background=(1, 4))[0]
    assert (top_id, top_view) == (5, 1)
    assert abs(top_score - 0.75) < 1e-6  # the raw cosine, not the normalised one
