import math

import pytest

from grit_ray.schedules import warmup_cosine


def test_learner_schedule_warms_up_then_decays_to_zero():
    lr = [warmup_cosine(s, warmup_steps=4, total_steps=20, decay_from=4) for s in range(21)]
    assert lr[:4] == [0.25, 0.5, 0.75, 1.0] and lr[4] == 1.0  # no decay under the warm-up
    assert lr[12] == pytest.approx(0.5) and lr[20] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lr[4:], lr[5:]))


def test_pretraining_schedule_decays_from_step_0_to_its_floor():
    lr = [warmup_cosine(s, warmup_steps=10, total_steps=100, decay_from=0, floor=0.1, peak=1e-3) for s in range(101)]
    # under the warm-up the cosine has already begun: step 9 is the warm-up's end x cos at 9/100
    assert lr[9] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 100))))
    assert lr[100] == pytest.approx(1e-4) and min(lr) == pytest.approx(1e-4)


def test_constant_schedule_keeps_the_warm_up():
    assert [warmup_cosine(s, warmup_steps=2, total_steps=5, decay_from=2, constant=True) for s in range(5)] == \
        [0.5, 1.0, 1.0, 1.0, 1.0]
