"""One whole training step on the real stack: vLLM rollout actor -> reward actors (fed while
generation runs) -> DeepSpeed learner -> weight sync back into the engine."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import ray

from grit_ray.config import DataSource, load_config
from grit_ray.data import RowStream
from grit_ray.driver import TrainingStep
from grit_ray.learner_group import LearnerGroup
from grit_ray.reward_service import RewardPool
from grit_ray.rollout import PromptRequest, RolloutPool
from grit_ray.weight_sync import WeightSync

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


def test_a_training_step_updates_the_engines(tiny_model_dir, synth_jsonl):
    repo = str(Path(__file__).resolve().parents[1])
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
    assert m["groups"] == 4 and m["completion_tokens"] > 0 and m["judge_not_asked"] + m.get("judge_ok", 0) == 16
    assert m["grad_norm"] > 0 and m["weights_version"] == 1 and "skipped_update" not in m
    for key in ("generation_s", "reward_tail_s", "learner_s", "sync_s", "step_s"):
        assert m[key] >= 0, key
    assert m["step_s"] >= m["generation_s"] + m["learner_s"]
    assert after != before  # the engine now serves the updated policy
