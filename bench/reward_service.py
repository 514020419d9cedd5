"""Reward service under a slow judge: (A) the reward stage alone against its ideal, and (B) whole
training steps with the LLM judge against the same steps with the rule judge (the overlap).

The judge is the local OpenAI-compatible server (grit_ray.testing.judge_server) with 300 ms latency.
(B) runs the real stack on the tiny model, synchronous steps and one-step-off steps
(``algorithm.max_staleness=1``: the next step generated and scored while the learner updates): one vLLM rollout actor, one DeepSpeed learner, weight
sync, 32 prompts x 4 = 128 completions per step. An untrained model stands in for a trained one
in two ways: a bench-only reward actor (swapped in through ``reward.actor_class``) appends an
<answer> so that every completion costs one judge call, and "?" is added to the stop strings so
completion lengths spread over 8..256 tokens as a real model's do (a random model otherwise runs
every completion to the length cap, and they all finish at once).

    .venv/bin/python bench/reward_service.py [--steps 3] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the bench's reward actor is named by import path: bench.reward_service

from grit_ray.config import TinyModelSpec, load_config
from grit_ray.data.rows import RowStream, materialise_sources
from grit_ray.models.tiny import build_tiny_model
from grit_ray.testing.judge_server import JudgeServer
from grit_ray.trainer.step import TrainingStep
from grit_ray.workers.learner_group import LearnerGroup
from grit_ray.workers.reward import RewardActor, RewardItem, RewardPool, ScoredCompletion
from grit_ray.workers.rollout import RolloutPool
from grit_ray.workers.weight_sync import WeightSync


class AlwaysJudged(RewardActor):
    """Bench only: give every completion an answer so that each one costs a judge call."""

    async def score(self, item: RewardItem) -> ScoredCompletion:
        words = item.completion.split() or ["none"]
        return await super().score(replace(item, completion=f"{item.completion} <answer> {words[-1]} </answer>"))


def judge_overrides(server: JudgeServer, concurrency: int) -> list[str]:
    return ["reward.judge.kind=openai", f"reward.judge.base_url={server.base_url}", "reward.judge.model=local",
            "reward.judge.api_key_env=GRIT_BENCH_KEY", f"reward.judge.concurrency={concurrency}",
            "reward.judge.timeout_s=10"]


def reward_stage(server: JudgeServer, latency: float, n: int) -> list[tuple[int, float, float]]:
    out = []
    for concurrency in (8, 16, 32, 64):
        pool = RewardPool(load_config(overrides=judge_overrides(server, concurrency)))
        pool.score([RewardItem(0, 0, "q", "a", "vsr", "<answer> warm </answer>")])
        items = [RewardItem(i, 0, "Is it red?", "Yes", "vsr", f"<answer> answer {i} </answer>") for i in range(n)]
        t = time.perf_counter()
        pool.score(items)
        out.append((concurrency, time.perf_counter() - t, math.ceil(n / concurrency) * latency))
        pool.shutdown()
    return out


def training_steps(server: JudgeServer, work: Path, steps: int) -> dict[str, dict[str, float]]:
    base = ["algorithm.prompts_per_step=32", "algorithm.group_size=4", "learner.num_actors=1",
            "learner.zero_stage=2", "learner.micro_batch_size=8", "rollout.num_workers=1",
            "rollout.max_new_tokens=256", 'rollout.stop=["</answer>", "?"]', "model.device=cpu", "model.dtype=float32", "learner.comm_backend=gloo",
            "reward.actor_class=bench.reward_service:AlwaysJudged", "data.synthetic.n=64",
            "resources.threads_per_actor=1",  # one core each: the one-step-off rows overlap the actors
            f"logging.run_dir={work}/run"]
    cfg_rule = load_config(overrides=base + ["reward.judge.kind=rule"])
    cfg_llm = load_config(overrides=base + judge_overrides(server, 32))
    model = str(build_tiny_model(work / "model", TinyModelSpec.plumbing(seed=0)))
    sources, _ = materialise_sources(cfg_rule.data, work / "run")
    rows = list(RowStream(sources))
    batches = itertools.cycle([rows[i:i + 32] for i in range(0, len(rows), 32)])
    rollout = RolloutPool(cfg_rule, model)
    learners = LearnerGroup(cfg_rule, model)
    sync = WeightSync(cfg_rule, learners, rollout)
    results = {}
    try:
        for label, cfg in (("rule judge", cfg_rule), ("LLM judge, 300 ms, concurrency 32", cfg_llm)):
            rewards = RewardPool(cfg)
            step = TrainingStep(cfg, rollout, rewards, learners, sync)
            step(next(batches))  # warm-up
            runs = [step(next(batches)) for _ in range(steps)]
            results[label] = {k: statistics.median(r[f"time/{k}"] for r in runs)
                              for k in ("step", "generation", "reward_tail", "learner", "sync")}
            off = TrainingStep(cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(
                update={"max_staleness": 1})}), rollout, rewards, learners, sync)
            results[f"{label}, one-step-off"] = one_step_off(off, batches, steps)
            rewards.shutdown()
            print(f"measured {label}", flush=True)
    finally:
        for actor in rollout.workers + learners.actors:
            ray.kill(actor)
    return results


def one_step_off(step: TrainingStep, batches, steps: int) -> dict[str, float]:
    """Steps as the trainer runs them with algorithm.max_staleness=1 (``TrainingStep.run``): step
    k+1 generated while step k's last scores come in and the learner updates; each step's wall
    time from its update's start (or its scores' wait) to its sync's end."""
    k = step.sync.version + 1
    collection = step.start_collect(next(batches), k)  # the pipeline fills
    runs = []
    for i in range(steps + 1):  # the first overlapped step is the warm-up
        started = time.perf_counter()
        m, collection = step.run(collection, lambda n=k + i + 1: step.start_collect(next(batches), n))
        m["time/step"] = time.perf_counter() - started
        runs.append(m)
    return {key: statistics.median(r[f"time/{key}"] for r in runs[1:])
            for key in ("step", "generation", "reward_tail", "learner", "sync")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--completions", type=int, default=128)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grit-reward-bench-"))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    with JudgeServer(latency_s=args.latency) as server:
        stage = reward_stage(server, args.latency, args.completions)
        steps = training_steps(server, work, args.steps)
    ray.shutdown()

    print(f"\n(A) reward stage: {args.completions} distinct completions, judge latency {args.latency * 1000:.0f} ms, "
          f"1 reward actor\n")
    print("| concurrency | wall s | ideal s | wall / ideal |")
    print("|---|---|---|---|")
    for c, wall, ideal in stage:
        print(f"| {c} | {wall:.2f} | {ideal:.2f} | {wall / ideal:.2f}x |")
    print(f"\n(B) training step, 32 prompts x 4, median of {args.steps} steps\n")
    print("| judge | step s | generation s | reward tail s | learner s | sync s | step vs rule judge |")
    print("|---|---|---|---|---|---|---|")
    for label, r in steps.items():
        base = steps["rule judge, one-step-off" if "one-step-off" in label else "rule judge"]["step"]
        print(f"| {label} | {r['step']:.2f} | {r['generation']:.2f} | {r['reward_tail']:.2f} | "
              f"{r['learner']:.2f} | {r['sync']:.2f} | {r['step'] / base:.2f}x |")
    print("\n(one-step-off rows: against the rule judge's one-step-off step; generation and scoring of the next "
          "step overlap the update, and 'learner s' is the wall time from the update's start to its end)")


if __name__ == "__main__":
    main()
