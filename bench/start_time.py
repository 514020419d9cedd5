"""Time to the first logged step of the default run, as a user starts it.

Runs ``grit-ray train`` (the embedded default, the base model already cached) as a subprocess
several times and timestamps its output lines from the moment the command starts: Ray up, actors
up, the base model's evaluation (the step-0 line) and the first training step's line. Also the
first step's ``time/step`` against the median of the steady steps after it (metrics.jsonl).

    .venv/bin/python bench/start_time.py [--runs 3] [--steps 6] [--set key=value ...]

The first run of a fresh machine also pays cold caches (page cache, Python bytecode); the table
shows every run and the median of the runs after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKS = {  # output line -> column
    "Started a local Ray instance": "ray_up_s",
    "actors up in": "actors_up_s",
    "eval @ step 0": "step0_eval_s",
    "step 1/": "first_step_s",
}


def one_run(run_dir: Path, steps: int, overrides: list[str]) -> dict[str, float]:
    cmd = [str(Path(sys.executable).with_name("grit-ray")), "train", "--run-dir", str(run_dir), "--steps", str(steps),
           "--set", "checkpoint.save_final=false", *overrides]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: dict[str, float] = {}
    for line in proc.stdout:
        for mark, column in MARKS.items():
            if mark in line and column not in out:
                out[column] = time.perf_counter() - started
    if proc.wait():
        raise SystemExit(f"grit-ray train failed (exit {proc.returncode})")
    out["total_s"] = time.perf_counter() - started
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_times = [r["time/step"] for r in rows if r["step"] >= 1]
    out["step1_s"] = step_times[0]
    out["steady_step_s"] = statistics.median(step_times[1:])
    out["first_vs_steady"] = out["step1_s"] / out["steady_step_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    columns = ["ray_up_s", *[c for c in MARKS.values() if c != "ray_up_s"], "step1_s", "steady_step_s",
               "first_vs_steady", "total_s"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            results.append(one_run(Path(tmp) / f"run{i}", args.steps, args.set))
            print(f"run {i}: " + "  ".join(f"{c} {results[-1].get(c, float('nan')):.1f}" for c in columns), flush=True)
    warm = results[1:] or results
    print("median of the warm runs: " + "  ".join(
        f"{c} {statistics.median(r.get(c, float('nan')) for r in warm):.2f}" for c in columns))


if __name__ == "__main__":
    main()
