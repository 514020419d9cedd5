"""Completion tokens trained per second of step time: TRL's GRPOTrainer against grit-ray, in one run.

Same tiny model, batch, token budget and KL beta on both sides.

Both sides train the default run's pretrained tiny Qwen2.5-VL (cached, docs/base_model.md) on the
default config's synthetic rows, with the GRIT prompt, the default image-pixel limits, 8 prompts x 4
completions per optimizer step, at most 64 new tokens, beta 0.01, temperature 1.0 and the default
config's optimizer settings. TRL (the baseline) runs in one process: transformers generate, no vLLM,
float32 on the CPU, GRIT's rule-judged rewards. grit-ray runs its real trainer (``train()``: local
Ray, a vLLM rollout actor, a reward actor, a DeepSpeed learner, weight sync every step) on the default
config with those settings, refill off, no held-out evaluation and no final model. Each system (and
each grit-ray variant) runs in a fresh process whose output goes to a log file in the work folder.

TRL's torch runs on one thread by default, as each of grit-ray's actors does (Ray sets
OMP_NUM_THREADS from their fractional CPU share). Two threads on a 2-core machine slow down many
times over once another process wants a core (measured with another job running: 4.5 s/step on one
thread, 38 s/step on two).

Step time is each system's own optimizer step (TRL: a callback's on_step_begin -> on_step_end;
grit-ray: ``time/step``), the first step dropped as warm-up; "between steps" is the wall time from
one logged step to the next, overheads outside the step included. Tokens are the completion tokens
the update trained (TRL: the generated ids, EOS included, counted in the reward function; grit-ray:
``train/tokens``).

    .venv/bin/python bench/vs_trl.py [--steps 8] [--set key=value ...] [--label NAME]
        [--variant NAME:key=value,key=value ...] [--trl-threads N ...] [--json PATH]

``--set`` overrides apply to every grit-ray run; each ``--variant`` adds a grit-ray run with more
overrides (keys are passed through as given: a key this checkout does not know skips that variant,
saying why). The default config is always measured, labelled ``--label``. ``--trl-threads`` given
more than once measures TRL once per thread count (0: torch's default); the first is the baseline.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from grit_ray.config import ConfigError, load_config

PROMPTS_PER_STEP = 8
GROUP_SIZE = 4
MAX_NEW_TOKENS = 64
KL_BETA = 0.01
TEMPERATURE = 1.0


def shared_overrides(steps: int) -> list[str]:
    """What both systems are given: batch, token budget, beta, temperature, and steps + 1 warm-up."""
    return [f"algorithm.prompts_per_step={PROMPTS_PER_STEP}", f"algorithm.group_size={GROUP_SIZE}",
            f"rollout.max_new_tokens={MAX_NEW_TOKENS}", f"algorithm.kl_beta={KL_BETA}",
            f"rollout.temperature={TEMPERATURE}", f"run.steps={steps + 1}"]


def grit_overrides(steps: int, run_dir: Path) -> list[str]:
    """The default config as a throughput run: every step trains 8 x 4, nothing but training is timed."""
    return shared_overrides(steps) + [
        "algorithm.refill_zero_signal_groups=false",  # refill would generate more than 8 x 4 in some steps
        "checkpoint.save_final=false", "checkpoint.every_n_steps=1000000",
        "eval.every_n_steps=null", "data.synthetic_eval=null",  # no held-out evaluation at all
        "logging.progress=false", f"logging.run_dir={run_dir}",
    ]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:key=v,key=v`` -> (NAME, overrides). Splits only at a comma that starts a new ``key=``,
    so list values (``rollout.stop=["a","b"]``) stay whole."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME:key=value[,key=value ...]")
    return name.strip(), [o for o in re.split(r",(?=[A-Za-z_][\w.\-]*=)", rest) if o.strip()]


def _quiet_child(log_path: str) -> None:
    """Send this process's stdout/stderr (its subprocesses' too) to ``log_path``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# ---------------------------------------------------------------------------------------------
# TRL (runs in its own process)


def measure_trl(steps: int, threads: int, work: str, log_name: str) -> dict[str, Any]:
    _quiet_child(str(Path(work) / log_name))
    import asyncio

    import datasets
    import torch
    import transformers
    from transformers import AutoProcessor, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grit_ray.config import LossAggregation
    from grit_ray.data.rows import RowStream, materialise_sources
    from grit_ray.grit.prompts import chat_messages, user_text
    from grit_ray.grit.rewards import RewardSet
    from grit_ray.judge.rule import RuleJudge
    from grit_ray.judge.scoring import CompletionScorer, RewardItem
    from grit_ray.models import adapter_for
    from grit_ray.models.tiny import ensure_model

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(None, shared_overrides(steps))
    model_dir = ensure_model(cfg.model.path, cfg.model.tiny)
    adapter = adapter_for(cfg.model.family)
    # the learner's and rollout's pixel limits, as the processor's defaults (TRL passes no size arguments)
    processor = AutoProcessor.from_pretrained(model_dir, padding_side="left", truncation_side="left",
                                              **adapter.processor_kwargs(cfg.model))

    train_sources, _ = materialise_sources(cfg.data, Path(work) / "trl-run")
    rows = list(RowStream(train_sources))
    template = cfg.prompt.template
    # TRL puts the row's image before the text of a string-content user turn: chat_messages() exactly
    dataset = datasets.Dataset.from_dict({
        "prompt": [[{"role": "user", "content": user_text(r.question, template)}] for r in rows],
        "image": [r.image if isinstance(r.image, str) else {"bytes": r.image, "path": None} for r in rows],
        "question": [r.question for r in rows], "answer": [r.answer for r in rows],
        "dataset": [r.dataset for r in rows],
    }).cast_column("image", datasets.Image())
    from trl.data_utils import prepare_multimodal_messages
    as_trl = processor.apply_chat_template(prepare_multimodal_messages(dataset[0]["prompt"], [dataset[0]["image"]]),
                                           tokenize=False, add_generation_prompt=True)
    as_grit = processor.apply_chat_template(chat_messages(rows[0].question, template), tokenize=False,
                                            add_generation_prompt=True)
    if as_trl != as_grit:
        raise RuntimeError(f"TRL's prompt differs from grit-ray's:\n{as_trl!r}\n{as_grit!r}")

    scorer = CompletionScorer(RewardSet.build(cfg.reward.preset, cfg.reward.weights, cfg.reward.extra_components),
                              RuleJudge(), cfg.data.counting_datasets)
    tokens_per_call: list[int] = []  # one call per generation batch = one optimizer step here

    def grit_reward(prompts, completions, completion_ids, question, answer, dataset, **_) -> list[float | None]:
        tokens_per_call.append(sum(len(ids) for ids in completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        items = [RewardItem(group_id=i, index=0, question=q, reference=a, dataset=d, completion=t,
                            token_ids=list(ids), template=template)
                 for i, (q, a, d, t, ids) in enumerate(zip(question, answer, dataset, texts, completion_ids))]

        async def score_all():
            return await asyncio.gather(*(scorer.score(item) for item in items))

        return [s.reward for s in asyncio.run(score_all())]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin = 0.0
            self.step_s: list[float] = []
            self.ends: list[float] = []
            self.logs: list[dict[str, Any]] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.step_s.append(now - self.begin)
            self.ends.append(now)

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    micro = cfg.learner.micro_batch_size  # grit-ray's micro-batch: the same forward/backward sizes
    completions = cfg.algorithm.completions_per_step
    algo, learner = cfg.algorithm, cfg.learner
    args = GRPOConfig(
        output_dir=str(Path(work) / "trl-out"), max_steps=steps + 1, seed=cfg.run.seed,
        per_device_train_batch_size=micro, gradient_accumulation_steps=completions // micro,
        generation_batch_size=completions, num_generations=algo.group_size,  # one generation per optimizer step
        max_completion_length=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p, top_k=max(cfg.rollout.top_k, 0),
        beta=algo.kl_beta, epsilon=algo.clip_eps_low, epsilon_high=algo.clip_eps_high,
        loss_type="grpo" if algo.loss_agg is LossAggregation.SEQ_MEAN_TOKEN_MEAN else "dapo",
        scale_rewards="group" if algo.adv_std_normalize else "none",
        learning_rate=learner.lr, warmup_steps=learner.warmup_steps,
        lr_scheduler_type="cosine" if learner.lr_schedule == "cosine" else "constant_with_warmup",
        weight_decay=learner.weight_decay, max_grad_norm=learner.grad_clip, adam_beta1=learner.adam_betas[0],
        adam_beta2=learner.adam_betas[1], adam_epsilon=learner.adam_eps,
        # grit-ray suppresses every vision placeholder token in generation; TRL alone only <|image_pad|>
        generation_kwargs={"suppress_tokens": adapter.forbidden_token_ids(processor.tokenizer)},
        gradient_checkpointing=learner.gradient_checkpointing,  # TRL's default is on; grit-ray's off
        use_vllm=False, use_cpu=True, bf16=False, fp16=False,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, log_level="error",
        dataloader_num_workers=0,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(model=model_dir, reward_funcs=grit_reward, args=args, train_dataset=dataset,
                          processing_class=processor, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the progress bar for a per-step printout
    trainer.train()
    if len(tokens_per_call) != steps + 1 or len(timer.step_s) != steps + 1:
        raise RuntimeError(f"expected {steps + 1} generations and steps, got {len(tokens_per_call)} and "
                           f"{len(timer.step_s)}")
    mean_lengths = [log["completions/mean_length"] for log in timer.logs if "completions/mean_length" in log]
    return {"step_s": timer.step_s, "step_end_s": timer.ends, "tokens": [float(t) for t in tokens_per_call],
            "mean_len": mean_lengths, "threads": torch.get_num_threads(),
            "kl": [log["kl"] for log in timer.logs if "kl" in log]}


# ---------------------------------------------------------------------------------------------
# grit-ray (runs in its own process)


def measure_grit(overrides: list[str], work: str, log_name: str) -> dict[str, Any]:
    _quiet_child(str(Path(work) / log_name))
    from grit_ray.trainer.loop import train
    from grit_ray.trainer.tracking import MetricsLogger

    cfg = load_config(None, overrides)
    run_dir = Path(cfg.logging.run_dir)
    logged_at: dict[int, float] = {}
    log_metrics = MetricsLogger.log

    def timed_log(self, metrics):  # when each step's metrics reach the log: the step-to-step interval
        logged_at[int(metrics["step"])] = time.perf_counter()
        log_metrics(self, metrics)

    MetricsLogger.log = timed_log
    train(cfg, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = sorted((r for r in rows if r.get("step", 0) >= 1 and "time/step" in r), key=lambda r: r["step"])
    per_step = cfg.algorithm.group_size

    def trained_tokens(r: dict[str, Any]) -> float:
        if "train/tokens" in r:
            return float(r["train/tokens"])
        return r["completion/len_mean"] * r.get("groups/total", cfg.algorithm.prompts_per_step) * per_step

    return {"step_s": [r["time/step"] for r in steps], "step_end_s": [logged_at[r["step"]] for r in steps],
            "tokens": [trained_tokens(r) for r in steps], "mean_len": [r["completion/len_mean"] for r in steps],
            "kl": [r["train/kl"] for r in steps if "train/kl" in r]}


# ---------------------------------------------------------------------------------------------
# the run


def run_isolated(fn, *args) -> tuple[dict[str, Any] | None, float, str | None]:
    """``fn(*args)`` in a fresh spawned process: (result or None, wall seconds, error or None)."""
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            result = pool.submit(fn, *args).result()
            return result, time.perf_counter() - started, None
        except Exception as e:  # one failed system or variant must not lose the others' figures
            return None, time.perf_counter() - started, "".join(traceback.format_exception_only(e)).strip()


def summarise(label: str, system: str, raw: dict[str, Any], wall_s: float, overrides: list[str]) -> dict[str, Any]:
    """Figures over the steps after the first (warm-up)."""
    step_s, tokens = raw["step_s"][1:], raw["tokens"][1:]
    ends = raw["step_end_s"]
    between = [b - a for a, b in zip(ends, ends[1:])]
    return {
        "label": label, "system": system, "overrides": overrides, "measured_steps": len(step_s),
        "step_s_median": statistics.median(step_s), "between_steps_s_median": statistics.median(between),
        "first_step_s": raw["step_s"][0], "tokens_per_step_median": statistics.median(tokens),
        "mean_completion_len": statistics.fmean(raw["mean_len"][1:]) if raw["mean_len"][1:] else None,
        # all measured tokens over all measured step time: long and short steps weigh what they cost
        "tokens_per_s": sum(tokens) / sum(step_s), "tokens_per_s_between_steps": sum(tokens) / sum(between),
        "wall_s": wall_s, "step_s": raw["step_s"], "tokens": raw["tokens"],
        **({"trl_threads": raw["threads"]} if "threads" in raw else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="measured steps per system (one more runs as warm-up)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="grit-ray config override for every grit-ray run (repeatable)")
    ap.add_argument("--label", default="grit-ray (default config)", help="name of the default grit-ray row")
    ap.add_argument("--variant", action="append", default=[], type=parse_variant, metavar="NAME:KEY=V,KEY=V",
                    help="another grit-ray run with these overrides on top of --set (repeatable)")
    ap.add_argument("--trl-threads", type=int, action="append", default=None, metavar="N",
                    help="torch threads for TRL (default 1; 0: torch's default); repeat to measure several")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be at least 2 (a median of step-to-step intervals needs two measured steps)")
    work = args.work or Path(tempfile.mkdtemp(prefix="grit-vs-trl-"))
    work.mkdir(parents=True, exist_ok=True)

    grit_runs: list[tuple[str, list[str]]] = []
    for i, (label, extra) in enumerate([(args.label, [])] + args.variant):
        overrides = grit_overrides(args.steps, work / f"grit-{i}") + args.overrides + extra
        try:
            load_config(None, overrides)  # a bad key fails here, before minutes of measuring
        except ConfigError as e:
            if i == 0:
                sys.exit(f"--set: {e}")
            print(f"skipping variant {label}: {e}", flush=True)
            continue
        grit_runs.append((label, overrides))

    print(f"work folder and logs: {work}", flush=True)
    results, failures = [], []
    for i, threads in enumerate(args.trl_threads or [1]):
        log_name = f"trl-{i}.log"
        raw, wall, error = run_isolated(measure_trl, args.steps, threads, str(work), log_name)
        label = f"TRL GRPOTrainer, {threads or 'default'} thread{'s' if threads != 1 else ''}"
        if raw is None:
            failures.append((label, error, work / log_name))
            print(f"{label} failed: {error}", flush=True)
            continue
        results.append(summarise(label, "trl", raw, wall, []))
        print(f"measured {label} ({wall:.0f}s)", flush=True)
    for i, (label, overrides) in enumerate(grit_runs):
        log_name = f"grit-{i}.log"
        raw, wall, error = run_isolated(measure_grit, overrides, str(work), log_name)
        if raw is None:
            failures.append((label, error, work / log_name))
            print(f"{label} failed: {error}", flush=True)
            continue
        extra = [o for o in overrides if o not in grit_overrides(args.steps, work / f"grit-{i}")]
        results.append(summarise(label, "grit-ray", raw, wall, extra))
        print(f"measured {label} ({wall:.0f}s)", flush=True)

    trl = next((r for r in results if r["system"] == "trl"), None)
    if trl:
        trl["label"] += " (baseline)"
    for r in results:
        r["ratio_vs_trl"] = r["tokens_per_s"] / trl["tokens_per_s"] if trl else None
        r["ratio_vs_trl_between_steps"] = (r["tokens_per_s_between_steps"] / trl["tokens_per_s_between_steps"]
                                           if trl else None)

    threads = f", TRL's baseline on {trl['trl_threads']} torch thread(s)" if trl else ""
    print(f"\n{PROMPTS_PER_STEP} prompts x {GROUP_SIZE} completions per step, <= {MAX_NEW_TOKENS} new tokens, "
          f"beta {KL_BETA}, temperature {TEMPERATURE}; medians of {args.steps} steps after 1 warm-up step; "
          f"{os.cpu_count()} CPUs{threads}\n")
    print("| system | s/step | s between steps | first step s | completion tokens/step | mean length | "
          "tokens/s of step time | vs TRL | tokens/s between steps | vs TRL | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r['ratio_vs_trl']:.2f}x" if r["ratio_vs_trl"] is not None else "-"
        ratio_between = f"{r['ratio_vs_trl_between_steps']:.2f}x" if r["ratio_vs_trl"] is not None else "-"
        length = f"{r['mean_completion_len']:.1f}" if r["mean_completion_len"] is not None else "-"
        print(f"| {r['label']} | {r['step_s_median']:.2f} | {r['between_steps_s_median']:.2f} | "
              f"{r['first_step_s']:.2f} | {r['tokens_per_step_median']:.0f} | {length} | {r['tokens_per_s']:.0f} | "
              f"{ratio} | {r['tokens_per_s_between_steps']:.0f} | {ratio_between} | {r['wall_s']:.0f} |")
    for r in results:
        if r["overrides"]:
            print(f"\n{r['label']}: {' '.join(r['overrides'])}", end="")
    print()
    for label, error, log in failures:
        print(f"\n{label} failed: {error}\n(log: {log})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "settings": {"prompts_per_step": PROMPTS_PER_STEP, "group_size": GROUP_SIZE,
                         "max_new_tokens": MAX_NEW_TOKENS, "kl_beta": KL_BETA, "temperature": TEMPERATURE,
                         "steps": args.steps, "cpus": os.cpu_count()},
            "results": results, "failures": [{"label": lb, "error": e, "log": str(p)} for lb, e, p in failures],
        }, indent=2))
        print(f"figures written to {args.json}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
