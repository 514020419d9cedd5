"""Learner step time, start-up and bucketed weight gather, per ZeRO stage and actor count.

Runs real DeepSpeed learner actors in a local Ray on the tiny offline Qwen2.5-VL (or --model),
on one fixed batch of synthetic image prompts with random completions. The baseline is one ZeRO-2
actor, measured in the same run; every other row is printed as a ratio to it.

    .venv/bin/python bench/learner_step.py [--steps 5] [--completions 16] [--shm]

``--shm`` adds a row with DeepSpeed's CPU shared-memory allreduce kernel enabled (its first use
JIT-compiles; the start-up column shows the cost when torch's extension cache is cold).

``--budget TOKENS`` measures micro-batches cut by a token budget (``learner.max_tokens_per_micro_batch``)
against 2-row micro-batches (the baseline of that table), at the default completion lengths (16-47
tokens) and at a GRIT-like mix (200-1,000 tokens), one ZeRO-2 actor: real and computed tokens per
step, and the step time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from grit_ray.algo.experience import TrainSample, assign_advantages
from grit_ray.algo.micro_batching import padding_report, plan_micro_batches
from grit_ray.config import DataSource, SynthSpec, TinyModelSpec, load_config
from grit_ray.data.rows import RowStream
from grit_ray.data.synth import write_synth
from grit_ray.grit.prompts import chat_messages
from grit_ray.models.tiny import build_tiny_model
from grit_ray.testing.hooks import InspectableLearnerGroup


def batch(model_dir: Path, data: Path, completions: int, group: int, cfg,
          lengths: tuple[int, int] = (16, 48)) -> list[TrainSample]:
    """Random completions of ``lengths`` tokens (low inclusive, high exclusive) on synthetic image
    prompts, each sample's prompt length (image tokens included) counted as the rollout counts it."""
    from PIL import Image
    from transformers import AutoProcessor

    from grit_ray.models import adapter_for

    processor = AutoProcessor.from_pretrained(model_dir)
    encoder = adapter_for(cfg.model.family).prompt_encoder(processor, cfg.model)
    rows = list(RowStream([DataSource(path=str(data), images=str(data.parent / "images"))]))
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(completions):
        row = rows[(i // group) % len(rows)]
        prompt = processor.tokenizer.apply_chat_template(chat_messages(row.question), tokenize=False,
                                                         add_generation_prompt=True)
        prompt_tokens = encoder.encode_image(prompt, Image.open(row.image))["input_ids"].shape[1]
        ids = torch.randint(10, 400, (int(torch.randint(*lengths, (1,), generator=g)),), generator=g).tolist()
        samples.append(TrainSample(prompt, row.image, ids, 0.0, group_id=i // group, prompt_tokens=prompt_tokens))
    return assign_advantages(samples, torch.rand(len(samples), generator=g).tolist(), cfg.algorithm)[0]


def measure(model_dir: Path, data: Path, args, stage: int, actors: int, shm: bool = False,
            budget: int | None = None, lengths: tuple[int, int] = (16, 48)) -> dict[str, float]:
    cfg = load_config(overrides=[
        f"learner.zero_stage={stage}", f"learner.num_actors={actors}", "learner.micro_batch_size=2",
        f"algorithm.prompts_per_step={args.completions // 4}", "algorithm.group_size=4", "model.device=cpu",
        "model.dtype=float32", "learner.comm_backend=gloo", f"learner.cpu_shm_allreduce={str(shm).lower()}",
        f"model.path={model_dir}", f"learner.max_tokens_per_micro_batch={'null' if budget is None else budget}",
    ])
    samples = batch(model_dir, data, args.completions, 4, cfg, lengths)
    lc = cfg.learner
    tokens = padding_report(plan_micro_batches(samples, actors, lc.micro_batch_size, lc.max_tokens_per_micro_batch))
    started = time.perf_counter()
    group = InspectableLearnerGroup(cfg, str(model_dir))
    startup = time.perf_counter() - started
    try:
        group.train_step(samples)  # warm-up: first step allocates optimizer state
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            group.train_step(samples)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        group.full_weights(bucket_mb=args.bucket_mb)
        gather = time.perf_counter() - t
    finally:
        group.shutdown()
    return {"startup_s": startup, "step_s": statistics.median(times), "gather_s": gather, **tokens}


def budget_table(model_dir: Path, data: Path, args) -> None:
    """Token-budget micro-batches against 2-row ones, at two length mixes (one ZeRO-2 actor)."""
    print("\n| completion lengths | micro-batches | real tokens | computed tokens | computed / real | step s "
          "| step vs 2 rows |")
    print("|---|---|---|---|---|---|---|")
    for mix, lengths in (("16-47 (default bench)", (16, 48)), ("200-1,000 (GRIT-like)", (200, 1001))):
        rows = measure(model_dir, data, args, 2, 1, lengths=lengths)
        budget = measure(model_dir, data, args, 2, 1, budget=args.budget, lengths=lengths)
        for label, r in (("2 rows", rows), (f"budget {args.budget}", budget)):
            print(f"| {mix} | {label} | {r['real_tokens']:.0f} | {r['computed_tokens']:.0f} | "
                  f"{r['computed_per_real']:.2f} | {r['step_s']:.3f} | {r['step_s'] / rows['step_s']:.2f}x |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--completions", type=int, default=16)
    ap.add_argument("--bucket-mb", type=float, default=0.5)
    ap.add_argument("--model", type=Path, default=None, help="HF model dir; default: the tiny offline model")
    ap.add_argument("--shm", action="store_true", help="also measure with the CPU shm allreduce kernel")
    ap.add_argument("--budget", type=int, default=None,
                    help="only the token-budget table: micro-batches of at most this many computed tokens")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grit-bench-"))
    model_dir = args.model or build_tiny_model(work / "model", TinyModelSpec.plumbing(seed=0))
    data = write_synth(work / "data", SynthSpec(n=8, seed=0))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    if args.budget is not None:
        budget_table(model_dir, data, args)
        ray.shutdown()
        return
    rows = [("ZeRO-2, 1 actor (baseline)", 2, 1, False), ("ZeRO-2, 2 actors", 2, 2, False),
            ("ZeRO-3, 1 actor", 3, 1, False), ("ZeRO-3, 2 actors", 3, 2, False)]
    if args.shm:
        rows.append(("ZeRO-3, 2 actors, shm kernel", 3, 2, True))
    results = []
    for label, stage, actors, shm in rows:
        results.append((label, measure(model_dir, data, args, stage, actors, shm)))
        print(f"measured {label}", flush=True)
    base = results[0][1]
    print(f"\n{args.completions} completions per step, micro-batch 2, median of {args.steps} steps, "
          f"gather in {args.bucket_mb} MiB buckets\n")
    print("| setup | start-up s | step s | step vs baseline | gather s |")
    print("|---|---|---|---|---|")
    for label, r in results:
        print(f"| {label} | {r['startup_s']:.1f} | {r['step_s']:.3f} | {r['step_s'] / base['step_s']:.2f}x "
              f"| {r['gather_s']:.3f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
