"""A run that survives its actors being killed (kill -9 of the real Ray worker processes, found by
the titles Ray gives them): a rollout worker during the base model's evaluation and again during
a step's generation, a reward actor, and a learner rank. The run starts from a hub id (an offline
hub cache), so its final model and checkpoints must carry the model's side files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grit_ray.models.files import MODEL_SIDE_FILES
from tests.cli_runs import REPO
from tests.hub_cache import hub_cache_from

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

HUB_ID = "grit-test/tiny-qwen2.5-vl"


def _processes(title: str) -> list[int]:
    """Pids of the processes whose title starts with ``title`` (Ray titles its workers
    ``ray::Class`` when idle and ``ray::Class.method`` while it runs one)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines()
            if len(line.split(None, 1)) == 2 and line.split(None, 1)[1].startswith(title)]


def _steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(x)["step"] for x in path.read_text().splitlines()] if path.exists() else []


def _kill_when(proc, run: Path, ready, title: str, timeout: float = 400) -> float:
    """kill -9 the first process titled ``title`` once ``ready(steps logged)`` holds; returns when."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before the kill"
        if ready(_steps(run)) and (pids := _processes(title)):
            os.kill(pids[0], signal.SIGKILL)
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"no {title} process to kill in time (steps logged: {_steps(run)})")


def test_a_run_survives_killed_rollout_reward_and_learner_processes(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), **hub_cache_from(tiny_model_dir, tmp_path / "hub", HUB_ID)}
    args = ["--steps", "14", "--run-dir", str(run), "--set", f"model.path={HUB_ID}", "learner.num_actors=2",
            "algorithm.prompts_per_step=4", "learner.micro_batch_size=2", "rollout.max_new_tokens=16",
            "algorithm.refill_zero_signal_groups=false", "data.synthetic.n=64", "checkpoint.every_n_steps=4",
            "eval.every_n_steps=7", "eval.max_rows=32", "logging.progress=false"]
    proc = subprocess.Popen([sys.executable, "-m", "grit_ray.cli", "train", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the base model's evaluation is in flight while nothing is logged yet
        _kill_when(proc, run, lambda s: s == [], "ray::RolloutWorker.stream")
        _kill_when(proc, run, lambda s: 3 in s, "ray::RolloutWorker.stream")  # generation of step 4
        _kill_when(proc, run, lambda s: 6 in s, "ray::RewardActor")
        _kill_when(proc, run, lambda s: 9 in s, "ray::LearnerActor")
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    (run / "driver.log").write_text(out)  # kept with the run for a look after a failure

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(15)), out[-3000:]  # every step once, the base row included
    assert rows[0]["eval/rows"] == 32 and rows[14]["eval/rows"] == 32  # the evaluation hit by a kill completed

    def total(key: str) -> float:
        return sum(r.get(key, 0.0) for r in rows)

    assert rows[0]["faults/rollout_restarts"] == 1 and rows[4]["faults/rollout_restarts"] == 1
    assert total("faults/rollout_restarts") == 2 and rows[4]["faults/rollout_lost_s"] > 0
    assert total("faults/reward_restarts") == 1
    assert total("faults/learner_rebuilds") == 1 and total("faults/learner_rebuild_s") > 0
    assert "rollout worker 0 died" in out and "rebuilding the actors from" in out

    from transformers import AutoModelForImageTextToText, AutoProcessor

    side = {p.name for p in tiny_model_dir.iterdir()} & set(MODEL_SIDE_FILES)
    assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= side
    for saved in (run / "final_model", run / "checkpoints" / "step-000012"):
        assert side <= {p.name for p in saved.iterdir()}, saved
    AutoModelForImageTextToText.from_pretrained(run / "final_model")
    assert AutoProcessor.from_pretrained(run / "final_model").tokenizer.chat_template
