"""Cross-modal correlation against a real local judge server (which always picks 'Image 0', so the
expected score follows from the seeded image order alone)."""

from __future__ import annotations

import pytest

from grit_ray.config import CoordFrame, DataSource, JudgeConfig, JudgeKind
from grit_ray.data.rows import RowStream
from grit_ray.evaluation.crossmodal import crossmodal_correlation, mask_boxes, parse_pick, random_boxes, true_position
from grit_ray.grit.grounding import FrameSpec
from grit_ray.testing.judge_server import JudgeServer


def test_masking_and_parsing():
    assert mask_boxes("a [1, 2, 3, 4] then 5,6,7,8.") == "a [[box]] then [box]."
    assert parse_pick("Image 1") == 1 and parse_pick("It is image0.") == 0
    assert parse_pick("Image 0 or Image 1") is None and parse_pick("no idea") is None


def test_random_boxes_are_seeded_and_inside_the_image():
    import random

    a = random_boxes(random.Random(3), 5, 100, 80)
    assert a == random_boxes(random.Random(3), 5, 100, 80)
    assert all(0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 80 for x1, y1, x2, y2 in a)


def test_score_follows_the_judges_picks_over_seeded_repeats(synth_jsonl, monkeypatch):
    rows = list(RowStream([DataSource(path=str(synth_jsonl), images=str(synth_jsonl.parent / "images"))]))[:8]
    results = [{"completion": f"<think> it is at [2, 3, {20 + i}, {30 + i}] </think> <answer> x </answer>"}
               for i in range(6)]
    results += [{"completion": "<think> no boxes </think>"}, {"completion": "[1, 1, 9, 9] #garbage"}]
    monkeypatch.setenv("GRIT_TEST_KEY", "k")
    with JudgeServer() as server:
        judge = JudgeConfig(kind=JudgeKind.OPENAI, base_url=server.base_url, model="local",
                            api_key_env="GRIT_TEST_KEY", max_retries=0)
        cm = crossmodal_correlation(results, rows, FrameSpec(CoordFrame.ORIGINAL), judge, repeats=3, seed=5)
    assert cm["rows"] == 7 and cm["unanswered"] == 3  # the box-less row is left out; #garbage: no pick
    expected = [sum(true_position(5, k, i) == 0 for i in range(6)) / 6 for k in range(3)]
    assert cm["per_repeat"] == pytest.approx(expected)
    assert cm["mean"] == pytest.approx(sum(expected) / 3)
