"""The training loop: a ``Trainer`` that builds the actors, restores a checkpoint, steps, evaluates
and saves, each in a short method, and ``train()`` a few lines over it.

The driver owns no math and no model, and decides nothing about a process it does not run (device,
dtype, backend and engine environment are resolved inside the actors). It wires ``RolloutPool``,
``RewardPool``, ``LearnerGroup`` and ``WeightSync`` together and keeps the metrics log.
"""

from __future__ import annotations

import resource
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from grit_ray.config import ConfigError, EngineSleep, GritConfig, load_config, save_resolved_config
from grit_ray.data.rows import PromptSampler, Row, RowRules, RowStream, materialise_sources
from grit_ray.judge.baseline import best_constant_answers, constant_accuracy, constant_line
from grit_ray.judge.usage import write_judge_report
from grit_ray.trainer.checkpoints import CHECKPOINTS, FINAL_MODEL, latest_checkpoint, load_driver_state, save_checkpoint
from grit_ray.trainer.held_out import eval_line, evaluate
from grit_ray.trainer.memory_plan import start_problems
from grit_ray.trainer.placement import placement
from grit_ray.trainer.step import Collection, TrainingStep
from grit_ray.workers.cluster import ray_session
from grit_ray.workers.faults import is_actor_failure, unreachable


def _say(msg: str) -> None:
    print(f"[grit-ray] {msg}", flush=True)


class Trainer:
    """One run in ``run_dir``. ``build`` needs a Ray session; the other methods need ``build``."""

    def __init__(self, cfg: GritConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.started = time.perf_counter()
        run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, run_dir)
        train_sources, eval_sources = materialise_sources(cfg.data, run_dir)
        rules = RowRules.from_config(cfg.data)
        self.stream = RowStream(train_sources, rules, cfg.data.bad_rows)
        self.sampler = PromptSampler(self.stream, cfg.data.shuffle, cfg.data.seed, cfg.data.shuffle_buffer)
        self.eval_rows: list[Row] = []
        if cfg.eval.every_n_steps and eval_sources:
            eval_stream = RowStream(eval_sources, rules, cfg.data.bad_rows)
            self.eval_rows = [r for _, r in zip(range(cfg.eval.max_rows or 10**9), eval_stream)]
        self.step = 0  # the last completed optimizer step
        self.initial_sampler_state = self.sampler.state()
        self.rebuilds = 0
        self.rebuild_metrics: dict[str, float] = {}  # reported with the first step after a rebuild
        self.prefetched: Collection | None = None  # one-step-off: the next step's completions, generated

    def build(self, model_path: str) -> None:
        """Start the actors: rollout workers and learners in one placement group, the reward pool,
        and the weight-sync group between them."""
        from grit_ray.workers.colocation import MemoryHandoff
        from grit_ray.workers.learner_group import LearnerGroup
        from grit_ray.workers.reward import RewardPool
        from grit_ray.workers.rollout import RolloutPool
        from grit_ray.workers.weight_sync import WeightSync

        cfg = self.cfg
        self.model_path = model_path
        started = time.perf_counter()
        learner_opts, rollout_opts, self._placement_group = placement(cfg, log=_say)
        colocation = cfg.colocation()
        # the roles start side by side, except that sleeping engines load, measure the memory they
        # may claim and go to sleep before any learner allocates (docs/cluster.md, "Colocation")
        self.rollout = RolloutPool(cfg, model_path, per_actor_options=rollout_opts, wait=False)
        if colocation.engines_first:
            self.rollout.wait_ready()
            self.rollout.on_all("sleep", EngineSleep.OFFLOAD_WEIGHTS.vllm_level)  # they keep the initial weights
            _say(f"engines up and asleep in {time.perf_counter() - started:.0f}s (rollout.sleep); loading the learners")
        self.learners = LearnerGroup(cfg, model_path, per_actor_options=learner_opts, wait=False)
        self.rewards = RewardPool(cfg)
        self.rollout.wait_ready()
        self.learners.wait_ready()
        handoff = MemoryHandoff(colocation, self.rollout, self.learners)
        handoff.at_start()  # the GPUs to generation: the first thing a step does
        self.sync = WeightSync(cfg, self.learners, self.rollout)
        self.step_fn = TrainingStep(cfg, self.rollout, self.rewards, self.learners, self.sync, handoff)
        _say(f"actors up in {time.perf_counter() - started:.0f}s (engine {self.rollout.startup_s:.0f}s, learner "
             f"{self.learners.startup_s:.0f}s): {cfg.rollout.num_workers} rollout "
             f"({cfg.rollout.backend.value}), {cfg.learner.num_actors} learner (ZeRO-{int(cfg.learner.zero_stage)}), "
             f"{cfg.reward.num_actors} reward ({cfg.reward.judge.kind.value} judge); learner group at "
             f"{self.learners.address}, weight sync via {self.sync.address}")

    def restore(self, ckpt: Path | None) -> None:
        """Continue from a checkpoint (learner state, data position, and the engines get its
        weights), or with ``None`` from the start: the fresh actors already hold the initial weights."""
        self.prefetched = None  # generated by the actors being replaced; the step is generated again
        if ckpt is None:
            self.sampler.restore(self.initial_sampler_state)
            self.step = 0
            return
        state = load_driver_state(ckpt)
        self.learners.load_checkpoint(ckpt)
        self.sampler.restore(state["sampler"])
        self.step = int(state["step"])
        self.sync.sync(version=self.step)  # the engines restarted with the initial weights: send the checkpoint's
        _say(f"resumed from {ckpt} at step {self.step} (epoch {self.sampler.epoch}, row {self.sampler.taken})")

    def shutdown(self) -> None:
        """Kill every actor and release their placement group."""
        from ray.util.placement_group import remove_placement_group

        for pool in (self.rollout, self.rewards, self.learners):
            pool.shutdown()
        remove_placement_group(self._placement_group)

    def lost_learners(self) -> list[str]:
        """Learner ranks that are dead or do not answer. After an error raised by actor code
        (a surviving rank's collective failing when its peer died), tells a lost rank (rebuild)
        from a bug or bad data (stop). Rollout and reward deaths are handled where they happen."""
        return unreachable(self.learners.actors, self.learners.names)

    def recover(self, error: BaseException) -> None:
        """An actor died or hung outside generation and scoring (a learner rank, a sync, a save):
        rebuild every actor from the last complete checkpoint; the steps since are replayed."""
        limit = self.cfg.fault_tolerance.learner_rebuilds
        ckpt = latest_checkpoint(self.run_dir)
        if self.rebuilds >= limit:
            raise RuntimeError(f"{error}\nthe actors were rebuilt {self.rebuilds} time(s) already "
                               f"(fault_tolerance.learner_rebuilds={limit}): stopping. Continue from the last "
                               f"checkpoint with: grit-ray train --resume {self.run_dir}") from error
        self.rebuilds += 1
        started, failed_step = time.perf_counter(), self.step
        _say(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        _say(f"rebuilding the actors from {ckpt or 'the initial model'} (rebuild {self.rebuilds} of {limit})")
        self.shutdown()
        try:
            self.build(self.model_path)
            self.restore(ckpt)
        except Exception as e:
            raise RuntimeError(f"{e}\nthe run cannot go on; once the cluster can hold its actors again, continue "
                               f"from the last checkpoint with: grit-ray train --resume {self.run_dir}") from e
        rebuild_s = time.perf_counter() - started
        self.rebuild_metrics = {"faults/learner_rebuilds": 1.0, "faults/learner_rebuild_s": rebuild_s,
                                "faults/replayed_steps": float(failed_step - self.step)}
        _say(f"rebuilt in {rebuild_s:.0f}s; replaying from step {self.step + 1}")

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.cfg, self.rollout, self.rewards, self.eval_rows, weights_version=self.sync.version)

    def evaluates_at(self, step: int) -> bool:
        return bool(self.eval_rows) and (step % self.cfg.eval.every_n_steps == 0 or step == self.cfg.run.steps)

    def saves_at(self, step: int, stop_after: int | None = None) -> bool:
        return (step % self.cfg.checkpoint.every_n_steps == 0 or step == self.cfg.run.steps
                or (stop_after is not None and step >= stop_after))

    def overlaps_after(self, step: int, stop_after: int | None = None) -> bool:
        """One-step-off: step + 1 is generated while step's update runs, except after a step that
        saves a checkpoint: a checkpoint never holds a generated but untrained batch, so resuming
        from it (or replaying after a rebuild) repeats the run exactly."""
        return self.cfg.algorithm.max_staleness > 0 and not self.saves_at(step, stop_after)

    def _start_collect(self, step: int) -> Collection:
        rows = self.sampler.next_batch(self.cfg.algorithm.prompts_per_step)
        c = self.step_fn.start_collect(rows, step, draw_more=self.sampler.next_batch)
        c.metrics["epoch"] = self.sampler.epoch
        return c

    def train_step(self, stop_after: int | None = None) -> dict[str, Any]:
        """The next optimizer step, and its evaluation when one is due; returns the step's metrics.
        With ``algorithm.max_staleness=1`` the rollout workers generate the step after while this
        one's last scores come in and the learners update (``TrainingStep.run``)."""
        started = time.perf_counter()
        self.step += 1
        collection, self.prefetched = self.prefetched or self._start_collect(self.step), None
        following = self.step + 1
        collect_next = (lambda: self._start_collect(following)) if self.overlaps_after(self.step, stop_after) else None
        m, self.prefetched = self.step_fn.run(collection, collect_next)
        m = {"step": self.step, **m, "time/step": time.perf_counter() - started}
        m["driver/rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if self.evaluates_at(self.step):
            m.update(self.evaluate())
        return {**m, **self.take_faults()}

    def take_faults(self) -> dict[str, float]:
        """Restarts and rebuilds since the last call, with the seconds they cost (faults/...)."""
        out = {**self.rollout.faults.take(), **self.rewards.faults.take(), **self.rebuild_metrics}
        self.rebuild_metrics = {}
        return out

    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.step, self.learners, self.sampler, self.cfg.checkpoint.keep_last)

    def save_final(self) -> Path:
        final = self.run_dir / FINAL_MODEL
        self.learners.save_hf_model(final)
        _say(f"final model: {final} (transformers and vLLM load it)")
        return final


def check_memory_plan(cfg: GritConfig) -> None:
    """Stop a CUDA run whose memory plan does not fit the hardware its config names, before any model
    loads or actor starts (``resources.refuse_over_plan``; docs/cluster.md, "Memory plan")."""
    try:
        problems = start_problems(cfg)
    except ValueError as e:  # a model whose shape the planner cannot read: the run is not held up by it
        _say(f"memory plan skipped: {e}")
        return
    if not problems:
        return
    if cfg.resources.refuse_over_plan:
        raise ConfigError([*problems, "resources.refuse_over_plan: false starts anyway; `grit-ray plan --config "
                                      "...` prints the estimate per GPU"])
    for p in problems:
        _say(f"memory plan: {p} (starting anyway: resources.refuse_over_plan is false)")


def train(cfg: GritConfig, run_dir: Path, resume: bool = False, stop_after: int | None = None) -> Path | None:
    """Run (or resume) a training run in ``run_dir``; returns the final model's directory.
    ``stop_after`` ends the run early at that step, with a checkpoint, as if it had been stopped
    there (a run split into several jobs); ``resume`` continues it with the same schedule."""
    from grit_ray.models.tiny import ensure_model
    from grit_ray.trainer.tracking import MetricsLogger

    check_memory_plan(cfg)
    colocation = cfg.colocation()
    if cfg.resources.colocate or colocation.engines_first or colocation.offload_ranks:  # else nothing to say
        for line in colocation.lines():
            _say(line)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        _say(f"no complete checkpoint in {run_dir / CHECKPOINTS}: starting from step 0")
    model_path = ensure_model(cfg.model.path, cfg.model.tiny, log=_say, family=cfg.model.family)  # before the run dir
    trainer = Trainer(cfg, run_dir)
    with ray_session(cfg.resources.ray_address), ExitStack() as closing:
        trainer.build(model_path)
        if ckpt is not None:
            trainer.restore(ckpt)
        logger = MetricsLogger(run_dir, cfg.run.steps, cfg.logging.tensorboard, cfg.logging.progress,
                               cfg.logging.wandb_project, cfg.run.name, cfg.model_dump(mode="json"),
                               keep_through=trainer.step if ckpt is not None else -1)
        closing.callback(logger.close)
        if trainer.eval_rows and trainer.step == 0:  # the base model's numbers: the curve starts where training does
            constants = best_constant_answers((r.dataset, r.answer) for r in trainer.eval_rows)
            base = {"step": 0, **trainer.evaluate(), **trainer.take_faults(),
                    "eval/constant_accuracy": constant_accuracy(constants)}
            logger.log(base)
            _say(eval_line(base))
            _say(constant_line(constants) + ": trained accuracy means something above it")
        while trainer.step < cfg.run.steps:
            try:
                m = trainer.train_step(stop_after)
                logger.log(m)
                if "eval/rows" in m:
                    _say(eval_line(m))
                stopping = stop_after is not None and trainer.step >= stop_after
                if trainer.saves_at(trainer.step, stop_after):
                    trainer.save()
            except Exception as e:  # an actor lost outside generation and scoring: rebuild and replay
                if not (is_actor_failure(e) or trainer.lost_learners()):
                    raise
                trainer.recover(e)
                logger.rewind(trainer.step)  # the replayed steps are logged again, once
                continue
            if stopping and trainer.step < cfg.run.steps:
                _say(f"stopped after step {trainer.step} of {cfg.run.steps}; continue with --resume {run_dir}")
                return None
        final = trainer.save_final() if cfg.checkpoint.save_final else run_dir / FINAL_MODEL
        _say(write_judge_report(trainer.rewards.judge_report(), run_dir))  # this process's calls (a resume: its part)
    if trainer.stream.skipped:
        _say(trainer.stream.skipped_report())
    _say(f"done in {time.perf_counter() - trainer.started:.0f}s; metrics in {run_dir / 'metrics.jsonl'}")
    return final


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


