"""Inspection hooks for tests and benchmarks, kept out of the production actors.

``InspectableLearnerGroup`` and ``InspectableRolloutPool`` start subclasses of the real actors that
can also hand out the full weights, the gathered bucket sizes and the engine's expanded prompt ids,
and move a sync's bytes with nothing gathered, packed or loaded (``raw_transfer``: the physical
limit the weight-sync benchmark measures a sync against).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from grit_ray.data.rows import Row
from grit_ray.workers.learner_group import LearnerActor, LearnerGroup
from grit_ray.workers.rollout import RolloutPool, RolloutWorker, VLLMGenerator


class InspectableLearnerActor(LearnerActor):
    def full_weights(self, bucket_mb: float) -> dict[str, torch.Tensor]:
        """The whole model on rank 0 (others return {}); for tests and small models."""
        plan = self.learner.weight_plan(bucket_mb)
        return {n: t for bucket in self.learner.gathered_buckets(plan) for n, t in bucket}

    def offloaded_states(self) -> list[str]:
        """What DeepSpeed holds in host memory now (``learner.offload_states``), by its own books."""
        return sorted(str(getattr(s, "value", s)) for s in self.learner.engine.optimizer.offloaded_states)

    def bucket_sizes(self, bucket_mb: float) -> list[int]:
        """Bytes per gathered bucket on rank 0 (others: [])."""
        plan = self.learner.weight_plan(bucket_mb)
        return [sum(t.numel() * t.element_size() for _, t in b) for b in self.learner.gathered_buckets(plan) if b]

    def raw_send(self) -> list:
        """The sync plan's bytes, bucket by bucket, over the sync transport from one reused buffer."""
        import ray

        sender = self.sender
        if sender is None:
            return []
        buf = torch.ones(max(b.nbytes for b in sender.plan), dtype=torch.uint8, device=self.learner.device)
        refs = []
        for bucket in sender.plan:
            if sender.channel:
                sender.channel.broadcast(buf[:bucket.nbytes])
            else:
                refs.append(ray.put(buf[:bucket.nbytes].cpu()))
        return refs


class InspectableLearnerGroup(LearnerGroup):
    actor_class = InspectableLearnerActor

    def full_weights(self, bucket_mb: float | None = None) -> dict[str, torch.Tensor]:
        return self._all("full_weights", bucket_mb or self.cfg.weight_sync.bucket_mb)[0]


class InspectableRolloutWorker(RolloutWorker):
    def engine_prompt_ids(self, row: Row) -> list[int]:
        """The prompt ids as the engine expanded them (vLLM) - for checking image-token counts."""
        gen = self.generator
        prompt = gen.prompt_text(row.question)
        if isinstance(gen, VLLMGenerator):
            from vllm import SamplingParams

            out = gen.llm.generate([gen.engine_prompt(prompt, row)], SamplingParams(max_tokens=1), use_tqdm=False)
            return list(out[0].prompt_token_ids)
        return gen.encoder.encode(prompt, row.image, row.where)["input_ids"][0].tolist()

    def raw_receive(self, refs: list) -> float:
        """Receive a sync's bytes over the sync transport and load nothing."""
        import ray

        receiver = self.sync
        started = time.perf_counter()
        buf = torch.empty(max(b.nbytes for b in receiver.plan), dtype=torch.uint8, device=receiver.device)
        for i, bucket in enumerate(receiver.plan):
            if receiver.channel:
                receiver.channel.broadcast(buf[:bucket.nbytes])
            else:
                buf[:bucket.nbytes].copy_(ray.get(refs[i]))
        return time.perf_counter() - started


class InspectableRolloutPool(RolloutPool):
    worker_class = InspectableRolloutWorker


def raw_transfer(sync: Any) -> float:
    """Seconds to move a sync's bytes in the same buckets over the same transport with nothing
    gathered, packed or loaded (the pools must be the inspectable ones)."""
    import ray

    started = time.perf_counter()
    send = sync.learners.actors[0].raw_send.remote()
    if sync.broadcast:
        ray.get([w.raw_receive.remote([]) for w in sync.rollout.workers] + [send])
    else:
        refs = ray.get(send)
        ray.get([w.raw_receive.remote(refs) for w in sync.rollout.workers])
    return time.perf_counter() - started
