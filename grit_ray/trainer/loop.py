"""The driver (single controller): builds the actors from the config and runs the training loop.

One step (``TrainingStep``): next prompts -> rollout, streamed -> rewards, each completion scored
as soon as it arrives -> group advantages -> learner update -> weight sync; every phase timed.
The loop (``train``) adds evaluation, checkpoints, resume and the metrics log. The driver owns no
math and no model: it wires ``RolloutPool``, ``RewardPool``, ``LearnerGroup`` and ``WeightSync``.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grit_ray.config import GritConfig, load_config, save_resolved_config
from grit_ray.data.rows import PromptSampler, Row, RowRules, RowStream, materialise_sources
from grit_ray.algo.grpo import refill_draw_size
from grit_ray.algo.experience import TrainSample, assign_advantages
from grit_ray.grit.grounding import FrameSpec
from grit_ray.grit.metrics import completion_giou, mean_or_none
from grit_ray.workers.reward import RewardItem, RewardPool, ScoredCompletion, StepRewards
from grit_ray.workers.rollout import PromptRequest, RolloutPool, SampledCompletion

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "final_model"
DRIVER_STATE = "driver.json"  # written last: a checkpoint without it is incomplete and ignored


def reward_item(sample: SampledCompletion, row: Row, cfg: GritConfig) -> RewardItem:
    image = None
    if cfg.reward.judge.send_image:
        image = row.image if isinstance(row.image, bytes) else Path(row.image).read_bytes()
    c = sample.completion
    return RewardItem(sample.group_id, sample.index, row.question, row.answer, row.dataset, c.text,
                      list(c.token_ids), image, cfg.prompt.template)


def train_sample(sample: SampledCompletion, row: Row) -> TrainSample:
    c = sample.completion
    return TrainSample(sample.prompt, row.image, list(c.token_ids), 0.0, c.logprobs, sample.group_id, 1.0, row.where)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def reward_metrics(scored: list[ScoredCompletion], prefix: str = "") -> dict[str, float]:
    """reward/mean, reward/std, reward/<component> means, accuracy (answer_accuracy mean)."""
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
        out[f"{prefix}accuracy"] = statistics.fmean(parts["answer_accuracy"])
    return out


_LEARNER_KEYS = {"loss": "train/loss", "kl_mean": "train/kl", "entropy_mean": "train/entropy",
                 "grad_norm": "train/grad_norm", "lr": "train/lr", "clip_fraction": "train/clip_fraction",
                 "is_weight_mean": "train/is_weight_mean", "is_weight_max": "train/is_weight_max",
                 "logp_gap_mean": "train/logp_gap", "logp_abs_gap_mean": "train/logp_abs_gap",
                 "tokens": "train/tokens", "micro_batches": "train/micro_batches"}


@dataclass
class _Round:
    """Completions of one generation round of a step, scored and settled."""

    samples: dict[tuple[int, int], SampledCompletion]
    settled: StepRewards
    generation_s: float
    reward_tail_s: float


class TrainingStep:
    """One optimizer step. With ``algorithm.refill_zero_signal_groups`` it keeps drawing prompts
    (``draw_more``) until ``prompts_per_step`` groups carry signal or the draw limit is reached."""

    def __init__(self, cfg: GritConfig, rollout: RolloutPool, rewards: RewardPool, learners, sync):
        self.cfg, self.rollout, self.rewards, self.learners, self.sync = cfg, rollout, rewards, learners, sync

    def _round(self, rows: dict[int, Row], step: int | None) -> _Round:
        """Generate the groups of ``rows`` (group id -> row) and score each completion as it arrives."""
        import ray

        cfg = self.cfg
        started = time.perf_counter()
        # per-group sampling seeds: the same step samples the same completions, resumed or not
        requests = [PromptRequest(row, g, cfg.algorithm.group_size,
                                  seed=(cfg.rollout.seed * 1_000_003 + (step or 0)) * 10_007
                                  + g * cfg.algorithm.group_size)
                    for g, row in rows.items()]
        samples: dict[tuple[int, int], SampledCompletion] = {}
        items: list[RewardItem] = []
        refs = []
        for s in self.rollout.stream(requests):  # completions in the order they finish
            item = reward_item(s, rows[s.group_id], cfg)
            refs.append(self.rewards.submit(item))  # scoring starts now, while others still generate
            items.append(item)
            samples[(s.group_id, s.index)] = s
        generation_s = time.perf_counter() - started
        scored = ray.get(refs)
        reward_tail_s = time.perf_counter() - started - generation_s
        return _Round(samples, self.rewards.settle(items, scored), generation_s, reward_tail_s)

    def __call__(self, rows: list[Row], step: int | None = None,
                 draw_more: Callable[[int], list[Row]] | None = None) -> dict[str, Any]:
        cfg, algo = self.cfg, self.cfg.algorithm
        started = time.perf_counter()
        refill = algo.refill_zero_signal_groups and draw_more is not None
        by_gid = dict(enumerate(rows))
        pending = dict(by_gid)
        rounds: list[_Round] = []
        informative: list[int] = []  # group ids with signal, in draw order
        while pending:
            r = self._round(pending, step)
            rounds.append(r)
            for g in pending:
                if g not in r.settled.dropped_groups and _has_signal(r, g, algo.group_size):
                    informative.append(g)
            needed = algo.prompts_per_step - len(informative)
            more = refill_draw_size(needed, len(by_gid), len(informative), algo.prompt_draw_limit) if refill else 0
            new_rows = draw_more(more) if more else []
            pending = {len(by_gid) + i: row for i, row in enumerate(new_rows)}
            by_gid.update(pending)

        samples = {k: v for r in rounds for k, v in r.samples.items()}
        scored = {k: v for r in rounds for k, v in r.settled.scored.items()}
        dropped = set().union(*(r.settled.dropped_groups for r in rounds))
        lengths = [len(s.completion.token_ids) for s in samples.values()]
        m: dict[str, Any] = {"time/generation": sum(r.generation_s for r in rounds),
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

        if refill:  # keep the first prompts_per_step informative groups; the rest are surplus
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
        t = time.perf_counter()
        if batch:
            learner = self.learners.train_step(batch)
            m.update({name: learner[k] for k, name in _LEARNER_KEYS.items() if k in learner})
            m["time/learner"] = time.perf_counter() - t
            synced = self.sync.sync(version=step)
            m.update({"time/sync": synced["sync_s"], "sync/gb_per_s": synced["sync_gb_per_s"],
                      "sync/weights_version": synced["weights_version"]})
        else:  # every group dropped (or flat and dropped): no update, no sync, and the metrics say so
            m["train/skipped_update"] = 1.0
        m["time/step"] = time.perf_counter() - started
        return m


def _has_signal(r: _Round, group_id: int, group_size: int) -> bool:
    """A group whose known rewards differ (a one-member group has no baseline, hence no signal)."""
    rewards = {r.settled.scored[(group_id, i)].reward for i in range(group_size) if (group_id, i) in r.settled.scored}
    rewards.discard(None)
    return len(rewards) > 1


def greedy_scored(cfg: GritConfig, rollout: RolloutPool, rewards: RewardPool,
                  rows: list[Row]) -> tuple[list[SampledCompletion], list[ScoredCompletion]]:
    """One greedy completion per row and its score, both in row order (not arrival order), so the
    result does not depend on how many workers ran or how requests were batched."""
    requests = [PromptRequest(row, g, 1) for g, row in enumerate(rows)]
    done = {s.group_id: s for s in rollout.stream(requests, greedy=True)}
    samples = [done[g] for g in range(len(rows))]
    scored = rewards.score([reward_item(s, rows[g], cfg) for g, s in enumerate(samples)])
    return samples, scored


def evaluate(cfg: GritConfig, rollout: RolloutPool, rewards: RewardPool, rows: list[Row]) -> dict[str, float]:
    """Greedy decoding on held-out rows, scored by the reward actors: eval/accuracy, eval/giou and
    eval/reward/... over all rows, and eval/<dataset>/accuracy and /giou per dataset."""
    started = time.perf_counter()
    samples, scored = greedy_scored(cfg, rollout, rewards, rows)
    out = reward_metrics(scored, prefix="eval/")
    frame = FrameSpec(cfg.reward.coord_frame, cfg.model.min_pixels, cfg.model.max_pixels)
    giou = [completion_giou(s.completion.text, row.bboxs, row.width, row.height, frame) if row.bboxs else None
            for s, row in zip(samples, rows)]
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_dataset[row.dataset].append(i)
    for prefix, idx in [("eval/", range(len(rows))), *((f"eval/{d}/", ix) for d, ix in sorted(by_dataset.items()))]:
        acc = [scored[i].components.get("answer_accuracy") for i in idx]
        if (v := mean_or_none(acc)) is not None:
            out[f"{prefix}accuracy"] = v
        if (v := mean_or_none(giou[i] for i in idx)) is not None:
            out[f"{prefix}giou"] = v
    out["eval/judge_failed"] = float(sum(s.reward is None for s in scored))
    out["eval/rows"] = float(len(rows))
    out["time/eval"] = time.perf_counter() - started
    return out


# ---------------------------------------------------------------------------------------------
# checkpoints


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories whose driver state was written (the last file of a save), oldest first."""
    return sorted(p.parent for p in (run_dir / CHECKPOINTS).glob(f"step-*/{DRIVER_STATE}"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def save_checkpoint(run_dir: Path, step: int, learners, sampler: PromptSampler, keep_last: int) -> Path:
    ckpt = run_dir / CHECKPOINTS / f"step-{step:06d}"
    learners.save_checkpoint(ckpt)
    state = {"step": step, "sampler": sampler.state(), "python_random": random.getstate()}
    (ckpt / DRIVER_STATE).write_text(json.dumps(state))
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


def _restore_random(state) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------------------------------------
# the loop


def _say(msg: str) -> None:
    print(f"[grit-ray] {msg}", flush=True)


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


def placement(cfg: GritConfig) -> tuple[list[dict], list[dict], Any]:
    """Per-actor scheduling options: learners and rollout workers in one placement group, one
    bundle per actor, or (``resources.colocate``) rollout worker i in learner i's bundle."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    r = cfg.resources
    n_learn, n_roll = cfg.learner.num_actors, cfg.rollout.num_workers
    if r.colocate:
        if n_roll > n_learn:
            raise ValueError(f"resources.colocate: {n_roll} rollout workers but only {n_learn} learner bundles")
        bundles = [{"CPU": 2 * r.cpus_per_actor, "GPU": r.gpus_per_learner + r.gpus_per_rollout_worker}
                   for _ in range(n_learn)]
        roll_idx = list(range(n_roll))
    else:
        bundles = [{"CPU": r.cpus_per_actor, "GPU": r.gpus_per_learner} for _ in range(n_learn)]
        bundles += [{"CPU": r.cpus_per_actor, "GPU": r.gpus_per_rollout_worker} for _ in range(n_roll)]
        roll_idx = list(range(n_learn, n_learn + n_roll))
    bundles = [{k: v for k, v in b.items() if v} for b in bundles]
    pg = placement_group(bundles, strategy=r.placement_strategy)
    ray.get(pg.ready())

    def opts(i: int) -> dict:
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)}

    return [opts(i) for i in range(n_learn)], [opts(i) for i in roll_idx], pg


def train(cfg: GritConfig, run_dir: Path, resume: bool = False, stop_after: int | None = None) -> Path | None:
    """Run (or resume) a training run in ``run_dir``; returns the final model's directory.
    ``stop_after`` ends the run early at that step, with a checkpoint, as if it had been stopped
    there (a run split into several jobs); ``resume`` continues it with the same schedule."""
    import ray

    from grit_ray.workers.learner_group import LearnerGroup
    from grit_ray.models.tiny import ensure_model
    from grit_ray.trainer.tracking import MetricsLogger
    from grit_ray.workers.weight_sync import WeightSync

    t0 = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        _say(f"no complete checkpoint in {run_dir / CHECKPOINTS}: starting from step 0")
    save_resolved_config(cfg, run_dir)
    train_sources, eval_sources = materialise_sources(cfg.data, run_dir)
    stream = RowStream(train_sources, RowRules.from_config(cfg.data), cfg.data.bad_rows)
    sampler = PromptSampler(stream, cfg.data.shuffle, cfg.data.seed, cfg.data.shuffle_buffer)
    eval_rows: list[Row] = []
    if cfg.eval.every_n_steps and eval_sources:
        eval_stream = RowStream(eval_sources, RowRules.from_config(cfg.data), cfg.data.bad_rows)
        eval_rows = [r for _, r in zip(range(cfg.eval.max_rows or 10**9), eval_stream)]
    model_path = ensure_model(cfg.model.path, cfg.model.tiny, log=_say)
    random.seed(cfg.run.seed)

    ray.init(address=cfg.resources.ray_address, include_dashboard=False, namespace="grit-ray",
             log_to_driver=False, ignore_reinit_error=True)
    try:
        learner_opts, rollout_opts, _pg = placement(cfg)
        rollout = RolloutPool(cfg, model_path, per_actor_options=rollout_opts)
        learners = LearnerGroup(cfg, model_path, per_actor_options=learner_opts)
        rewards = RewardPool(cfg)
        sync = WeightSync(cfg, learners, rollout)
        _say(f"actors up in {time.perf_counter() - t0:.0f}s: {cfg.rollout.num_workers} rollout "
             f"({cfg.rollout.backend.value}), {cfg.learner.num_actors} learner (ZeRO-{int(cfg.learner.zero_stage)}), "
             f"{cfg.reward.num_actors} reward ({cfg.reward.judge.kind.value} judge)")
        start = 0
        if ckpt is not None:
            state = json.loads((ckpt / DRIVER_STATE).read_text())
            learners.load_checkpoint(ckpt)
            sampler.restore(state["sampler"])
            _restore_random(state["python_random"])
            start = int(state["step"])
            sync.sync(version=start)  # the engines restarted with the initial weights: send the checkpoint's
            _say(f"resumed from {ckpt} at step {start} (epoch {sampler.epoch}, row {sampler.taken})")
        logger = MetricsLogger(run_dir, cfg.run.steps, cfg.logging.tensorboard, cfg.logging.progress,
                               cfg.logging.wandb_project, cfg.run.name, cfg.model_dump(mode="json"), start)
        step_fn = TrainingStep(cfg, rollout, rewards, learners, sync)
        if eval_rows and start == 0:  # the base model's numbers: the curve starts where training does
            base = {"step": 0, **evaluate(cfg, rollout, rewards, eval_rows)}
            logger.log(base)
            _say(eval_line(base))
        for step in range(start + 1, cfg.run.steps + 1):
            rows = sampler.next_batch(cfg.algorithm.prompts_per_step)
            m = {"step": step, "epoch": sampler.epoch, **step_fn(rows, step, draw_more=sampler.next_batch)}
            m["driver/rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            evaluated = eval_rows and (step % cfg.eval.every_n_steps == 0 or step == cfg.run.steps)
            if evaluated:
                m.update(evaluate(cfg, rollout, rewards, eval_rows))
            logger.log(m)
            if evaluated:
                _say(eval_line(m))
            stopping = stop_after is not None and step >= stop_after
            if step % cfg.checkpoint.every_n_steps == 0 or step == cfg.run.steps or stopping:
                save_checkpoint(run_dir, step, learners, sampler, cfg.checkpoint.keep_last)
            if stopping and step < cfg.run.steps:
                logger.close()
                _say(f"stopped after step {step} of {cfg.run.steps}; continue with --resume {run_dir}")
                return None
        logger.close()
        final = run_dir / FINAL_MODEL
        if cfg.checkpoint.save_final:
            learners.save_hf_model(final)
            _say(f"final model: {final} (transformers and vLLM load it)")
        if stream.skipped:
            _say(stream.skipped_report())
        _say(f"done in {time.perf_counter() - t0:.0f}s; metrics in {run_dir / 'metrics.jsonl'}")
        return final
    finally:
        ray.shutdown()


def resolve_run(config: str | None, overrides: list[str], steps: int | None, run_dir: str | None,
                resume: str | None) -> tuple[GritConfig, Path]:
    """The CLI's rules: --resume DIR reuses that run's saved config (overrides still apply)."""
    extra = list(overrides) + ([f"run.steps={steps}"] if steps is not None else [])
    if resume:
        saved = Path(resume) / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"--resume {resume}: no config.yaml there (not a grit-ray run directory)")
        cfg = load_config(config or saved, extra)
        return cfg, Path(resume)
    cfg = load_config(config, extra)
    return cfg, Path(run_dir) if run_dir else cfg.run_dir()


