"""A synthetic reproduction of GRIT's Table 1 and of its data-scaling figure (docs/results.md).

On held-out synthetic VSR-like and TallyQA-like rows (the default config's evaluation seed), it
reports ACC (rule judge) and GIoU per dataset for
  - the best constant answer per question kind (what a model scores without looking at the image),
  - the tiny base model asked directly (the direct-query prompt),
  - the same base model with GRIT's prompt,
  - the same base model under its corpus's own cue for a grounded chain (boxes first, then "So:"),
  - GRIT-trained models, from 20, 500 and 7,000 training rows at the same number of steps
    (the default config otherwise; 500 rows is the default run), with their curves
    (`grit-ray plot`) and the held-out accuracy and GIoU of the three against the step.
Every model is evaluated by the same `grit-ray eval` (greedy decoding) on the same rows; the
training runs are started as a user would start them, through `grit-ray train`. Differences are
printed against the base model with GRIT's prompt, measured in the same run.

    .venv/bin/python bench/synthetic_table1.py --out runs/table1 [--rows 20,500,7000] [--eval-rows 256] [--steps N]
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

from grit_ray.config import CoordFrame, load_config  # noqa: E402
from grit_ray.data.synth import write_synth  # noqa: E402
from grit_ray.evaluation.plots import line_chart, read_metrics  # noqa: E402
from grit_ray.grit.grounding import FrameSpec, find_boxes, to_original  # noqa: E402
from grit_ray.grit.metrics import union_iou  # noqa: E402
from grit_ray.judge.baseline import best_constant_answers  # noqa: E402

DATASETS = ("vsr", "tallyqa", "all")


def _cli(*args: str) -> str:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grit_ray.cli", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"grit-ray {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    print(f"  grit-ray {' '.join(args)}  ({time.perf_counter() - started:.0f}s)", flush=True)
    return proc.stdout


def boxes_on_named_shapes(results: Path) -> float | None:
    """Share of the boxes in the completions (mapped to the image's pixels) that land on a shape the
    question names (IoU above 0.3 with one of the row's ground-truth boxes); None without boxes."""
    frame = FrameSpec(CoordFrame.QWEN_RESIZED)
    landed = total = 0
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if not r["bboxs"]:
            continue
        for box in find_boxes(r["completion"]):
            b = to_original(box, r["width"], r["height"], frame)
            total += 1
            landed += max(union_iou([b], [tuple(g)]) for g in r["bboxs"]) > 0.3
    return landed / total if total else None


def _evaluate(model: Path, data: Path, out: Path, prompt: str, rows: int) -> dict:
    _cli("eval", "--model", str(model), "--data", str(data), "--out", str(out), "--prompt", prompt,
         "--max-rows", str(rows), "--no-report")
    summary = json.loads((out / "summary.json").read_text())
    summary["all"]["boxes_on_named"] = boxes_on_named_shapes(out / "results.jsonl")
    return summary


def _cells(summary: dict) -> list[str]:
    return [f"{summary[d]['acc']:.1f} / " + (f"{summary[d]['giou']:.3f}" if summary[d].get("giou") is not None else "-")
            if d in summary else "-" for d in DATASETS]


def constant_summary(rows_file: Path, n: int) -> dict:
    """The best constant answer per question kind, as a summary like `grit-ray eval`'s (no boxes)."""
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()][:n]
    out = {}
    for dataset in DATASETS:
        picked = [(r["dataset"], r["answer"]) for r in rows if dataset in ("all", r["dataset"])]
        answers = best_constant_answers(picked)
        out[dataset] = {"acc": 100 * sum(a.right for a in answers) / len(picked), "giou": None}
    return out


def _table(results: list[tuple[str, dict]]) -> str:
    head = "| model | " + " | ".join(f"{d} ACC / GIoU" for d in DATASETS) + " | boxes on named shapes |"
    lines = [head, "|" + "---|" * (len(DATASETS) + 2)]
    share = lambda s: "-" if s["all"].get("boxes_on_named") is None else f"{s['all']['boxes_on_named']:.2f}"  # noqa: E731
    lines += [f"| {name} | " + " | ".join(_cells(summary)) + f" | {share(summary)} |" for name, summary in results]
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
    ap.add_argument("--eval-rows", type=int, default=256)
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
    results = [("best constant answer per question kind", constant_summary(eval_data, args.eval_rows)),
               ("base, direct prompt", _evaluate(base, eval_data, out / "eval_base_direct", "direct", args.eval_rows)),
               ("base, GRIT prompt", _evaluate(base, eval_data, out / "eval_base_grit", "grit", args.eval_rows)),
               ("base, boxes-first cue (its corpus's chains)",
                _evaluate(base, eval_data, out / "eval_base_boxes_first", "boxes-first", args.eval_rows))]
    grit_prompt = 2  # the row the trained models are compared with
    for n in sizes:
        run = out / f"train_{n}"
        print(f"GRIT training on {n} rows, {steps} steps:", flush=True)
        _cli("train", "--run-dir", str(run), "--steps", str(steps), "--set", f"data.synthetic.n={n}")
        _cli("plot", str(run))
        results.append((f"GRIT-trained, {n} rows", _evaluate(run / "final_model", eval_data, out / f"eval_train_{n}",
                                                             "grit", args.eval_rows)))

    scaling_charts(out, sizes)
    table = _table(results)
    reference = results[grit_prompt][1]["all"]
    best_blind = max(results[i][1]["all"]["acc"] for i in range(grit_prompt + 1))
    deltas = [f"{name}: ACC {s['all']['acc'] - reference['acc']:+.1f} points, GIoU "
              f"{s['all']['giou'] - reference['giou']:+.3f} against the base model with GRIT's prompt; ACC "
              f"{s['all']['acc'] - best_blind:+.1f} against the best of the constant, direct and GRIT-prompt rows"
              for name, s in results[grit_prompt + 2:]]
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
