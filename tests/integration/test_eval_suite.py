"""``grit-ray eval --suite grit`` on GRIT's layout written with synthetic rows (the tiny model,
vLLM rollouts on Ray): every benchmark in one command, the same per-row results for 1 and 3
workers and for any chunk size, and a run killed mid-way resumed to the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grit_ray.cli import main
from grit_ray.config import SynthSpec, load_suite
from grit_ray.data.grit_layout import write_grit_layout
from grit_ray.evaluation.suite import slug

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
SUITE = load_suite("grit")


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("GRIT_data")
    write_grit_layout(root, SynthSpec(n=2, seed=11), eval_rows=3, say=lambda _: None)
    return root


def _args(model, layout, out, *extra):
    return ["eval", "--suite", "grit", "--data-root", str(layout), "--model", str(model), "--out", str(out),
            "--set", "rollout.max_new_tokens=16", *extra]


def _results(out: Path) -> dict[str, list[dict]]:
    return {b.name: [json.loads(x) for x in (out / slug(b.name) / "results.jsonl").read_text().splitlines()]
            for b in SUITE.benchmarks}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, layout, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite-one-worker")
    assert main(_args(tiny_model_dir, layout, out)) == 0
    return out


def test_every_benchmark_in_one_table(reference):
    results = _results(reference)
    assert {k: len(v) for k, v in results.items()} == {b.name: 3 for b in SUITE.benchmarks}
    table = (reference / "table1.md").read_text()
    assert table.startswith("| | VSR | TallyQA | GQA | MathVista | MME | OVDEval |")
    assert "| the paper's GRIT (qwen2.5-vl) | 72.9 / 0.325 | 47.8 / 0.447 |" in table
    summary = json.loads((reference / "summary.json").read_text())
    ovd = summary["benchmarks"]["OVDEval"]
    assert ovd["acc"] is None and ovd["giou"] is not None  # GIoU only: grounding is the answer
    assert summary["benchmarks"]["VSR"]["acc"] is not None and summary["absent"] == []
    for row in results["OVDEval"]:  # no judge was asked for OVDEval's rows
        assert row["judge"]["status"] == "ok"
    assert (reference / "vsr" / "report.html").read_text().count('<div class="card') == 3
    assert json.loads((reference / "judge_report.json").read_text())["judge"] == "rule"


def test_three_workers_and_small_chunks_give_the_same_rows(tiny_model_dir, layout, reference, tmp_path):
    assert main(_args(tiny_model_dir, layout, tmp_path / "three", "--workers", "3", "--chunk-rows", "1")) == 0
    assert _results(tmp_path / "three") == _results(reference)
    assert (tmp_path / "three" / "table1.md").read_text() == (reference / "table1.md").read_text()


def test_a_killed_run_resumes_to_the_same_rows(tiny_model_dir, layout, reference, tmp_path, capsys):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "grit_ray.cli", *_args(tiny_model_dir, layout, out, "--chunk-rows", "1")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:  # kill it once it has written part of the second benchmark
        if "TallyQA: 1/3 rows" in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _results_present(out)
    assert partial["VSR"] == 3 and 1 <= partial.get("TallyQA", 0) < 3
    capsys.readouterr()
    assert main(_args(tiny_model_dir, layout, out)) == 2  # not over an earlier run's rows without --resume
    assert "--resume continues it" in capsys.readouterr().err
    assert main(_args(tiny_model_dir, layout, out, "--resume")) == 0
    printed = capsys.readouterr().out
    assert "on 3 rows (3 from the earlier run)" in printed and f"on 3 rows ({partial['TallyQA']} from the earlier run)" in printed
    assert _results(out) == _results(reference)


def _results_present(out: Path) -> dict[str, int]:
    return {b.name: len((out / slug(b.name) / "results.jsonl").read_text().splitlines())
            for b in SUITE.benchmarks if (out / slug(b.name) / "results.jsonl").is_file()}
