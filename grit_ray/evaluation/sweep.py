"""``grit-ray sweep``: one config over several seeds, every metric as a mean with a 95% interval.

RL on a few hundred prompts of a tiny model moves by several points between seeds (of the base
model's build, of the run): one run says little. The sweep starts ``grit-ray train`` once per seed,
as a user would (its own process, its own Ray), with ``--set KEY=SEED``, into ``OUT/seed-S``; then
it reads every run's ``metrics.jsonl`` and reports, per evaluation metric and step, the mean over
seeds with a Student-t 95% interval and the range, as ``summary.json``, ``summary.md`` and a plot of
the mean curves with their intervals (docs/results.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from grit_ray.evaluation.plots import line_chart, read_metrics

# two-sided 95% quantiles of Student's t for 1..10 degrees of freedom; past that, 1.96 is close enough
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
SUMMARY_PREFIXES = ("eval/",)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # the 95% interval of the mean (Student t); equal to the mean for one seed
    high: float
    min: float
    max: float
    n: int


def mean_interval(values: list[float]) -> Interval:
    """Mean over seeds, its 95% interval (t with n-1 degrees of freedom) and the range."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, mean, mean, mean, mean, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (_T95[n - 2] if n - 1 <= len(_T95) else 1.96) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, min(values), max(values), n)


def summarise(runs: dict[int, list[dict]], prefixes: tuple[str, ...] = SUMMARY_PREFIXES) -> dict[str, dict[int, Interval]]:
    """seed -> metrics rows  ->  metric -> step -> interval over the seeds that logged it."""
    by_metric: dict[str, dict[int, list[float]]] = {}
    for rows in runs.values():
        for row in rows:
            for key, value in row.items():
                if key.startswith(prefixes) and isinstance(value, int | float) and not isinstance(value, bool):
                    by_metric.setdefault(key, {}).setdefault(row["step"], []).append(float(value))
    return {k: {step: mean_interval(v) for step, v in sorted(steps.items())} for k, steps in sorted(by_metric.items())}


def summary_table(summary: dict[str, dict[int, Interval]], metrics: list[str]) -> str:
    """Markdown: a row per metric, the first and last step as 'mean [low, high] (min-max)'."""
    lines = ["| metric | first step | last step |", "|---|---|---|"]
    for key in metrics:
        if key not in summary:
            continue
        steps = summary[key]
        first, last = steps[min(steps)], steps[max(steps)]
        cell = lambda i, s: f"step {s}: {i.mean:.3f} [{i.low:.3f}, {i.high:.3f}] ({i.min:.3f}-{i.max:.3f}, n={i.n})"  # noqa: E731
        lines.append(f"| {key} | {cell(first, min(steps))} | {cell(last, max(steps))} |")
    return "\n".join(lines)


def band_chart(summary: dict[str, dict[int, Interval]], metrics: list[str], title: str, out: Path) -> Path:
    """Mean curves over seeds, each with its 95% band (``grit-ray plot``'s chart). A metric logged at
    one step only (the constant-answer baseline, at step 0) is drawn as a level line across them."""
    shown = {k: summary[k] for k in metrics if k in summary}
    steps = sorted({s for v in shown.values() for s in v})
    levels = {k: {s: next(iter(v.values())) for s in steps} for k, v in shown.items() if len(v) == 1}
    shown.update(levels)
    series = {k: [(s, i.mean) for s, i in v.items()] for k, v in shown.items()}
    bands = {k: [(s, i.low, i.high) for s, i in v.items()] for k, v in shown.items()}
    return line_chart(series, title, out, bands=bands)


def run_sweep(out_dir: Path, seeds: list[int], vary: str, train_args: list[str], log=print) -> dict:
    """``grit-ray train TRAIN_ARGS --set VARY=S --run-dir OUT/seed-S`` for each seed (a run that
    already finished is read, not run again), then the summary files; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for seed in seeds:
        run_dir = out_dir / f"seed-{seed}"
        if not (run_dir / "done").exists():
            log(f"sweep: seed {seed} ({vary}={seed}) -> {run_dir}")
            cmd = [sys.executable, "-m", "grit_ray.cli", "train", *train_args, "--set", f"{vary}={seed}",
                   "--run-dir", str(run_dir)]
            if subprocess.run(cmd).returncode != 0:
                raise RuntimeError(f"sweep: the run of seed {seed} failed (its output is above; {run_dir})")
            (run_dir / "done").write_text("")
        runs[seed] = read_metrics(run_dir)
    summary = summarise(runs)
    metrics = [k for k in summary if k.endswith(("/accuracy", "/giou", "constant_accuracy"))]
    (out_dir / "summary.json").write_text(json.dumps(
        {"vary": vary, "seeds": seeds, "metrics": {k: {str(s): asdict(i) for s, i in v.items()} for k, v in summary.items()}},
        indent=1))
    table = summary_table(summary, metrics)
    (out_dir / "summary.md").write_text(f"# sweep over {vary} = {seeds}\n\nmean [95% interval] (range)\n\n{table}\n")
    band_chart(summary, [k for k in metrics if k.endswith("accuracy") and k.count("/") == 1],
               f"held-out accuracy over {vary} = {seeds}: mean and 95% interval", out_dir / "accuracy.png")
    band_chart(summary, [k for k in metrics if k.endswith("giou") and k.count("/") == 1],
               f"held-out GIoU over {vary} = {seeds}: mean and 95% interval", out_dir / "giou.png")
    log(table)
    return summary
