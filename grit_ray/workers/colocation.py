"""The memory handoff between engines and learners that share GPUs (docs/cluster.md, "Colocation"):
which of them holds a GPU's memory when. Driver side, a few calls per step; the work is done by
``RolloutWorker.sleep`` / ``wake`` and ``PolicyLearner.offload_states`` / ``reload_states``.

One synchronous step with a ``ColocationPlan`` that sleeps and offloads::

    generate                  engines awake; learner states in host memory
    to_learners()             engines sleep (rollout.sleep), learners reload their states
    update
    to_sync()                 learners offload their states and empty the cache, engines wake their weights
    sync                      the new weights into the engines
    to_engines()              engines wake their KV cache

At start-up (``trainer.loop``) the engines load, measure their memory and sleep before any learner
loads; ``at_start`` then hands the GPUs to generation. With an inactive plan every call is free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grit_ray.config import ColocationPlan, EngineSleep
from grit_ray.workers.rollout import WakeTag

if TYPE_CHECKING:
    from grit_ray.workers.learner_group import LearnerGroup
    from grit_ray.workers.rollout import RolloutPool


class MemoryHandoff:
    def __init__(self, plan: ColocationPlan, rollout: RolloutPool, learners: LearnerGroup):
        self.plan, self.rollout, self.learners = plan, rollout, learners

    def _offload(self) -> dict[str, float]:
        if not self.plan.offload_ranks:
            return {}
        done = self.learners.on_ranks(self.plan.offload_ranks, "offload_states", "learner offload")
        return {"colocation/learner_offload_s": max(d["offload_s"] for d in done),
                "colocation/learner_freed_gib": sum(d["offload_freed_gib"] for d in done) / len(done)}

    def _wake(self, tag: WakeTag) -> dict[str, float]:
        if self.plan.sleep is EngineSleep.OFF:
            return {}
        return {"colocation/engine_wake_s": max(self.rollout.on_all("wake", tag))}

    def at_start(self) -> dict[str, float]:
        """After every actor loaded (the engines asleep since their start): generation first."""
        out = self._offload()
        for tag in WakeTag:  # the weights, then the KV cache
            for k, v in self._wake(tag).items():
                out[k] = out.get(k, 0.0) + v
        return out

    def to_learners(self) -> dict[str, float]:
        """Before an update: the engines free their memory, then the learners take theirs back."""
        out: dict[str, float] = {}
        if self.plan.sleep is not EngineSleep.OFF:
            slept = self.rollout.on_all("sleep", self.plan.sleep.vllm_level)
            out["colocation/engine_sleep_s"] = max(s["sleep_s"] for s in slept)
            out["colocation/engine_freed_gib"] = sum(s["sleep_freed_gib"] for s in slept) / len(slept)
        if self.plan.offload_ranks:
            out["colocation/learner_reload_s"] = max(
                self.learners.on_ranks(self.plan.offload_ranks, "reload_states", "learner reload"))
        return out

    def to_sync(self) -> dict[str, float]:
        """After the update: the learners park what the sync does not read, the engines take back
        their weights, so the sync never holds an optimizer and an engine's weights at once."""
        return {**self._offload(), **self._wake(WakeTag.WEIGHTS)}

    def to_engines(self) -> dict[str, float]:
        """After the sync: the engines take back their KV cache, ready to generate."""
        return self._wake(WakeTag.KV_CACHE)
