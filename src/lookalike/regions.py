"""Query region proposals: the views of a query picture that are worth embedding, and their fusion.

A copy is often only part of the query (the photo inside a screenshot, one
tile of a mosaic, a photo pasted onto another) or a turned or mirrored version
of the original. One global vector of the whole picture misses those, so the
query side proposes several views, each embedded as its own query vector:

- `whole`: the whole picture, squashed to the model's square input as the
  collection's images are at ingest (a mild edit then lands on the same vector);
- `turns` and `mirror`: the whole picture turned by 90/180/270 degrees, and mirrored;
- `grid`: the tiles of a 2x2 and a 3x3 grid (mosaics);
- `rects`: rectangles found in the picture: textured blobs on a flat background
  (a photo in a browser or phone screenshot, a meme's photo between its bars)
  and closed outlines of long straight edges (a photo pasted onto another).

Hits of all views are fused per collection image by their best score. Only
numpy, Pillow and OpenCV are used; the module never loads a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .errors import LookalikeError

Box = tuple[int, int, int, int]  # left, top, right, bottom in the query's pixels

ALL_PIECES = ("whole", "turns", "mirror", "grid", "rects")
GRIDS = (2, 3)
ANALYSIS_SIDE = 512  # rectangles are looked for on a copy of at most this side: enough for 15% of a screen
EDGE = 40.0  # Sobel magnitude of an edge worth a side: ~10 grey levels across the boundary
MIN_RECT_AREA = 0.03  # of the picture; smaller rectangles are text lines, icons or noise
MAX_RECT_AREA = 0.92  # larger ones are the whole picture again


@dataclass(frozen=True)
class View:
    """One region of the query, ready for the embedder."""

    kind: str  # whole, turn90, turn180, turn270, mirror, grid2, grid3, rect
    box: Box  # where it lies in the query (the whole picture for turns and the mirror)
    pixels: np.ndarray  # uint8 (input_size, input_size, 3)


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image or a uint8 (H, W, 3) array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def squash(image: Image.Image, input_size: int) -> np.ndarray:
    """The collection's preprocessing: the whole picture resized to a square, no crop."""
    return np.asarray(image.resize((input_size, input_size), Image.Resampling.BILINEAR), dtype=np.uint8)


def propose_views(
    image: Image.Image | np.ndarray,
    input_size: int = 224,
    pieces: Iterable[str] = ALL_PIECES,
    grids: Sequence[int] = GRIDS,
    max_rectangles: int = 6,
) -> list[View]:
    """The views of `image` to embed, the whole picture first. `pieces` picks among ALL_PIECES."""
    picture = as_pil(image)
    wanted = set(pieces)
    unknown = wanted - set(ALL_PIECES)
    if unknown:
        raise LookalikeError(f"unknown view pieces: {sorted(unknown)}; choose from {ALL_PIECES}")
    full: Box = (0, 0, picture.width, picture.height)
    small = _shrink(picture, max(input_size * 2, 320))  # every view is cut from this copy: cheaper resizes
    views = [View("whole", full, squash(small, input_size))]
    if "turns" in wanted:
        for degrees, turn in (
            (90, Image.Transpose.ROTATE_90),
            (180, Image.Transpose.ROTATE_180),
            (270, Image.Transpose.ROTATE_270),
        ):
            views.append(View(f"turn{degrees}", full, squash(small.transpose(turn), input_size)))
    if "mirror" in wanted:
        views.append(View("mirror", full, squash(small.transpose(Image.Transpose.FLIP_LEFT_RIGHT), input_size)))
    if "grid" in wanted:
        for n in grids:
            views += [
                View(f"grid{n}", box, _crop_view(picture, small, box, input_size))
                for box in grid_boxes(picture.size, n)
            ]
    if "rects" in wanted:
        for box in find_rectangles(picture, max_rectangles):
            views.append(View("rect", box, _crop_view(picture, small, box, input_size)))
    return views


def _shrink(image: Image.Image, side: int) -> Image.Image:
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
    )


def _crop_view(picture: Image.Image, small: Image.Image, box: Box, input_size: int) -> np.ndarray:
    """Cut `box` (query pixels) from the full picture when the shrunk copy would leave it under input size."""
    scale = small.width / picture.width
    left, top, right, bottom = box
    if (right - left) * scale >= input_size and (bottom - top) * scale >= input_size:
        scaled = (round(left * scale), round(top * scale), round(right * scale), round(bottom * scale))
        return squash(small.crop(scaled), input_size)
    return squash(picture.crop(box), input_size)


def grid_boxes(size: tuple[int, int], n: int) -> list[Box]:
    """The n x n tiles of a picture of `size`, row by row."""
    width, height = size
    xs = [round(i * width / n) for i in range(n + 1)]
    ys = [round(i * height / n) for i in range(n + 1)]
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(n) for c in range(n)]


def find_rectangles(image: Image.Image | np.ndarray, max_rectangles: int = 6) -> list[Box]:
    """Axis-aligned rectangles that may hold a photo of their own, largest first, in the query's pixels."""
    picture = as_pil(image)
    small = _shrink(picture, ANALYSIS_SIDE)
    gray = cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY)
    found = _outlined_rectangles(gray) + _textured_blobs(gray)
    scale = picture.width / small.width
    boxes = [_scale_box(box, scale, picture.size) for box in _suppress_overlaps(found)]
    return boxes[:max_rectangles]


def _textured_blobs(gray: np.ndarray) -> list[Box]:
    """Regions of texture on a flat background (a photo in a screenshot, between a meme's bars).

    Flat UI has no gradient and text bars only along their edges; an opening as wide as a few pixels removes
    those thin bands and keeps the dense gradients of a photo, whose smooth parts the closing fills back.
    """
    gradient = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    busy: np.ndarray = (gradient > 24.0).astype(np.uint8)  # ~6 grey levels per pixel: above JPEG ringing
    side = max(5, min(gray.shape) // 48) | 1
    busy = cv2.morphologyEx(busy, cv2.MORPH_OPEN, np.ones((side, side), np.uint8))
    busy = cv2.morphologyEx(busy, cv2.MORPH_CLOSE, np.ones((side * 4, side * 4), np.uint8))
    return _component_boxes(busy, min_fill=0.6)


def _outlined_rectangles(gray: np.ndarray, peaks: int = 16, min_cover: float = 0.6) -> list[Box]:
    """Rectangles whose four sides lie on straight edges: a photo pasted onto another, a framed photo.

    Candidate sides are the rows and columns richest in horizontal and vertical edge pixels; every pair of
    rows with every pair of columns is a candidate rectangle, kept when each side is mostly covered by edges.
    """
    blurred = cv2.GaussianBlur(gray, (3, 3), 0)
    gx = np.abs(cv2.Sobel(blurred, cv2.CV_32F, 1, 0))
    gy = np.abs(cv2.Sobel(blurred, cv2.CV_32F, 0, 1))
    vertical = cv2.dilate(((gx > EDGE) & (gx > gy)).astype(np.uint8), np.ones((1, 3), np.uint8))
    horizontal = cv2.dilate(((gy > EDGE) & (gy > gx)).astype(np.uint8), np.ones((3, 1), np.uint8))
    xs = _strongest_lines(vertical.sum(axis=0), peaks)
    ys = _strongest_lines(horizontal.sum(axis=1), peaks)
    along_x = np.concatenate([np.zeros((horizontal.shape[0], 1)), np.cumsum(horizontal, axis=1)], axis=1)
    along_y = np.concatenate([np.zeros((1, vertical.shape[1])), np.cumsum(vertical, axis=0)], axis=0)
    boxes = []
    for i, left in enumerate(xs):
        for right in xs[i + 1 :]:
            for j, top in enumerate(ys):
                for bottom in ys[j + 1 :]:
                    width, height = right - left, bottom - top
                    if width < 16 or height < 16:
                        continue
                    cover = min(
                        (along_x[top, right] - along_x[top, left]) / width,
                        (along_x[bottom, right] - along_x[bottom, left]) / width,
                        (along_y[bottom, left] - along_y[top, left]) / height,
                        (along_y[bottom, right] - along_y[top, right]) / height,
                    )
                    if cover >= min_cover:
                        boxes.append((cover, (int(left), int(top), int(right) + 1, int(bottom) + 1)))
    total = gray.shape[0] * gray.shape[1]
    boxes.sort(key=lambda item: item[0], reverse=True)  # best-outlined first: near-duplicates of it are dropped
    return [b for _, b in boxes if MIN_RECT_AREA <= (b[2] - b[0]) * (b[3] - b[1]) / total <= MAX_RECT_AREA]


def _strongest_lines(profile: np.ndarray, count: int, spacing: int = 4) -> list[int]:
    """Positions of the `count` largest values of `profile`, at least `spacing` apart, in increasing order."""
    chosen: list[int] = []
    for position in np.argsort(profile)[::-1]:
        if profile[position] < 16 or len(chosen) == count:
            break
        if all(abs(int(position) - other) >= spacing for other in chosen):
            chosen.append(int(position))
    return sorted(chosen)


def _component_boxes(mask: np.ndarray, min_fill: float) -> list[Box]:
    """Bounding boxes of the connected components of `mask` whose area fits a photo."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    total = mask.shape[0] * mask.shape[1]
    boxes = []
    for label in range(1, count):
        x, y, w, h, pixels = (int(v) for v in stats[label])
        area = w * h / total
        if MIN_RECT_AREA <= area <= MAX_RECT_AREA and pixels >= min_fill * w * h and min(w, h) >= 16:
            boxes.append((x, y, x + w, y + h))
    return boxes


def _iou(a: Box, b: Box) -> float:
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _suppress_overlaps(boxes: list[Box], threshold: float = 0.7) -> list[Box]:
    """In the given order of preference; a box that mostly repeats a kept one adds nothing but embedding time."""
    kept: list[Box] = []
    for box in boxes:
        if all(_iou(box, other) < threshold for other in kept):
            kept.append(box)
    return kept


def _scale_box(box: Box, scale: float, size: tuple[int, int]) -> Box:
    left, top, right, bottom = box
    return (
        max(0, round(left * scale)),
        max(0, round(top * scale)),
        min(size[0], round(right * scale)),
        min(size[1], round(bottom * scale)),
    )


def fuse_view_hits(
    ids: np.ndarray, scores: np.ndarray, background: tuple[int, int] | None = None
) -> list[tuple[int, float, int]]:
    """Fuse per-view search results (V, k) into one ranking of (id, cosine of its best view, index of that view).

    Max fusion: a collection image is as close as its closest view. With `background` = (start, stop), each
    view's scores are first lowered by the mean of its own ranks start..stop: a featureless tile (sky, a flat
    margin) is close to many images at once, and only a view whose top hits stand out of its own background
    should win. The returned score stays the raw cosine. Empty slots (id < 0) are skipped.
    """
    offsets = np.zeros(len(scores), dtype=np.float32)
    if background is not None:
        start, stop = background
        offsets = np.asarray([_row_background(row_ids, row, start, stop) for row_ids, row in zip(ids, scores)])
    best: dict[int, tuple[float, float, int]] = {}
    for view, (row_ids, row_scores) in enumerate(zip(ids, scores)):
        for image_id, score in zip(row_ids.tolist(), row_scores.tolist()):
            key = score - float(offsets[view])
            if image_id >= 0 and (image_id not in best or key > best[image_id][0]):
                best[image_id] = (key, score, view)
    ranked = sorted(best.items(), key=lambda item: item[1][0], reverse=True)
    return [(image_id, score, view) for image_id, (_, score, view) in ranked]


def _row_background(row_ids: np.ndarray, row: np.ndarray, start: int, stop: int) -> float:
    valid = row[start:stop][row_ids[start:stop] >= 0]
    return float(valid.mean()) if valid.size else 0.0


__all__ = ["ALL_PIECES", "View", "find_rectangles", "fuse_view_hits", "grid_boxes", "propose_views", "squash"]
