"""The README's first command, minus the install: `grit-ray demo` on the embedded default."""

import json
import os
import subprocess
import sys

import pytest
import yaml

pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.usefixtures("base_model_dir")]


def test_demo_runs_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["OPENAI_API_KEY"] = "sk-must-not-leak-123"
    proc = subprocess.run(
        [sys.executable, "-m", "grit_ray.cli", "demo", "--run-dir", str(tmp_path / "run"),
         "--set", "algorithm.prompts_per_step=2", "--set", "rollout.max_new_tokens=24"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    groups = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(groups) == 2 and all(len(g["completions"]) == 4 for g in groups)
    assert all(g["row"]["question"] in g["prompt"] for g in groups)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["algorithm"]["prompts_per_step"] == 2 and saved["reward"]["judge"]["api_key_env"] == "OPENAI_API_KEY"
    assert "generated 2 groups x 4 completions" in proc.stdout and "rewards (grit-code, rule judge)" in proc.stdout
    assert all(isinstance(c["reward"], float) for g in groups for c in g["completions"])
    leaked = [p for p in run.rglob("*") if p.is_file() and b"sk-must-not-leak-123" in p.read_bytes()]
    assert not leaked and "sk-must-not-leak-123" not in proc.stdout + proc.stderr
