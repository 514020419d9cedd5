"""One whole training step on the real stack: vLLM rollout actor -> reward actors (fed while
generation runs) -> DeepSpeed learner -> weight sync back into the engine."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import ray

from grit_ray.config import DataSource, load_config
from grit_ray.data.rows import RowStream
from grit_ray.trainer.step import TrainingStep
from grit_ray.workers.learner_group import LearnerGroup
from grit_ray.workers.reward import RewardPool
from grit_ray.workers.rollout import PromptRequest, RolloutPool
from grit_ray.workers.weight_sync import WeightSync

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


def test_a_training_step_updates_the_engines(tiny_model_dir, synth_jsonl):
    repo = str(Path(__file__).resolve().parents[2])
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="grit-ray-step-test",
             runtime_env={"env_vars": {"PYTHONPATH": repo}})
    try:
        cfg = load_config(overrides=[
            "algorithm.prompts_per_step=4", "algorithm.group_size=4", "rollout.max_new_tokens=24",
            "learner.num_actors=1", "learner.zero_stage=2", "learner.micro_batch_size=4", "learner.lr=0.05",
            "model.device=cpu", "model.dtype=float32", "learner.comm_backend=gloo",
            "reward.actor_class=tests.custom_reward_actor:TokenSumReward"])
        rows = list(itertools.islice(RowStream([DataSource(path=str(synth_jsonl),
                                                           images=str(synth_jsonl.parent / "images"))]), 4))
        rollout = RolloutPool(cfg, str(tiny_model_dir))
        learners = LearnerGroup(cfg, str(tiny_model_dir))
        sync = WeightSync(cfg, learners, rollout)
        step = TrainingStep(cfg, rollout, RewardPool(cfg), learners, sync)

        def greedy():
            return [g.completions[0].token_ids for g in rollout.generate(
                [PromptRequest(r, i, 1) for i, r in enumerate(rows)], greedy=True)]

        before = greedy()
        m = step(rows)
        after = greedy()
    finally:
        ray.shutdown()
    assert m["groups/total"] == 4 and m["completion/len_mean"] > 0
    assert m["judge/not_asked"] + m.get("judge/ok", 0) == 16
    assert m["train/grad_norm"] > 0 and m["sync/weights_version"] == 1 and "train/skipped_update" not in m
    for key in ("time/generation", "time/reward_tail", "time/learner", "time/sync", "time/step"):
        assert m[key] >= 0, key
    assert m["time/step"] >= m["time/generation"] + m["time/learner"]
    assert after != before  # the engine now serves the updated policy
