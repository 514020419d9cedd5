"""``grit-ray eval --suite grit`` on synthetic rows in GRIT's layout, with 1 and with N rollout
workers: rows/s of generation and scoring (engine start-up excluded, as the suite reports it), the
whole command's wall time, and the ratio of N workers to 1 measured in the same run. The per-row
results of the two runs must be equal (greedy, keyed by row); the script says if they are not.

    .venv/bin/python bench/eval_suite.py [--rows 32] [--workers 2] [--random-model] [--set key=value ...]

The default model is the default config's pretrained tiny base model (built into the cache on
first use), so completions have the lengths a run sees; --random-model uses the small random one.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grit_ray.config import SynthSpec, TinyModelSpec, load_config, load_suite  # noqa: E402
from grit_ray.data.grit_layout import write_grit_layout  # noqa: E402
from grit_ray.evaluation.suite import slug  # noqa: E402
from grit_ray.models.tiny import build_tiny_model, cached_tiny_model  # noqa: E402

RATE = re.compile(r"\| ([0-9.]+) rows/s \|")


def one_run(model: Path, root: Path, out: Path, workers: int, overrides: list[str]) -> dict[str, float]:
    cmd = [str(Path(sys.executable).with_name("grit-ray")), "eval", "--suite", "grit", "--data-root", str(root),
           "--model", str(model), "--out", str(out), "--workers", str(workers), "--no-report",
           *(["--set", *overrides] if overrides else [])]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rates = RATE.findall(proc.stdout)
    summary = json.loads((out / "summary.json").read_text())
    rows = sum(b["n"] for b in summary["benchmarks"].values())
    return {"rows": rows, "rows_per_s": float(rates[-1]), "wall_s": wall}


def results(out: Path) -> dict[str, str]:
    return {b.name: (out / slug(b.name) / "results.jsonl").read_text() for b in load_suite("grit").benchmarks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=32, help="rows per evaluation file (8 files)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--random-model", action="store_true")
    ap.add_argument("--set", dest="overrides", nargs="+", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.random_model:
            model = build_tiny_model(tmp_path / "model", TinyModelSpec.plumbing(seed=0))
        else:
            model = cached_tiny_model(load_config().model.tiny, log=print)
        root = tmp_path / "GRIT_data"
        write_grit_layout(root, SynthSpec(n=2, seed=3), eval_rows=args.rows, say=lambda _: None)
        one = one_run(model, root, tmp_path / "one", 1, args.overrides)
        many = one_run(model, root, tmp_path / "many", args.workers, args.overrides)
        same = results(tmp_path / "one") == results(tmp_path / "many")
    print("| workers | rows | rows/s (generation and scoring) | command wall time |")
    print("|---|---|---|---|")
    for n, r in ((1, one), (args.workers, many)):
        print(f"| {n} | {r['rows']:.0f} | {r['rows_per_s']:.2f} | {r['wall_s']:.1f} s |")
    print(f"{args.workers} workers / 1: {many['rows_per_s'] / one['rows_per_s']:.2f}x rows/s, "
          f"{one['wall_s'] / many['wall_s']:.2f}x wall time; per-row results "
          + ("identical" if same else "DIFFER (a bug: results must not depend on the worker count)"))


if __name__ == "__main__":
    main()
