"""Where a learner step's time goes: torch.profiler over one step's compute, outside Ray and DeepSpeed.

The default run's pretrained tiny Qwen2.5-VL (cached), 32 completions (8 groups of 4) of random
tokens on synthetic image prompts, in micro-batches: the reference forward (no grad), the policy
forward and the backward, as ``PolicyLearner.train_step`` runs them. Prints the step time with the
vision tower run once per row and once per distinct image (the ratio in the same run), then the
top ops of one step.

    .venv/bin/python bench/learner_profile.py [--threads 1] [--micro-batch 8] [--top 12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learner_step import batch  # noqa: E402  (the same synthetic batch as the learner bench)

from grit_ray.algo.experience import collate, completion_logprobs  # noqa: E402
from grit_ray.config import SynthSpec, load_config  # noqa: E402
from grit_ray.data.synth import write_synth  # noqa: E402
from grit_ray.models import adapter_for  # noqa: E402
from grit_ray.models.tiny import ensure_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torch.profiler import profile
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = load_config(overrides=["algorithm.prompts_per_step=8", "algorithm.group_size=4"])
    model_dir = ensure_model(None, cfg.model.tiny, log=print)
    data = write_synth(Path(tempfile.mkdtemp(prefix="grit-profile-")), SynthSpec(n=16, seed=0))
    samples = batch(Path(model_dir), data, 32, 4, cfg)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    adapter = adapter_for(cfg.model.family)
    encoder = adapter.prompt_encoder(AutoProcessor.from_pretrained(model_dir), cfg.model)

    def step(shared) -> None:
        for i in range(0, len(samples), args.micro_batch):
            mb = collate(samples[i:i + args.micro_batch], encoder, 0)
            with torch.no_grad():
                completion_logprobs(model, mb, 1.0, adapter=shared)  # the reference forward
            completion_logprobs(model, mb, 1.0, entropy=[], adapter=shared).sum().backward()
        encoder.clear()

    times = {}
    for label, shared in (("vision pass per row", None), ("vision pass per distinct image", adapter)):
        step(shared)  # warm-up
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            step(shared)
            runs.append(time.perf_counter() - t)
        times[label] = statistics.median(runs)
    base = times["vision pass per row"]
    for label, s in times.items():
        print(f"{label}: {s:.3f} s per step ({s / base:.2f}x)")
    with profile() as prof:
        step(adapter)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
