"""The driver's step: rollout -> rewards (overlapped) -> advantages -> learner update -> weight sync.

``TrainingStep`` owns no math and no model: it wires the rollout pool, the reward pool, the
learner group and the weight sync, and times each phase. Every completion goes to a reward actor
the moment its rollout worker streams it, so judge latency hides behind the generation of the
rest of the batch; ``reward_tail_s`` is what is left of it after the last completion.
"""

from __future__ import annotations

import time
from typing import Any

from grit_ray.config import GritConfig
from grit_ray.data import Row
from grit_ray.experience import TrainSample, assign_advantages
from grit_ray.reward_service import RewardItem, RewardPool
from grit_ray.rollout import PromptRequest, RolloutPool, SampledCompletion


def reward_item(sample: SampledCompletion, row: Row, send_image: bool) -> RewardItem:
    image = None
    if send_image:
        image = row.image if isinstance(row.image, bytes) else open(row.image, "rb").read()
    c = sample.completion
    return RewardItem(sample.group_id, sample.index, row.question, row.answer, row.dataset, c.text,
                      list(c.token_ids), image)


def train_sample(sample: SampledCompletion, row: Row) -> TrainSample:
    c = sample.completion
    return TrainSample(sample.prompt, row.image, list(c.token_ids), 0.0, c.logprobs, sample.group_id, 1.0, row.where)


class TrainingStep:
    def __init__(self, cfg: GritConfig, rollout: RolloutPool, rewards: RewardPool, learners, sync):
        self.cfg, self.rollout, self.rewards, self.learners, self.sync = cfg, rollout, rewards, learners, sync

    def __call__(self, rows: list[Row]) -> dict[str, Any]:
        import ray

        cfg = self.cfg
        started = time.perf_counter()
        requests = [PromptRequest(row, g, cfg.algorithm.group_size) for g, row in enumerate(rows)]
        samples: dict[tuple[int, int], SampledCompletion] = {}
        items: list[RewardItem] = []
        refs = []
        tokens = 0
        for s in self.rollout.stream(requests):  # completions in the order they finish
            item = reward_item(s, rows[s.group_id], cfg.reward.judge.send_image)
            refs.append(self.rewards.submit(item))  # scoring starts now, while others still generate
            items.append(item)
            samples[(s.group_id, s.index)] = s
            tokens += len(s.completion.token_ids)
        generation_s = time.perf_counter() - started
        scored = ray.get(refs)
        reward_tail_s = time.perf_counter() - started - generation_s
        settled = self.rewards.settle(items, scored)

        keys = [k for k in sorted(samples) if k[0] not in settled.dropped_groups]
        batch = [train_sample(samples[k], rows[k[0]]) for k in keys]
        rewards = [settled.reward(*k) for k in keys]
        metrics: dict[str, Any] = {"generation_s": generation_s, "reward_tail_s": reward_tail_s,
                                   "completion_tokens": tokens, **settled.metrics}
        if rewards:
            metrics["reward_mean"] = sum(rewards) / len(rewards)
        batch, adv_stats = assign_advantages(batch, rewards, cfg.algorithm)
        metrics.update(adv_stats)
        t = time.perf_counter()
        if batch:
            metrics.update(self.learners.train_step(batch))
            metrics["learner_s"] = time.perf_counter() - t
            metrics.update(self.sync.sync())
        else:  # every group dropped (or flat and dropped): no update, no sync, and the metrics say so
            metrics["skipped_update"] = 1.0
        metrics["step_s"] = time.perf_counter() - started
        return metrics
