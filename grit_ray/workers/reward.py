"""Reward service: a pool of asynchronous reward actors that score each completion as soon as a
rollout worker emits it.

A reward actor runs the rule components locally and the answer judge asynchronously (many calls
in flight per actor, bounded by ``reward.judge.concurrency`` and the rate limits, with timeouts,
retries with backoff and jitter). Identical judge requests - a group's completions often give the
same answer - share one call through a per-actor cache. A judge failure is never a reward of 0:
the completion comes back with ``reward=None`` and the reason, and the step applies
``reward.judge.on_failure``:

- ``retry_later``: failed completions are judged once more at the end of the step; a group with a
  completion that still fails is dropped from the update;
- ``rule_fallback``: the rule judge scores the answer instead (marked ``fallback``);
- ``drop_group``: the completion's whole group is dropped from the update.

``reward.actor_class`` swaps the actor for a user's class (``package.module:Class``) with the same
``score`` coroutine; ``RewardActor`` is the default and a convenient base class.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from grit_ray.config import GritConfig, JudgeFailurePolicy, RewardConfig
from grit_ray.grit.rewards import RewardSet, import_by_path
from grit_ray.judge import make_judge
from grit_ray.judge.llm import missing_key_error, needs_key
from grit_ray.judge.protocol import JudgeRequest, JudgeResult, JudgeStatus
from grit_ray.judge.scoring import CompletionScorer, RewardItem, ScoredCompletion
from grit_ray.judge.secrets import Secret, key_from_env
from grit_ray.judge.usage import JudgeUsage, judge_report
from grit_ray.workers.faults import FaultLog, Incarnations, wait_until_alive


class RewardActor:
    """Default reward actor (a Ray async actor: ``score`` calls overlap inside one actor)."""

    def __init__(self, reward: RewardConfig, counting_datasets: list[str], api_key: Secret | None = None):
        self.cfg = reward
        self.reward_set = RewardSet.build(reward.preset, reward.weights, reward.extra_components)
        self.judge = make_judge(reward.judge, api_key)
        self.scorer = CompletionScorer(self.reward_set, self.judge, counting_datasets, reward.judge.on_failure,
                                       judge_call=self._judge, fallback_match=reward.judge.rule_match)
        # judge results by request, least recently used first; bounded (reward.judge.cache_entries)
        self._cache: OrderedDict[str, asyncio.Future] = OrderedDict()
        self.stats: Counter = Counter()

    def _key(self, req: JudgeRequest) -> str:
        h = hashlib.sha256()
        for part in (req.question, req.reference, req.prediction):
            h.update(part.encode())
            h.update(b"\0")
        if req.image is not None and self.cfg.judge.send_image:
            h.update(hashlib.sha256(req.image).digest())
        return h.hexdigest()

    async def _judge(self, req: JudgeRequest) -> tuple[JudgeResult, bool]:
        """One call per distinct request: concurrent duplicates await the same future; failures
        are not cached, so a later retry really calls again."""
        key = self._key(req)
        if key in self._cache:
            self.stats["cache_hits"] += 1
            self._cache.move_to_end(key)
            return await asyncio.shield(self._cache[key]), True
        fut = asyncio.get_running_loop().create_future()
        self._cache[key] = fut
        while len(self._cache) > self.cfg.judge.cache_entries:  # an evicted call in flight still answers its waiters
            self._cache.popitem(last=False)
            self.stats["cache_evictions"] += 1
        self.stats["judge_calls"] += 1
        try:
            result = await self.judge.judge(req)
        except asyncio.CancelledError:  # waiters are cancelled with the call, and nothing is cached
            self._cache.pop(key, None)
            fut.cancel()
            raise
        except Exception as e:  # a judge bug fails this call, not the actor; waiters get the failure
            result = JudgeResult(JudgeStatus.FAILED, error=f"{type(e).__name__}: {e}")
        fut.set_result(result)
        if result.status is not JudgeStatus.OK:
            self._cache.pop(key, None)
        return result, False

    async def score(self, item: RewardItem) -> ScoredCompletion:
        return await self.scorer.score(item)

    def usage(self) -> dict[str, Any] | None:
        """The LLM judge's usage (judge/usage.py) as JSON; None for a judge that makes no calls."""
        usage = getattr(self.judge, "usage", None)
        return usage.to_json() if usage is not None else None

    def counters(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.stats.items()}
        limiter = getattr(self.judge, "limiter", None)
        if limiter is not None:
            out["rate_limit_wait_s"] = limiter.waited_s
        return out


def import_object(path: str):
    """``package.module:ClassName`` -> the reward actor class, with an error that says what was wrong."""
    return import_by_path(path, "reward.actor_class", "package.module:ClassName")


@dataclass
class StepRewards:
    """The settled rewards of one step."""

    scored: dict[tuple[int, int], ScoredCompletion]  # (group_id, index) -> result, final
    dropped_groups: set[int]
    metrics: dict[str, float]

    def reward(self, group_id: int, index: int) -> float | None:
        return None if group_id in self.dropped_groups else self.scored[(group_id, index)].reward


class RewardPool:
    """Driver-side handle on N reward actors. ``submit`` returns at once (an ObjectRef), so the
    driver can hand each completion over the moment a rollout worker streams it; ``collect``
    waits for the scores. An actor that dies is restarted by Ray (``fault_tolerance.actor_restarts``)
    and the items it held are scored again (docs/cluster.md)."""

    def __init__(self, cfg: GritConfig, actor_options: dict[str, Any] | None = None):
        import ray

        judge = cfg.reward.judge
        key = key_from_env(judge) if judge.kind.is_llm else None
        if key is None and needs_key(judge):
            raise missing_key_error(judge)
        cls = RewardActor if cfg.reward.actor_class is None else import_object(cfg.reward.actor_class)
        ft = cfg.fault_tolerance
        options = {"num_cpus": cfg.resources.cpus_per_actor, "max_concurrency": max(1000, 4 * judge.concurrency),
                   "max_restarts": ft.actor_restarts, "max_task_retries": 0,  # collect() re-submits
                   "resources": dict(cfg.resources.reward_resources)}
        options.update(actor_options or {})
        actor_cls = ray.remote(cls).options(**options)
        # the key travels in the actor-creation call, never through env vars, configs or logs
        self.actors = [actor_cls.remote(cfg.reward, list(cfg.data.counting_datasets), key)
                       for _ in range(cfg.reward.num_actors)]
        self.names = [f"reward actor {i}" for i in range(len(self.actors))]  # how errors name each actor
        self.policy = judge.on_failure
        self.judge_cfg = judge
        self._reports_usage = hasattr(cls, "usage")  # a custom actor class may not count its judge's calls
        self.restart_timeout_s = ft.restart_timeout_s
        self.faults = FaultLog()
        self.incarnations = Incarnations(self.actors)
        self._next = 0
        self._owner: dict[Any, int] = {}  # ObjectRef -> the actor scoring it, until collected

    def submit(self, item: RewardItem):
        i = self._next % len(self.actors)
        self._next += 1
        ref = self.actors[i].score.remote(item)
        self._owner[ref] = i
        return ref

    def collect(self, items: list[RewardItem], refs: list) -> list[ScoredCompletion]:
        """The scores of ``submit``-ted items, in order. An item whose actor died is submitted
        again once Ray has restarted that actor."""
        import ray
        from ray.exceptions import RayActorError

        out, dead = [], set()
        first_failure = last_rescored = 0.0
        for item, ref in zip(items, refs):
            while True:
                try:
                    out.append(ray.get(ref))
                    break
                except RayActorError:
                    i = self._owner.pop(ref)
                    first_failure = first_failure or time.perf_counter()
                    if i not in dead:
                        dead.add(i)
                        print(f"[grit-ray] {self.names[i]} died; scoring its items again once it is back",
                              flush=True)
                    wait_until_alive(self.actors[i], self.names[i], self.restart_timeout_s)
                    ref = self.actors[i].score.remote(item)
                    self._owner[ref] = i
            self._owner.pop(ref, None)
            last_rescored = time.perf_counter() if dead else 0.0
        # restarts are counted from the actors' processes: one that died while idle is back
        # without any of its items failing
        restarted = len(self.incarnations.restarted())
        if dead or restarted:  # lost: from noticing the death to the end of this collection
            self.faults.record("reward", last_rescored - first_failure if dead else 0.0, restarts=restarted)
        return out

    def score(self, items: list[RewardItem]) -> list[ScoredCompletion]:
        return self.collect(items, [self.submit(i) for i in items])

    def settle(self, items: list[RewardItem], scored: list[ScoredCompletion]) -> StepRewards:
        """Apply the failure policy to a step's results; count every outcome."""
        by_key = {(s.group_id, s.index): s for s in scored}
        metrics: Counter = Counter()
        for s in scored:
            metrics[f"judge_{s.judge_status.value}"] += 1
            metrics["judge_cache_hits"] += int(s.cached)
            if s.reward is None:
                metrics[f"judge_failed/{s.failure_reason}"] += 1
        failed = [i for i in items if by_key[(i.group_id, i.index)].reward is None]
        if failed and self.policy is JudgeFailurePolicy.RETRY_LATER:
            metrics["judge_retried"] += len(failed)
            for s in self.score(failed):
                by_key[(s.group_id, s.index)] = s
                metrics["judge_recovered"] += int(s.reward is not None)
        dropped = {g for (g, _), s in by_key.items() if s.reward is None}
        metrics["groups_dropped_judge"] = len(dropped)
        return StepRewards(by_key, dropped, {k: float(v) for k, v in metrics.items()})

    def counters(self) -> dict[str, float]:
        import ray

        total: Counter = Counter()
        for c in ray.get([a.counters.remote() for a in self.actors]):
            total.update(c)
        return dict(total)

    def judge_report(self) -> dict[str, Any]:
        """Every actor's judge usage in one report (``judge_report.json`` of a run or an evaluation)."""
        import ray

        usages = ray.get([a.usage.remote() for a in self.actors]) if self._reports_usage else []
        used = [JudgeUsage.from_json(u) for u in usages if u is not None]
        merged = functools.reduce(JudgeUsage.merge, used) if used else None
        return judge_report(self.judge_cfg, merged, int(self.counters().get("cache_hits", 0)))

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
