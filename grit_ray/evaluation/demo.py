"""The end-to-end demo on the embedded default: config -> data -> model -> Ray -> vLLM rollout.

It exercises the real pieces that exist so far (validated config, streamed synthetic data, the
tiny offline model, a vLLM rollout worker as a Ray actor generating GRIT-prompted groups with
images) and writes the groups to ``RUN_DIR/samples.jsonl``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

from grit_ray.config import GritConfig, save_resolved_config
from grit_ray.data.rows import RowRules, RowStream, materialise_sources
from grit_ray.grit.rewards import RewardSet
from grit_ray.judge.rule import RuleJudge
from grit_ray.judge.scoring import CompletionScorer, RewardItem
from grit_ray.models.tiny import ensure_model
from grit_ray.workers.cluster import ray_session
from grit_ray.workers.rollout import GroupResult, PromptRequest, RolloutPool


def _say(msg: str) -> None:
    print(f"[grit-ray demo] {msg}", flush=True)


def _score_groups(cfg: GritConfig, groups: list[GroupResult]) -> list[list[float | None]]:
    """GRIT rewards of every completion, through the training path's scorer with the rule judge
    (the demo needs no API key)."""
    scorer = CompletionScorer(RewardSet.build(cfg.reward.preset, cfg.reward.weights, cfg.reward.extra_components),
                              RuleJudge(cfg.reward.judge.rule_match), cfg.data.counting_datasets)
    items = [[RewardItem.for_row(g, k, group.row, c.text, c.token_ids, template=cfg.prompt.template)
              for k, c in enumerate(group.completions)] for g, group in enumerate(groups)]

    async def score_all():
        return [[s.reward for s in await asyncio.gather(*(scorer.score(i) for i in group))] for group in items]

    return asyncio.run(score_all())


def run_demo(cfg: GritConfig, run_dir: Path) -> Path:
    import ray

    t0 = time.perf_counter()
    save_resolved_config(cfg, run_dir)
    _say(f"run dir {run_dir} (resolved config saved)")

    train_sources, _ = materialise_sources(cfg.data, run_dir)
    stream = RowStream(train_sources, RowRules.from_config(cfg.data), cfg.data.bad_rows)
    rows = list(itertools.islice(iter(stream), cfg.algorithm.prompts_per_step))
    _say(f"data: {len(rows)} prompts from {', '.join(s.path for s in train_sources)}; {stream.skipped_report()}")

    model_path = ensure_model(cfg.model.path, cfg.model.tiny, log=_say, family=cfg.model.family)
    _say(f"model: {model_path}")

    with ray_session(cfg.resources.ray_address):
        t = time.perf_counter()
        pool = RolloutPool(cfg, model_path)
        device = ray.get(pool.workers[0].device.remote())
        _say(f"{len(pool.workers)} rollout worker(s) ({cfg.rollout.backend.value}, {device}) ready in "
             f"{time.perf_counter() - t:.1f}s (engine {pool.startup_s:.1f}s)")
        requests = [PromptRequest(row=row, group_id=i, n=cfg.algorithm.group_size) for i, row in enumerate(rows)]
        t = time.perf_counter()
        groups = pool.generate(requests)
        gen_s = time.perf_counter() - t

    n_tokens = sum(len(c.token_ids) for g in groups for c in g.completions)
    rewards = _score_groups(cfg, groups)
    out = run_dir / "samples.jsonl"
    with out.open("w") as f:
        for g, group_rewards in zip(groups, rewards):
            f.write(json.dumps({"row": g.row.to_json(), "prompt": g.prompt,
                                "completions": [{"text": c.text, "tokens": len(c.token_ids), "reward": r,
                                                 "finish_reason": c.finish_reason}
                                                for c, r in zip(g.completions, group_rewards)]}) + "\n")
    _say(f"generated {len(groups)} groups x {cfg.algorithm.group_size} completions, {n_tokens} tokens "
         f"in {gen_s:.2f}s ({n_tokens / max(gen_s, 1e-9):.0f} tok/s)")
    flat = [r for rs in rewards for r in rs]
    _say(f"rewards ({cfg.reward.preset.value}, rule judge): mean {sum(flat) / len(flat):.3f}, "
         f"min {min(flat):.3f}, max {max(flat):.3f}")
    for g in groups[:4]:
        first = g.completions[0].text.replace("\n", " ")
        _say(f"  Q: {g.row.question}  ref: {g.row.answer}  -> {first[:60]!r}")
    _say(f"wrote {out}; total {time.perf_counter() - t0:.1f}s. (One untrained step of the base model: this "
         f"checks the plumbing, not the answers; `grit-ray train` is what teaches them.)")
    return out
