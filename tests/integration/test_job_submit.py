"""`ray job submit` against a running cluster: a local head on 127.0.0.1 started with `ray start`,
the repository uploaded as the working dir with deploy/runtime_env.yaml, a 2-step training job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.usefixtures("base_model_dir")]

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_trains_on_a_running_cluster(tmp_path):
    ray_bin = str(Path(sys.executable).parent / "ray")
    gcs, dash = _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # the same for `ray start` and `ray job submit`
    env.pop("RAY_ADDRESS", None)
    # a session directory of its own (short: Ray's socket paths must fit in 107 characters)
    temp = Path(tempfile.mkdtemp(prefix="grit-ray-", dir="/tmp"))
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "4",
                    "--temp-dir", str(temp), "--disable-usage-stats"], env=env, check=True, capture_output=True,
                   timeout=120)
    run_dir = tmp_path / "run"
    try:
        job = subprocess.run(
            [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(REPO),
             "--runtime-env", str(REPO / "deploy" / "runtime_env.yaml"), "--",
             sys.executable, "-m", "grit_ray.cli", "train", "--steps", "2", "--run-dir", str(run_dir),
             "--set", "checkpoint.save_final=false"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        uploaded = [p for p in temp.glob("session_*/runtime_resources/working_dir_files/*") if p.is_dir()]
        assert uploaded, "the working dir was not uploaded"
        for pkg in uploaded:  # the upload leaves environments, checkouts and outputs behind
            names = {p.name for p in pkg.iterdir()}
            assert "grit_ray" in names and not names & {".venv", ".git", "runs", ".pytest_cache"}
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # step 0: the base model's evaluation
    assert all("reward/mean" in r and "time/step" in r for r in rows[1:]) and "eval/accuracy" in rows[0]
