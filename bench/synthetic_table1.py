"""A synthetic reproduction of GRIT's Table 1 and of its data-scaling figure (docs/results.md).

On held-out synthetic VSR-like and TallyQA-like rows (the default config's evaluation seed), it
reports ACC (rule judge) and GIoU per dataset for
  - the tiny base model asked directly (the direct-query prompt),
  - the same base model with GRIT's prompt,
  - GRIT-trained models, from 20, 500 and 7,000 training rows at the same number of steps
    (the default config otherwise; 500 rows is the default run), with their curves
    (`grit-ray plot`) and the held-out accuracy and GIoU of the three against the step.
Every model is evaluated by the same `grit-ray eval` (greedy decoding) on the same rows; the
training runs are started as a user would start them, through `grit-ray train`. Differences are
printed against the base model with GRIT's prompt, measured in the same run.

    .venv/bin/python bench/synthetic_table1.py --out runs/table1 [--rows 20,500,7000] [--eval-rows 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grit_ray.config import load_config  # noqa: E402
from grit_ray.data.synth import write_synth  # noqa: E402
from grit_ray.evaluation.plots import line_chart, read_metrics  # noqa: E402

DATASETS = ("vsr", "tallyqa", "all")


def _cli(*args: str) -> str:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grit_ray.cli", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"grit-ray {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    print(f"  grit-ray {' '.join(args)}  ({time.perf_counter() - started:.0f}s)", flush=True)
    return proc.stdout


def _evaluate(model: Path, data: Path, out: Path, prompt: str, rows: int) -> dict:
    _cli("eval", "--model", str(model), "--data", str(data), "--out", str(out), "--prompt", prompt,
         "--max-rows", str(rows), "--no-report")
    return json.loads((out / "summary.json").read_text())


def _cells(summary: dict) -> list[str]:
    return [f"{summary[d]['acc']:.1f} / {summary[d]['giou']:.3f}" if d in summary else "-" for d in DATASETS]


def _table(results: list[tuple[str, dict]]) -> str:
    head = "| model | " + " | ".join(f"{d} ACC / GIoU" for d in DATASETS) + " |"
    lines = [head, "|" + "---|" * (len(DATASETS) + 1)]
    lines += [f"| {name} | " + " | ".join(_cells(summary)) + " |" for name, summary in results]
    return "\n".join(lines)


def scaling_charts(out: Path, sizes: list[int]) -> list[Path]:
    """Held-out accuracy and GIoU against the step, one line per training-set size."""
    runs = {n: read_metrics(out / f"train_{n}") for n in sizes}
    charts = []
    for key, title in (("eval/accuracy", "held-out accuracy"), ("eval/giou", "held-out GIoU")):
        series = {f"{n} rows": [(r["step"], r[key]) for r in rows if key in r] for n, rows in runs.items()}
        charts.append(line_chart(series, f"{title} by training-set size", out / f"scaling_{key.split('/')[1]}.png"))
    return charts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/table1")
    ap.add_argument("--rows", default="20,500,7000", help="training-set sizes, comma separated")
    ap.add_argument("--eval-rows", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the default config's)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(REPO / "configs" / "tiny-cpu.yaml")
    steps = args.steps or cfg.run.steps
    sizes = [int(n) for n in args.rows.split(",")]
    started = time.perf_counter()

    print(f"held-out rows: {args.eval_rows} (seed {cfg.data.synthetic_eval.seed}); base model:", flush=True)
    eval_spec = cfg.data.synthetic_eval.model_copy(update={"n": args.eval_rows})
    eval_data = write_synth(out / "eval_data", eval_spec, split="eval")
    base = out / "base_model"
    if not base.exists():
        _cli("model", "tiny", "--out", str(base))
    results = [("base, direct prompt", _evaluate(base, eval_data, out / "eval_base_direct", "direct", args.eval_rows)),
               ("base, GRIT prompt", _evaluate(base, eval_data, out / "eval_base_grit", "grit", args.eval_rows))]
    for n in sizes:
        run = out / f"train_{n}"
        print(f"GRIT training on {n} rows, {steps} steps:", flush=True)
        _cli("train", "--run-dir", str(run), "--steps", str(steps), "--set", f"data.synthetic.n={n}")
        _cli("plot", str(run))
        results.append((f"GRIT-trained, {n} rows", _evaluate(run / "final_model", eval_data, out / f"eval_train_{n}",
                                                             "grit", args.eval_rows)))

    scaling_charts(out, sizes)
    table = _table(results)
    reference = results[1][1]["all"]
    deltas = [f"{name}: ACC {s['all']['acc'] - reference['acc']:+.1f} points, GIoU "
              f"{s['all']['giou'] - reference['giou']:+.3f} against the base model with GRIT's prompt"
              for name, s in results[2:]]
    (out / "table1.md").write_text(table + "\n\n" + "\n".join(f"- {d}" for d in deltas) + "\n")
    (out / "table1.json").write_text(json.dumps({"steps": steps, "eval_rows": args.eval_rows,
                                                 "results": dict(results)}, indent=2))
    print("\n" + table + "\n")
    for d in deltas:
        print(d)
    print(f"\n{time.perf_counter() - started:.0f}s; wrote {out / 'table1.md'}, {out / 'table1.json'} and "
          f"{out}/scaling_*.png")


if __name__ == "__main__":
    main()
