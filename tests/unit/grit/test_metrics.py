import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grit_ray.config import CoordFrame
from grit_ray.grit.grounding import FrameSpec, qwen_resized_size, to_original
from grit_ray.grit.metrics import completion_giou, normalise_box, union_area, union_iou
from grit_ray.models.qwen2_5_vl import TINY_MAX_PIXELS, TINY_MIN_PIXELS

ORIG = FrameSpec(CoordFrame.ORIGINAL)


def test_union_area_overlaps_counted_once():
    assert union_area([(0, 0, 10, 10), (5, 5, 15, 15)]) == 175  # 100 + 100 - 25
    assert union_area([(0, 0, 10, 10), (0, 0, 10, 10)]) == 100
    assert union_area([(0, 0, 10, 10), (2, 2, 4, 4)]) == 100
    assert union_area([]) == 0.0


def _raster_area(boxes, size=40):
    return sum(any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in boxes) for x in range(size) for y in range(size))


@given(st.lists(st.tuples(*[st.integers(0, 40)] * 4), max_size=5))
def test_union_area_equals_raster_count_on_integer_boxes(raw):
    boxes = [(min(a, c), min(b, d), max(a, c), max(b, d)) for a, b, c, d in raw]
    assert union_area(boxes) == _raster_area(boxes)


def test_union_iou_hand_computed():
    assert union_iou([(0, 0, 10, 10)], [(5, 0, 15, 10)]) == pytest.approx(50 / 150)
    # two predicted boxes covering one truth box: union vs union
    assert union_iou([(0, 0, 5, 10), (5, 0, 10, 10)], [(0, 0, 10, 10)]) == pytest.approx(1.0)
    assert union_iou([(20, 20, 30, 30)], [(0, 0, 10, 10)]) == 0.0


def test_normalise_box_reverses_and_clips():
    assert normalise_box((10, 10, 0, 0), 100, 100) == (0, 0, 10, 10)
    assert normalise_box((-5, -5, 200, 50), 100, 100) == (0, 0, 100, 50)
    assert normalise_box((5, 5, 5, 20), 100, 100) is None          # zero area
    assert normalise_box((150, 150, 200, 200), 100, 100) is None   # entirely outside


def test_completion_giou_rules():
    gt = [[0, 0, 10, 10]]
    assert completion_giou("no boxes", gt, 100, 100, ORIG) == 0.0
    assert completion_giou("[0,0,10,10]", [], 100, 100, ORIG) is None
    assert completion_giou("[10,10,0,0]", gt, 100, 100, ORIG) == 1.0                 # reversed corners
    assert completion_giou("[0,0,10,10] [500,500,600,600]", gt, 100, 100, ORIG) == 1.0  # outside box clipped away
    assert completion_giou("[0,0,10,10] [3,3,3,9]", gt, 100, 100, ORIG) == 1.0       # zero-area ignored
    # overlapping predictions: union 175, truth 100, intersection 100
    assert completion_giou("[0,0,10,10] [5,5,15,15]", gt, 100, 100, ORIG) == pytest.approx(100 / 175)
    # out-of-image truth box is clipped too
    assert completion_giou("[0,0,10,10]", [[-10, -10, 10, 10]], 100, 100, ORIG) == 1.0


def test_norm1000_and_qwen_frames_map_to_original_pixels():
    norm = FrameSpec(CoordFrame.NORM1000)
    assert to_original((500, 500, 1000, 1000), 640, 480, norm) == (320, 240, 640, 480)
    qwen = FrameSpec(CoordFrame.QWEN_RESIZED, 3136, 256 * 28 * 28)
    rw, rh = qwen_resized_size(640, 480, 3136, 256 * 28 * 28)
    assert to_original((0, 0, rw, rh), 640, 480, qwen) == pytest.approx((0, 0, 640, 480))
    assert completion_giou(f"[0, 0, {rw // 2}, {rh}]", [[0, 0, 320, 480]], 640, 480, qwen) == pytest.approx(1.0)


@given(st.integers(28, 4000), st.integers(28, 4000))
def test_qwen_resize_equals_the_processor_function(w, h):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    if max(w, h) / min(w, h) > 200:
        return
    for lo, hi in ((3136, 256 * 28 * 28), (28 * 28 * 4, 28 * 28 * 16), (3136, 12845056)):
        rh, rw = smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
        assert qwen_resized_size(w, h, lo, hi) == (rw, rh)


def test_qwen_resize_matches_the_tiny_processor(tiny_model_dir):
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    rng = random.Random(0)
    for _ in range(5):
        w, h = rng.randint(40, 400), rng.randint(40, 400)
        grid = proc.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0]
        assert qwen_resized_size(w, h, TINY_MIN_PIXELS, TINY_MAX_PIXELS) == (int(grid[2]) * 14, int(grid[1]) * 14)


def test_from_original_inverts_to_original_in_every_frame():
    from grit_ray.grit.grounding import from_original

    box = (10.0, 21.0, 130.0, 77.0)
    for spec in (ORIG, FrameSpec(CoordFrame.NORM1000), FrameSpec(CoordFrame.QWEN_RESIZED, 3136, 12544)):
        framed = from_original(box, 150, 90, spec)
        assert to_original(framed, 150, 90, spec) == pytest.approx(box)
    assert from_original(box, 200, 100, FrameSpec(CoordFrame.NORM1000)) == (50.0, 210.0, 650.0, 770.0)
