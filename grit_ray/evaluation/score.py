"""``grit-ray score``: rewards, judge and metrics for a file of completions.

Input rows are GRIT data rows plus ``completion``; output rows are the input plus ``rewards``,
``reward``, ``giou`` and ``judge``. Judge calls run concurrently; a failed call leaves
``answer_accuracy`` and ``reward`` null (unknown) and is counted, never scored 0.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grit_ray.config import JudgeConfig, RewardPreset
from grit_ray.grit.grounding import FrameSpec
from grit_ray.grit.metrics import completion_giou, mean_or_none
from grit_ray.grit.rewards import RewardSet
from grit_ray.judge import make_judge
from grit_ray.judge.protocol import JudgeStatus
from grit_ray.judge.scoring import CompletionScorer, RewardItem, judged_accuracy

SCORE_REQUIRED = {"completion": str, "question": str, "dataset": str}


class ScoreInputError(ValueError):
    pass


def read_score_input(path: Path) -> list[dict[str, Any]]:
    """Rows of a completions file; the first unreadable line stops with ``FILE:LINE: reason``."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScoreInputError(f"{path}: cannot read: {e}") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScoreInputError(f"{path}:{n}: bad JSON: {e}") from None
        if not isinstance(row, dict):
            raise ScoreInputError(f"{path}:{n}: row must be a JSON object")
        for key, typ in SCORE_REQUIRED.items():
            if not isinstance(row.get(key), typ):
                raise ScoreInputError(f"{path}:{n}: field '{key}' must be a string")
        if not isinstance(row.get("answer"), str | int) or isinstance(row.get("answer"), bool):
            raise ScoreInputError(f"{path}:{n}: field 'answer' must be a string or integer")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class ScoreSettings:
    preset: RewardPreset = RewardPreset.GRIT_CODE
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    frame: FrameSpec = FrameSpec()
    counting_datasets: frozenset[str] = frozenset({"tallyqa"})
    images_dir: Path | None = None


def _image_for(row: dict[str, Any], images_dir: Path | None) -> bytes | None:
    name = row.get("image")
    if not isinstance(name, str) or images_dir is None:
        return None
    path = images_dir / name
    return path.read_bytes() if path.is_file() else None


async def score_rows(rows: list[dict[str, Any]], settings: ScoreSettings) -> list[dict[str, Any]]:
    """Every row scored concurrently through the training path's ``CompletionScorer``; only
    completions with an <answer> go to the judge (no answer scores 0 without a call)."""
    judge = make_judge(settings.judge)
    scorer = CompletionScorer(RewardSet.build(settings.preset), judge, settings.counting_datasets,
                              settings.judge.on_failure, fallback_match=settings.judge.rule_match)
    items = [RewardItem.for_row(i, 0, row, row["completion"], row.get("completion_token_ids") or (),
                                _image_for(row, settings.images_dir)) for i, row in enumerate(rows)]
    try:
        scored = await asyncio.gather(*(scorer.score(item) for item in items))
    finally:
        await judge.aclose()

    out = []
    for row, s in zip(rows, scored):
        giou = None
        if isinstance(row.get("bboxs"), list) and row.get("width") and row.get("height"):
            giou = completion_giou(row["completion"], row["bboxs"], row["width"], row["height"], settings.frame)
        out.append({**row, "rewards": s.components, "reward": s.reward, "giou": giou, "judge": s.judge_json()})
    return out


def summarise(scored: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dataset and overall: n, ACC (raw judge score x 100), GIoU, mean reward, judge failures."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in scored:
        groups[row["dataset"]].append(row)
        groups["all"].append(row)
    table = {}
    for name, rows in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        acc = judged_accuracy(r["judge"] for r in rows)
        table[name] = {
            "n": len(rows),
            "acc": None if acc is None else 100.0 * acc,
            "giou": mean_or_none(r["giou"] for r in rows),
            "reward_mean": mean_or_none(r["reward"] for r in rows),
            "judge_failures": sum(r["judge"]["status"] == JudgeStatus.FAILED for r in rows),
        }
    return table


def fmt_or_dash(v: float | None, spec: str) -> str:
    """A number formatted with ``spec``, or "-" when it is unknown."""
    return "-" if v is None else format(v, spec)


def format_table(table: dict[str, dict[str, Any]]) -> str:
    f = fmt_or_dash
    lines = [f"{'dataset':<12} {'n':>6} {'ACC':>7} {'GIoU':>7} {'reward':>7} {'judge failures':>15}"]
    for name, s in table.items():
        lines.append(f"{name:<12} {s['n']:>6} {f(s['acc'], '.1f'):>7} {f(s['giou'], '.3f'):>7} "
                     f"{f(s['reward_mean'], '.3f'):>7} {s['judge_failures']:>15}")
    return "\n".join(lines)


def summary_path(out: Path) -> Path:
    name = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(name + ".summary.json")


def run_score(input_path: Path, out_path: Path, settings: ScoreSettings) -> dict[str, dict[str, Any]]:
    rows = read_score_input(input_path)
    scored = asyncio.run(score_rows(rows, settings))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as f:
        for row in scored:
            f.write(json.dumps(row) + "\n")
    table = summarise(scored)
    summary_path(out_path).write_text(json.dumps(table, indent=2) + "\n")
    return table

