"""`grit-ray sweep`'s statistics and summary: mean, Student-t 95% interval and range per metric and step."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from grit_ray.evaluation.sweep import band_chart, mean_interval, summarise, summary_table


def test_the_interval_is_students_t_for_few_seeds():
    i = mean_interval([0.2, 0.3, 0.4])
    sd = 0.1  # sample standard deviation of 0.2, 0.3, 0.4
    assert i.mean == pytest.approx(0.3) and (i.min, i.max, i.n) == (0.2, 0.4, 3)
    assert i.high - i.mean == pytest.approx(4.303 * sd / math.sqrt(3))  # t(0.975, 2 df)
    assert i.mean - i.low == pytest.approx(i.high - i.mean)
    one = mean_interval([0.5])
    assert one.low == one.high == one.mean == 0.5
    many = mean_interval([float(v % 3) for v in range(40)])
    assert many.high - many.mean == pytest.approx(1.96 * math.sqrt(sum((v % 3 - many.mean) ** 2 for v in range(40)) / 39)
                                                  / math.sqrt(40))
    with pytest.raises(ValueError):
        mean_interval([])


def test_summary_per_metric_and_step_over_the_seeds_that_logged_it(tmp_path):
    runs = {0: [{"step": 0, "eval/accuracy": 0.1, "eval/giou": 0.0, "train/loss": 3.0},
                {"step": 10, "eval/accuracy": 0.5, "eval/giou": 0.3}],
            1: [{"step": 0, "eval/accuracy": 0.2, "eval/giou": 0.1},
                {"step": 10, "eval/accuracy": 0.7, "eval/giou": 0.4}],
            2: [{"step": 0, "eval/accuracy": 0.3, "eval/giou": 0.2}]}  # a run that logged no step 10
    s = summarise(runs)
    assert set(s) == {"eval/accuracy", "eval/giou"}  # training metrics are not summarised
    assert s["eval/accuracy"][0].mean == pytest.approx(0.2) and s["eval/accuracy"][0].n == 3
    assert s["eval/accuracy"][10].mean == pytest.approx(0.6) and s["eval/accuracy"][10].n == 2
    table = summary_table(s, ["eval/accuracy", "eval/giou"])
    assert "| eval/accuracy | step 0: 0.200 [" in table and "(0.500-0.700, n=2)" in table
    png = band_chart(s, ["eval/accuracy", "eval/giou"], "test", tmp_path / "a.png")
    with Image.open(png) as im:
        assert im.size == (900, 420) and len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 3  # drawn, not blank
    json.dumps({k: {str(st): vars(i) for st, i in v.items()} for k, v in s.items()})  # serialisable
