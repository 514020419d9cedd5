"""One training step (``TrainingStep``): next prompts -> rollout, streamed -> rewards, each
completion scored as soon as it arrives -> group advantages -> learner update -> weight sync; every
phase timed. Optionally it keeps drawing prompts until enough groups carry signal (refill).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from grit_ray.algo.experience import TrainSample, assign_advantages
from grit_ray.algo.grpo import refill_draw_size, zero_signal_groups
from grit_ray.algo.seeds import group_seeds
from grit_ray.config import GritConfig
from grit_ray.data.rows import Row
from grit_ray.judge.scoring import RewardItem, ScoredCompletion
from grit_ray.workers.colocation import MemoryHandoff
from grit_ray.workers.reward import RewardPool, StepRewards
from grit_ray.workers.rollout import PromptRequest, RolloutPool, SampledCompletion

if TYPE_CHECKING:
    from grit_ray.workers.learner_group import StartedStep


class StaleWeightsError(RuntimeError):
    """A completion of a synchronous step came from weights older than the learner's."""


def check_weights_version(sample: SampledCompletion, expected: int) -> None:
    """Every completion of a synchronous step must come from the weights of the last sync: a lost
    or failed sync would otherwise train silently on another policy's samples."""
    if sample.weights_version != expected:
        raise StaleWeightsError(f"rollout worker {sample.worker} generated with weights version "
                                f"{sample.weights_version}, but the learner's last sync was version {expected}")


def reward_item(sample: SampledCompletion, row: Row, cfg: GritConfig) -> RewardItem:
    image = None
    if cfg.reward.judge.send_image:
        image = row.image if isinstance(row.image, bytes) else Path(row.image).read_bytes()
    c = sample.completion
    return RewardItem.for_row(sample.group_id, sample.index, row, c.text, c.token_ids, image, cfg.prompt.template)


def train_sample(sample: SampledCompletion, row: Row) -> TrainSample:
    c = sample.completion
    return TrainSample(prompt=sample.prompt, image=row.image, completion_ids=list(c.token_ids), advantage=0.0,
                       rollout_logprobs=c.logprobs, group_id=sample.group_id, where=row.where,
                       prompt_tokens=c.prompt_tokens)


def reward_metrics(scored: list[ScoredCompletion], prefix: str = "") -> dict[str, float]:
    """reward/mean, reward/std, reward/<component> means, answer_right (the share of completions whose
    answer the judge scored above 0: the binarised accuracy reward, not ACC)."""
    out: dict[str, float] = {}
    rewards = [s.reward for s in scored if s.reward is not None]
    if rewards:
        out[f"{prefix}reward/mean"] = statistics.fmean(rewards)
        out[f"{prefix}reward/std"] = statistics.pstdev(rewards)
    parts: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        for k, v in s.components.items():
            if v is not None:
                parts[k].append(v)
    for k, vs in parts.items():
        out[f"{prefix}reward/{k}"] = statistics.fmean(vs)
    if "answer_accuracy" in parts:
        out[f"{prefix}answer_right"] = statistics.fmean(parts["answer_accuracy"])
    return out


@dataclass
class _Round:
    """Completions of one generation round of a step, scored and settled."""

    rows: dict[int, Row]  # group id -> row
    samples: dict[tuple[int, int], SampledCompletion]
    settled: StepRewards
    generation_s: float
    reward_tail_s: float


@dataclass
class _Generated:
    """A generation round whose scores are still in flight in the reward actors."""

    rows: dict[int, Row]
    samples: dict[tuple[int, int], SampledCompletion]
    items: list[RewardItem]
    refs: list  # the reward actors' answers, one per item
    generation_s: float


@dataclass
class Collection:
    """A step's completions from ``start_collect``: its rounds, and the last round's scores possibly
    still in flight (``finish_collect`` waits for them)."""

    step: int
    rows: dict[int, Row]  # every group drawn, group id -> row
    rounds: list[_Round]
    unscored: _Generated | None
    refilled: bool  # drawn with refill: keep the first prompts_per_step informative groups
    metrics: dict[str, Any]  # extras the caller adds (the epoch)


@dataclass
class Experience:
    """One step's completions, scored and with their advantages, ready for the learners."""

    step: int
    samples: list[TrainSample]
    versions: list[int]  # the weights version each sample was generated with
    metrics: dict[str, Any]  # generation, rewards, sampling, groups


@dataclass
class PendingUpdate:
    """A learner step in flight (``refs`` None: nothing to train, every group was dropped)."""

    experience: Experience
    refs: StartedStep | None
    started: float


class TrainingStep:
    """One optimizer step, in halves that one-step-off training runs apart: ``start_collect`` /
    ``finish_collect`` (generate, then wait for the scores and set the advantages) and
    ``start_update`` / ``finish_update`` (learner step, then weight sync). With
    ``algorithm.refill_zero_signal_groups`` collecting keeps drawing prompts (``draw_more``) until
    ``prompts_per_step`` groups carry signal or the draw limit is reached."""

    def __init__(self, cfg: GritConfig, rollout: RolloutPool, rewards: RewardPool, learners, sync,
                 handoff: MemoryHandoff | None = None):
        self.cfg, self.rollout, self.rewards, self.learners, self.sync = cfg, rollout, rewards, learners, sync
        self.handoff = handoff or MemoryHandoff(cfg.colocation(), rollout, learners)

    def _generate(self, rows: dict[int, Row], step: int) -> _Generated:
        """Generate the groups of ``rows`` (group id -> row), handing each completion to a reward
        actor the moment it arrives."""
        cfg = self.cfg
        started = time.perf_counter()
        # per-completion sampling seeds: the same step samples the same completions, resumed,
        # replayed or re-issued after a worker died
        n = cfg.algorithm.group_size
        requests = [PromptRequest(row=row, group_id=g, n=n, seeds=group_seeds(cfg.rollout.seed, step, g, n))
                    for g, row in rows.items()]
        samples: dict[tuple[int, int], SampledCompletion] = {}
        items: list[RewardItem] = []
        refs = []
        for s in self.rollout.stream(requests):  # completions in the order they finish
            check_weights_version(s, self.sync.version)
            item = reward_item(s, rows[s.group_id], cfg)
            refs.append(self.rewards.submit(item))  # scoring starts now, while others still generate
            items.append(item)
            samples[(s.group_id, s.index)] = s
        return _Generated(rows, samples, items, refs, time.perf_counter() - started)

    def _score(self, g: _Generated) -> _Round:
        """Wait for a round's scores (items of a reward actor that died are scored again) and settle
        them; the reward tail is the time spent waiting here."""
        started = time.perf_counter()
        scored = self.rewards.collect(g.items, g.refs)
        settled = self.rewards.settle(g.items, scored)
        return _Round(g.rows, g.samples, settled, g.generation_s, time.perf_counter() - started)

    def _informative(self, r: _Round) -> list[int]:
        """The round's groups whose known rewards differ (a judge failure's None is not known; a group
        with one known reward has no baseline, hence no signal)."""
        known = [(g, item.reward) for g in r.rows if g not in r.settled.dropped_groups
                 for i in range(self.cfg.algorithm.group_size)
                 if (item := r.settled.scored.get((g, i))) is not None and item.reward is not None]
        if not known:
            return []
        zero = zero_signal_groups(torch.tensor([w for _, w in known], dtype=torch.float64),
                                  torch.tensor([g for g, _ in known]))
        with_signal = {g for (g, _), z in zip(known, zero.tolist()) if not z}
        return [g for g in r.rows if g in with_signal]

    def start_collect(self, rows: list[Row], step: int,
                      draw_more: Callable[[int], list[Row]] | None = None) -> Collection:
        """Generate the step's groups with the engines' current weights. With refill each round is
        scored before the next draw (the draw depends on it); otherwise the scores are left in
        flight, and the reward actors finish them while the caller goes on."""
        algo = self.cfg.algorithm
        refill = algo.refill_zero_signal_groups and draw_more is not None
        by_gid = dict(enumerate(rows))
        pending = dict(by_gid)
        rounds: list[_Round] = []
        informative: list[int] = []  # group ids with signal, in draw order
        while pending:
            generated = self._generate(pending, step)
            if not refill:
                return Collection(step, by_gid, rounds, generated, refilled=False, metrics={})
            rounds.append(self._score(generated))
            informative += self._informative(rounds[-1])
            needed = algo.prompts_per_step - len(informative)
            more = refill_draw_size(needed, len(by_gid), len(informative), algo.prompt_draw_limit)
            new_rows = draw_more(more) if more else []
            pending = {len(by_gid) + i: row for i, row in enumerate(new_rows)}
            by_gid.update(pending)
        return Collection(step, by_gid, rounds, None, refilled=True, metrics={})

    def finish_collect(self, c: Collection) -> Experience:
        """Wait for the scores still in flight and set the advantages: everything of step ``c.step``
        but the update."""
        algo = self.cfg.algorithm
        rounds = c.rounds + ([self._score(c.unscored)] if c.unscored is not None else [])
        by_gid = c.rows
        informative = [g for r in rounds for g in self._informative(r)]
        samples = {k: v for r in rounds for k, v in r.samples.items()}
        scored = {k: v for r in rounds for k, v in r.settled.scored.items()}
        dropped = set().union(*(r.settled.dropped_groups for r in rounds))
        lengths = [len(s.completion.token_ids) for s in samples.values()]
        m: dict[str, Any] = {**c.metrics, "time/generation": sum(r.generation_s for r in rounds),
                             "time/reward_tail": sum(r.reward_tail_s for r in rounds),
                             "completion/len_mean": statistics.fmean(lengths), "completion/len_max": max(lengths),
                             "completion/truncated": sum(s.completion.finish_reason == "length"
                                                         for s in samples.values()) / len(lengths)}
        m["throughput/tokens_per_s"] = sum(lengths) / max(m["time/generation"], 1e-9)
        m.update(reward_metrics(list(scored.values())))
        judge: Counter = Counter()
        for r in rounds:
            judge.update(r.settled.metrics)
        m.update({f"judge/{k.removeprefix('judge_')}": float(v) for k, v in judge.items()})

        if c.refilled:  # keep the first prompts_per_step informative groups; the rest are surplus
            kept_groups = set(informative[:algo.prompts_per_step])
            m.update({"sampling/prompts_drawn": float(len(by_gid)), "sampling/rounds": float(len(rounds)),
                      "sampling/informative_groups": float(len(informative)),
                      "sampling/surplus_groups": float(max(0, len(informative) - algo.prompts_per_step))})
        else:
            kept_groups = set(by_gid) - dropped
        keys = [k for k in sorted(samples) if k[0] in kept_groups]
        batch, adv = assign_advantages([train_sample(samples[k], by_gid[k[0]]) for k in keys],
                                       [scored[k].reward for k in keys], algo)
        # zero_signal: flat groups among all generated ones; zero_signal_trained: those in the update
        m.update({"groups/total": adv["groups"],
                  "groups/zero_signal": float(sum(1 for g in by_gid if g not in dropped and g not in informative)),
                  "groups/zero_signal_trained": adv["zero_signal_groups"] - adv["dropped_groups"],
                  "groups/dropped_samples": adv["dropped_samples"]})
        trained_groups = {s.group_id for s in batch}  # assign_advantages drops whole groups
        versions = [samples[k].weights_version for k in keys if k[0] in trained_groups]
        return Experience(step=c.step, samples=batch, versions=versions, metrics=m)

    def start_update(self, exp: Experience) -> PendingUpdate:
        """Check the staleness bound and start the learners on ``exp`` (returns at once)."""
        # the weights the learners hold: every update is followed by a sync labelled with its step
        # (a step whose groups were all dropped makes neither, so this may lag behind step - 1)
        learner_version = self.sync.version
        staleness = check_staleness(exp.versions, learner_version, self.cfg.algorithm.max_staleness)
        if staleness:
            exp.metrics.update({"staleness/mean": statistics.fmean(staleness), "staleness/max": float(max(staleness))})
        refs = None
        if exp.samples:  # colocated: the engines free the GPUs, the learners take them (no update: nothing moves)
            exp.metrics.update(self.handoff.to_learners())
            refs = self.learners.start_train_step(exp.samples)
        return PendingUpdate(exp, refs, time.perf_counter())

    def finish_update(self, pending: PendingUpdate) -> dict[str, Any]:
        """Wait for the learners, then send the new weights to the engines (version = the step)."""
        m = dict(pending.experience.metrics)
        if pending.refs is None:  # every group dropped (or flat and dropped): no update, no sync, and the metrics say so
            m["train/skipped_update"] = 1.0
            return m
        stats = self.learners.finish_train_step(pending.refs)
        m.update(stats.metrics())
        m.update({f"learner/{k}": v for k, v in pending.refs.tokens.items()})
        m["time/learner"] = time.perf_counter() - pending.started
        handed = time.perf_counter()
        m.update(self.handoff.to_sync())
        synced = self.sync.sync(version=pending.experience.step)
        for k, v in self.handoff.to_engines().items():  # the two wakes of a step add up
            m[k] = m.get(k, 0.0) + v
        m["time/handoff"] = time.perf_counter() - handed - synced["sync_s"]
        m.update({"time/sync": synced["sync_s"], "sync/gb_per_s": synced["sync_gb_per_s"],
                  "sync/weights_version": synced["weights_version"]})
        return m

    def run(self, collection: Collection,
            collect_next: Callable[[], Collection] | None = None) -> tuple[dict[str, Any], Collection | None]:
        """The update of ``collection``'s step; returns its metrics and, with ``collect_next``
        (one-step-off), the next step's collection. Then this thread generates the next step (its
        completions stream to the reward actors) while a helper thread waits for this step's last
        scores and starts the update the moment they are all in; the sync follows both."""
        if collect_next is None:
            return self.finish_update(self.start_update(self.finish_collect(collection))), None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grit-update") as starter:
            update = starter.submit(lambda: self.start_update(self.finish_collect(collection)))
            following = collect_next()  # with the weights before this update
            pending = update.result()  # re-raises what the helper thread raised
        waited = time.perf_counter()
        m = self.finish_update(pending)
        m["time/learner_wait"] = time.perf_counter() - waited - m.get("time/sync", 0.0)
        return m, following

    def __call__(self, rows: list[Row], step: int | None = None,
                 draw_more: Callable[[int], list[Row]] | None = None) -> dict[str, Any]:
        """A synchronous step: collect, update, sync."""
        started = time.perf_counter()
        m, _ = self.run(self.start_collect(rows, step if step is not None else self.sync.version + 1, draw_more))
        m["time/step"] = time.perf_counter() - started
        return m


def check_staleness(versions: list[int], learner_version: int, max_staleness: int) -> list[int]:
    """Updates between each sample's weights and the learner's (0: on-policy); a sample beyond
    ``max_staleness`` (or from weights the learner never had) stops the step."""
    staleness = [learner_version - v for v in versions]
    for v, lag in zip(versions, staleness):
        if not 0 <= lag <= max_staleness:
            raise StaleWeightsError(f"a completion generated with weights version {v} would train the learner at "
                                    f"version {learner_version}: {lag} updates apart, algorithm.max_staleness is "
                                    f"{max_staleness}")
    return staleness
