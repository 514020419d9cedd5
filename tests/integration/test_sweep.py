"""`grit-ray sweep`: the same config over two seeds, each run started as a user would start it, then
the mean, 95% interval and range of every held-out metric and the curves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli_runs import REPO

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


def test_a_sweep_runs_each_seed_and_summarises_them(tmp_path, tiny_model_dir):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "grit_ray.cli", "sweep", "--seeds", "3,4", "--vary", "run.seed", "--steps", "1",
           "--out", str(out), "--set", f"model.path={tiny_model_dir}", "eval.max_rows=8", "eval.every_n_steps=1",
           "checkpoint.save_final=false", "rollout.max_new_tokens=16"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for seed in (3, 4):  # each seed its own run, with its own seed in its resolved config
        assert f"seed: {seed}" in (out / f"seed-{seed}" / "config.yaml").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [3, 4] and summary["vary"] == "run.seed"
    accuracy = summary["metrics"]["eval/accuracy"]
    assert set(accuracy) == {"0", "1"} and all(v["n"] == 2 for v in accuracy.values())
    assert accuracy["1"]["low"] <= accuracy["1"]["mean"] <= accuracy["1"]["high"]
    assert "eval/constant_accuracy" in summary["metrics"]  # the baseline every run printed, beside them
    assert "| eval/accuracy | step 0:" in (out / "summary.md").read_text()
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "giou.png").stat().st_size > 0
    # a second call reads the finished runs instead of training again
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 0 and "sweep: seed" not in again.stdout + again.stderr
