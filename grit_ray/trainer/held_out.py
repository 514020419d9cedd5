"""Held-out evaluation during training: one greedy completion per row through the rollout workers,
scored by the reward actors, keyed by row so the numbers do not depend on worker count or order."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from grit_ray.config import GritConfig
from grit_ray.data.rows import Row
from grit_ray.grit.metrics import completion_giou, mean_or_none
from grit_ray.judge.scoring import ScoredCompletion, judged_accuracy
from grit_ray.models import box_frame_spec
from grit_ray.trainer.step import check_weights_version, reward_item, reward_metrics
from grit_ray.workers.reward import RewardPool
from grit_ray.workers.rollout import PromptRequest, RolloutPool, SampledCompletion


def greedy_scored(cfg: GritConfig, rollout: RolloutPool, rewards: RewardPool, rows: list[Row],
                  weights_version: int | None = None) -> tuple[list[SampledCompletion], list[ScoredCompletion]]:
    """One greedy completion per row and its score, both in row order (not arrival order), so the
    result does not depend on how many workers ran or how requests were batched. Each completion
    goes to the reward actors as it arrives, so judge calls overlap the generation of the rest."""
    requests = [PromptRequest(row=row, group_id=g, n=1) for g, row in enumerate(rows)]
    done, items, refs = {}, {}, {}
    for s in rollout.stream(requests, greedy=True):
        if weights_version is not None:
            check_weights_version(s, weights_version)
        done[s.group_id] = s
        items[s.group_id] = reward_item(s, rows[s.group_id], cfg)
        refs[s.group_id] = rewards.submit(items[s.group_id])
    order = range(len(rows))
    return [done[g] for g in order], rewards.collect([items[g] for g in order], [refs[g] for g in order])


def evaluate(cfg: GritConfig, rollout: RolloutPool, rewards: RewardPool, rows: list[Row],
             weights_version: int | None = None) -> dict[str, float]:
    """Greedy decoding on held-out rows, scored by the reward actors: eval/accuracy (``grit-ray eval``'s
    ACC / 100), eval/giou and eval/reward/... over all rows, and eval/<dataset>/accuracy and /giou per
    dataset."""
    started = time.perf_counter()
    samples, scored = greedy_scored(cfg, rollout, rewards, rows, weights_version)
    out = reward_metrics(scored, prefix="eval/")
    frame = box_frame_spec(cfg)
    giou = [completion_giou(s.completion.text, row.bboxs, row.width, row.height, frame) if row.bboxs else None
            for s, row in zip(samples, rows)]
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_dataset[row.dataset].append(i)
    for prefix, idx in [("eval/", range(len(rows))), *((f"eval/{d}/", ix) for d, ix in sorted(by_dataset.items()))]:
        if (v := judged_accuracy(scored[i].judge_json() for i in idx)) is not None:
            out[f"{prefix}accuracy"] = v
        if (v := mean_or_none(giou[i] for i in idx)) is not None:
            out[f"{prefix}giou"] = v
    out["eval/judge_failed"] = float(sum(s.reward is None for s in scored))
    out["eval/rows"] = float(len(rows))
    out["time/eval"] = time.perf_counter() - started
    return out


def eval_line(m: dict[str, Any]) -> str:
    """'eval @ step N: accuracy 0.312 (vsr 0.4, tallyqa 0.2) | giou 0.281 (...)' from evaluate()'s keys."""
    datasets = sorted({k.split("/")[1] for k in m if k.startswith("eval/") and k.count("/") == 2
                       and k.endswith(("/accuracy", "/giou"))})
    parts = []
    for metric in ("accuracy", "giou", "reward/mean"):
        if f"eval/{metric}" not in m:
            continue
        per = ", ".join(f"{d} {m[f'eval/{d}/{metric}']:.3f}" for d in datasets if f"eval/{d}/{metric}" in m)
        parts.append(f"{metric.split('/')[0]} {m[f'eval/{metric}']:.3f}" + (f" ({per})" if per else ""))
    return f"eval @ step {m['step']}: " + " | ".join(parts)
