"""GRIT learns: the default run (`grit-ray train`: the tiny base model of docs/base_model.md, the
real stack, refill on) evaluates the base model at step 0, raises the grounded-format rewards to
their maxima and held-out GIoU and reward above the base model's without losing its accuracy, and
with refill no flat group enters an update. The figures it reaches, and why accuracy and GIoU
rise no further: docs/results.md."""

from __future__ import annotations

import math

import pytest

from tests.cli_runs import metrics, train

pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.usefixtures("base_model_dir")]


def test_the_default_run_learns_the_grounded_format_and_raises_heldout_accuracy(tmp_path):
    run = tmp_path / "run"
    proc = train("--run-dir", str(run), "--set", "checkpoint.save_final=false", timeout=900)
    rows = metrics(run)
    base, last = rows[0], rows[-1]
    assert base["step"] == 0 and "train/loss" not in base  # the base model's numbers, before any update
    assert "eval @ step 0: accuracy" in proc.stdout and f"eval @ step {last['step']}: accuracy" in proc.stdout
    n = base["eval/rows"]
    # the base model rarely grounds its thought under GRIT's prompt; the trained one always does
    assert base["eval/reward/box_format"] < 0.25 and last["eval/reward/box_format"] > 0.45
    assert last["eval/reward/think_rethink_format"] > 0.48 and last["eval/reward/answer_format"] > 0.45
    assert last["eval/reward/mean"] > base["eval/reward/mean"] + 2 * base["eval/reward/std"] / math.sqrt(n)
    # accuracy is not traded for the format (earlier base-model recipes collapsed it to 0). Whether
    # it rises depends on the base model, whose build differs between CPUs: +6 points on one build,
    # -3 on another, both within the noise of 64 rows (docs/results.md)
    p = base["eval/accuracy"]
    assert last["eval/accuracy"] >= p - 2 * math.sqrt(p * (1 - p) / n), (p, last["eval/accuracy"])
    assert last["eval/giou"] > base["eval/giou"]
    trained = rows[1:]
    assert all(r["groups/zero_signal_trained"] == 0 for r in trained)  # refill: every group carries signal
    assert sum(r["groups/zero_signal"] for r in trained) > 0  # ... although flat groups were drawn
    assert all(r["sampling/prompts_drawn"] >= 8 for r in trained) and any(r["sampling/rounds"] > 1 for r in trained)
