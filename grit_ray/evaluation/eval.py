"""``grit-ray eval``: greedy decoding through the rollout workers, scored by the reward actors,
summarised per dataset (n, ACC, GIoU, judge failures) and rendered as an HTML report.

Results are keyed by row, not by worker or arrival order, and decoding is greedy, so the numbers
do not depend on how many workers ran or how requests were batched (the released code's did).
Output: ``OUT/results.jsonl`` (one row per input row, the ``grit-ray score`` schema),
``OUT/summary.json``, ``OUT/summary.md``, ``OUT/report.html`` and ``OUT/judge_report.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from grit_ray.config import DataSource, GritConfig
from grit_ray.data.rows import DataError, Row, RowRules, RowStream
from grit_ray.evaluation.score import fmt_or_dash, format_table, summarise
from grit_ray.grit.grounding import FrameSpec
from grit_ray.grit.metrics import completion_giou
from grit_ray.judge.scoring import ScoredCompletion
from grit_ray.judge.usage import write_judge_report
from grit_ray.models import box_frame_spec


def result_row(row: Row, completion: str, scored: ScoredCompletion, frame: FrameSpec) -> dict[str, Any]:
    giou = completion_giou(completion, row.bboxs, row.width, row.height, frame) if row.bboxs else None
    return {**row.to_json(), "where": row.where, "completion": completion, "rewards": scored.components,
            "reward": scored.reward, "giou": giou, "judge": scored.judge_json()}


def summary_markdown(table: dict[str, dict[str, Any]]) -> str:
    f = fmt_or_dash
    lines = ["| dataset | n | ACC | GIoU | reward | judge failures |", "|---|---|---|---|---|---|"]
    for name, s in table.items():
        lines.append(f"| {name} | {s['n']} | {f(s['acc'], '.1f')} | {f(s['giou'], '.3f')} | "
                     f"{f(s['reward_mean'], '.3f')} | {s['judge_failures']} |")
    return "\n".join(lines) + "\n"


def run_eval(cfg: GritConfig, data: list[DataSource], out_dir: Path, max_rows: int | None = None,
             report: bool = True, crossmodal: bool = False) -> dict[str, dict[str, Any]]:
    from grit_ray.trainer.held_out import greedy_scored
    from grit_ray.workers.cluster import ray_session
    from grit_ray.workers.reward import RewardPool
    from grit_ray.workers.rollout import RolloutPool

    started = time.perf_counter()
    stream = RowStream(data, RowRules.from_config(cfg.data), cfg.data.bad_rows)
    rows = [r for _, r in zip(range(max_rows or 10**12), stream)]
    if not rows:
        raise DataError(f"{', '.join(d.path for d in data)}: no rows to evaluate")
    frame = box_frame_spec(cfg)
    with ray_session(cfg.resources.ray_address):
        rewards = RewardPool(cfg)
        samples, scored = greedy_scored(cfg, RolloutPool(cfg, str(cfg.model.path)), rewards, rows)
        judge = rewards.judge_report()
    results = [result_row(row, s.completion.text, sc, frame) for row, s, sc in zip(rows, samples, scored)]
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"[grit-ray] {write_judge_report(judge, out_dir)}")
    with (out_dir / "results.jsonl").open("w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    table = summarise(results)
    (out_dir / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    (out_dir / "summary.md").write_text(summary_markdown(table))
    if crossmodal:
        from grit_ray.evaluation.crossmodal import crossmodal_correlation

        cm = crossmodal_correlation(results, rows, frame, cfg.reward.judge, repeats=3, seed=cfg.run.seed)
        (out_dir / "crossmodal.json").write_text(json.dumps(cm, indent=2) + "\n")
        line = (f"cross-modal correlation: {cm['mean']:.3f} +- {cm['std']:.3f} over {cm['repeats']} repeats, "
                f"{cm['rows']} rows with boxes, {cm['unanswered']} unanswered" if cm["mean"] is not None
                else f"cross-modal correlation: no answer ({cm['rows']} rows with boxes)")
        print(line)
        with (out_dir / "summary.md").open("a") as f:
            f.write("\n" + line + "\n")
    if report:
        from grit_ray.evaluation.report import write_report

        write_report(results, rows, frame, out_dir / "report.html", title=f"grit-ray eval: {cfg.model.path}",
                     summary=table)
    print(format_table(table))
    print(f"[grit-ray] evaluated {len(rows)} rows in {time.perf_counter() - started:.0f}s; "
          f"wrote {out_dir}/results.jsonl, summary.json, summary.md" + (", report.html" if report else ""))
    if stream.skipped:
        print(f"[grit-ray] {stream.skipped_report()}")
    return table
