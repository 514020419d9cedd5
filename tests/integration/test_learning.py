"""GRIT learns: the default run (`grit-ray train`: the tiny base model of docs/base_model.md, the
real stack, refill on) evaluates the base model at step 0, raises the grounded-format rewards to
their maxima and the held-out reward above the base model's without losing its accuracy, its
boxes overlap the targets, and with refill no flat group enters an update. The figures it
reaches, and why accuracy and GIoU rise no further: docs/results.md."""

from __future__ import annotations

import math

import pytest

from tests.cli_runs import metrics, train

pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.usefixtures("base_model_dir")]


def test_the_default_run_learns_the_grounded_format_and_keeps_heldout_accuracy(tmp_path):
    run = tmp_path / "run"
    proc = train("--run-dir", str(run), "--set", "checkpoint.save_final=false", timeout=900)
    rows = metrics(run)
    base, last = rows[0], rows[-1]
    assert base["step"] == 0 and "train/loss" not in base  # the base model's numbers, before any update
    assert "eval @ step 0: accuracy" in proc.stdout and f"eval @ step {last['step']}: accuracy" in proc.stdout
    n = base["eval/rows"]
    # the base model grounds some of its thoughts under GRIT's prompt; the trained one all of them
    assert last["eval/reward/box_format"] > base["eval/reward/box_format"] and last["eval/reward/box_format"] > 0.45
    assert last["eval/reward/think_rethink_format"] > 0.48 and last["eval/reward/answer_format"] > 0.45
    # beyond one standard error of the base model's mean (1.8 on this machine: the base model already
    # boxes most of its thoughts, so the format has less to gain than with earlier base models)
    assert last["eval/reward/mean"] > base["eval/reward/mean"] + base["eval/reward/std"] / math.sqrt(n)
    # accuracy is not traded for the format (earlier base-model recipes collapsed it to 0)
    p = base["eval/accuracy"]
    assert last["eval/accuracy"] >= p - 2 * math.sqrt(p * (1 - p) / n), (p, last["eval/accuracy"])
    # the trained model's boxes land on the targets: 0.14 on this machine (the base model: 0.16; a base
    # model without the image-token supervision reached 0.03, a wrong box frame gives about 0). A level,
    # not a rise: GRIT's rewards do not score where boxes are (docs/results.md)
    assert last["eval/giou"] > 0.08, last["eval/giou"]
    trained = rows[1:]
    assert all(r["groups/zero_signal_trained"] == 0 for r in trained)  # refill: every group carries signal
    assert sum(r["groups/zero_signal"] for r in trained) > 0  # ... although flat groups were drawn
    assert all(r["sampling/prompts_drawn"] >= 8 for r in trained) and any(r["sampling/rounds"] > 1 for r in trained)
