"""GRIT's evaluation metrics (docs/grit.md §6).

- ACC: mean raw judge score x 100 (not binarised), per dataset; failed judge calls are excluded
  and counted.
- GIoU ("grounding IoU"): IoU between the union of all boxes in the completion and the union of
  all ground-truth boxes, computed exactly (coordinate compression, no rasterising). Predicted
  boxes are mapped to original pixels, reversed corners normalised, clipped to the image, and
  zero-area boxes ignored. No predicted box scores 0; a row without ground-truth boxes has no
  GIoU (None) and is left out of the mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from grit_ray.grit.grounding import Box, FrameSpec, find_boxes, to_original


def normalise_box(box: Box, width: float, height: float) -> Box | None:
    """Corners ordered, clipped to the image; None when nothing of positive area remains."""
    x1, y1, x2, y2 = box
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
    y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def union_area(boxes: Sequence[Box]) -> float:
    """Exact area of a union of axis-aligned rectangles (coordinate compression; fine for tens of boxes)."""
    boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
    if not boxes:
        return 0.0
    xs = sorted({v for b in boxes for v in (b[0], b[2])})
    area = 0.0
    for xa, xb in zip(xs, xs[1:]):
        # y-intervals of the boxes covering this vertical strip, merged
        spans = sorted((b[1], b[3]) for b in boxes if b[0] <= xa and b[2] >= xb)
        covered = 0.0
        if spans:
            cur_start, cur_end = spans[0]
            for s, e in spans[1:]:
                if s > cur_end:
                    covered += cur_end - cur_start
                    cur_start, cur_end = s, e
                else:
                    cur_end = max(cur_end, e)
            covered += cur_end - cur_start
        area += covered * (xb - xa)
    return area


def _intersection(a: Box, b: Box) -> Box:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def union_iou(pred: Sequence[Box], truth: Sequence[Box]) -> float:
    """IoU of two unions of boxes: |A ∩ B| = area of the union of pairwise intersections."""
    inter = union_area([_intersection(a, b) for a in pred for b in truth])
    total = union_area(pred) + union_area(truth) - inter
    return inter / total if total > 0 else 0.0


def completion_giou(
    completion: str, gt_boxes: Sequence[Sequence[float]], width: float, height: float, frame: FrameSpec
) -> float | None:
    """GRIT's GIoU for one completion; None when the row has no ground-truth box."""
    truth = [b for b in (normalise_box(_box4(g), width, height) for g in gt_boxes) if b is not None]
    if not truth:
        return None
    pred = [p for p in (normalise_box(to_original(b, int(width), int(height), frame), width, height)
                        for b in find_boxes(completion)) if p is not None]
    return union_iou(pred, truth) if pred else 0.0


def _box4(g: Sequence[float]) -> Box:
    x1, y1, x2, y2 = map(float, g)
    return x1, y1, x2, y2


def mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
