"""What GRIT training does to the default base model (`grit-ray train`: the tiny base model of
docs/base_model.md, the real stack, refill on), on 256 held-out rows.

It asserts what the default run does on every build measured so far (base-model seeds 0, 1 and 2 on
the project's machine, and seed 0 rebuilt on CI's CPU, whose floating-point kernels give another
model; docs/results.md, "Robustness across seeds and builds"): held-out accuracy rises beyond one
standard error of its rows at its best evaluation and does not end below the base model's, the
answer and think/rethink formats rise to near their maxima, the trained model boxes more of its thoughts
and its boxes stay on the shapes (GIoU), the run prints the best constant answer per question kind
beside its accuracy, and with refill no flat group enters an update. It does not assert GRIT's
effect, because the default run does not show it yet: accuracy stays below the best constant answer
(about 40% on these rows) on every build. Larger gains hold on one build only (2.7% -> 18.4% for
seed 0 here, 5.5% -> 10.9% on CI's CPU, 12.9% -> 17.2% for seed 1), so the test does not assert
them."""

from __future__ import annotations

import math

import pytest

from tests.cli_runs import metrics, train

pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.usefixtures("base_model_dir")]


def test_the_default_run_raises_heldout_accuracy_and_the_formats_keeps_its_boxes_and_prints_the_blind_baseline(tmp_path):
    run = tmp_path / "run"
    proc = train("--run-dir", str(run), "--set", "checkpoint.save_final=false", timeout=900)
    rows = metrics(run)
    base, last = rows[0], rows[-1]
    assert base["step"] == 0 and "train/loss" not in base  # the base model's numbers, before any update
    assert "eval @ step 0: accuracy" in proc.stdout and f"eval @ step {last['step']}: accuracy" in proc.stdout
    n = base["eval/rows"]
    assert n == 256
    # the blind baseline, printed and logged once, from the same rows
    assert "best constant answer per question kind:" in proc.stdout
    assert 0.3 < base["eval/constant_accuracy"] < 0.5
    # accuracy at its best evaluation is above the base model's by more than one standard error
    # (1.8 to 6 of them over the builds measured) and does not end below it by more than one
    # (recipe 5's run fell from 3.1% to 0.0%)
    accuracy = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r][1:]
    p = max(accuracy)
    se = math.sqrt(p * (1 - p) / n)
    assert p > base["eval/accuracy"] + se, (base["eval/accuracy"], accuracy)
    assert last["eval/accuracy"] > base["eval/accuracy"] - se, (base["eval/accuracy"], accuracy)
    # ... and stays below the constant answer: the gain is the answer's form, not reasoning (docs/results.md)
    assert p < base["eval/constant_accuracy"], (p, base["eval/constant_accuracy"])
    # the formats rise towards their maxima (0.5 each) from a base model that writes them only in part
    # (answer 0.28 -> 0.48 and think/rethink 0.35 -> 0.50 for seed 0 here; on CI's CPU the base model
    # writes think/rethink more often and it only creeps up, 0.444 -> 0.468, answer 0.36 -> 0.47)
    for reward, rise in (("answer_format", 0.05), ("think_rethink_format", 0.01)):
        key = f"eval/reward/{reward}"
        assert last[key] > 0.45 and last[key] > base[key] + rise, (reward, base[key], last[key])
    assert last["eval/reward/mean"] > base["eval/reward/mean"] + 3 * base["eval/reward/std"] / math.sqrt(n)
    # the base model grounds (recipe 7) and training keeps it: more thoughts boxed (box-format reward
    # 0.12-0.26 -> 0.46-0.49 over the seeds), GIoU not lost (0.05-0.19 -> 0.14-0.20; recipe 6's base
    # lost its boxes, 0.104 -> 0.017)
    assert last["eval/reward/box_format"] > base["eval/reward/box_format"] + 0.1
    assert last["eval/giou"] > 0.1 and last["eval/giou"] > base["eval/giou"] - 0.05
    trained = rows[1:]
    assert all(r["groups/zero_signal_trained"] == 0 for r in trained)  # refill: every group carries signal
    assert sum(r["groups/zero_signal"] for r in trained) > 0  # ... although flat groups were drawn
    assert all(r["sampling/prompts_drawn"] >= 8 for r in trained) and any(r["sampling/rounds"] > 1 for r in trained)
