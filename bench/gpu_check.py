"""The one-GPU check: what the project runs on a GPU without vLLM or Ray, on both tiny families,
written as one JSON report (docs/cluster.md, "The one-GPU check").

    python bench/gpu_check.py --device cuda --out gpu_check.json     # on a GPU machine
    .venv/bin/python bench/gpu_check.py --device cpu --out /tmp/gpu_check.json   # anywhere (CI runs it)

Needs torch, transformers, pillow, pyyaml and pydantic (bench/gpu_check.sh carries what a bare
GPU image lacks); DeepSpeed when it imports. Checks, each recorded as ok, failed or skipped with
its figures, seconds and error:

- ``learner_<family>``: the learner's GRPO-GR loss (``algo.experience.micro_batch_loss``, the
  function every learner rank runs) and gradients in the device dtype against the fp32 CPU step on
  the same weights and batch; then learner tokens/s (forward, backward, AdamW) on the device.
- ``deepspeed_<family>``: one ZeRO-2 rank (``workers.learner.PolicyLearner``, no Ray) on the same
  batch; its first loss against the plain step's.
- ``generation_<family>``: the transformers rollout backend (``workers.rollout.HFGenerator``):
  sampled tokens/s, and the share of batched greedy completions equal to one-at-a-time ones.
- ``ipc_handoff``: weight-sync buckets (``workers.weight_sync`` layout) handed to a second process
  through torch's multiprocessing reductions (CUDA IPC handles on a GPU, shared memory on CPU);
  versions 1, 2, then a stale 1 that must be refused; checksums compared.
- ``colocation_<family>``: the colocated handoff on the device: a ZeRO-2 learner offloads its
  states between two updates, the transformers rollout worker sleeps and wakes; on CUDA both
  must free memory, and greedy output must not change across the sleep.
- ``planner_<model>``: the memory planner's activation estimate (``trainer.memory_plan``) against
  the measured peak over one forward and backward (the CUDA allocator's; on Linux CPUs the
  kernel's resident high-water mark, large blocks mmapped so freed memory leaves it), for the
  tiny models and a 2-layer stack (Qwen2.5-VL-3B's text width on a GPU), with and without
  gradient checkpointing.

The process exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout, not installed

from grit_ray.algo.experience import MicroBatch, TrainSample, assign_advantages, collate, micro_batch_loss, totals_of  # noqa: E402
from grit_ray.algo.grpo import loss_settings  # noqa: E402
from grit_ray.algo.micro_batching import plan_micro_batches  # noqa: E402
from grit_ray.config import DataSource, GritConfig, ModelFamily, SynthSpec, TinyModelSpec, load_config  # noqa: E402
from grit_ray.models import adapter_for  # noqa: E402

FAMILIES = (ModelFamily.QWEN2_5_VL, ModelFamily.INTERNVL3)
# bf16 against fp32 on a random tiny model (measured on CPU: docs/cluster.md)
GRAD_COSINE_MIN = 0.99
GRAD_NORM_RATIO = (0.9, 1.1)
LOGP_MAX_ABS = 0.15
# a GRIT-formatted completion: the sampled ids are prefixes of it (real tokens, none forbidden)
COMPLETION_TEXT = ("<think> the red square is at [12, 30, 50, 70] and the blue circle at [60, 20, 90, 55]; "
                   "the square is left of the circle </think> <rethink> both boxes hold the shapes named "
                   "</rethink> <answer> yes </answer>")


class SkipCheck(Exception):
    """Raised by a check that does not apply here (the reason is recorded)."""


@dataclass
class Check:
    name: str
    status: str = "ok"  # ok | failed | skipped
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Setting:
    device: str
    dtype: torch.dtype
    work: Path
    models: dict[ModelFamily, Path] = field(default_factory=dict)
    data: Path | None = None
    plain_grad_norm: dict[ModelFamily, float] = field(default_factory=dict)  # learner check -> deepspeed check


def run_check(name: str, fn: Callable[[dict[str, Any]], None], log=print) -> Check:
    """``fn(figures)`` timed; an exception fails the check (its message and last frames kept)."""
    check = Check(name)
    started = time.perf_counter()
    try:
        fn(check.figures)
    except SkipCheck as e:
        check.status, check.error = "skipped", str(e)
    except Exception as e:  # a check's failure is recorded and the next check runs
        check.status = "failed"
        check.error = f"{type(e).__name__}: {e}\n" + "".join(traceback.format_tb(e.__traceback__)[-3:])
    check.seconds = round(time.perf_counter() - started, 2)
    log(f"[gpu-check] {name}: {check.status} in {check.seconds:.1f}s"
        + (f" | {check.error.splitlines()[0]}" if check.error else "")
        + "".join(f" | {k} {_fmt(v)}" for k, v in check.figures.items()))
    return check


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------- set-up

def config_for(s: Setting, family: ModelFamily, device: str, *extra: str) -> GritConfig:
    """The tiny ``family`` model's config on ``device`` in the check's dtype (a CPU run's learner
    and generator resolve it to fp32: ``workers.hardware.resolve_dtype``)."""
    return load_config(overrides=[
        f"model.path={s.models[family]}", f"model.family={family.value}", f"model.device={device}",
        f"model.dtype={str(s.dtype).removeprefix('torch.')}", "resources.gpus_per_learner=1",
        "resources.gpus_per_rollout_worker=1", "learner.micro_batch_size=4", "algorithm.prompts_per_step=2",
        "algorithm.group_size=4", "learner.freeze_vision_tower=false", *extra])


def prepare(s: Setting, log=print) -> None:
    from grit_ray.data.synth import write_synth
    from grit_ray.models.tiny import build_tiny_model

    for family in FAMILIES:
        s.models[family] = build_tiny_model(s.work / f"tiny-{family.value}", TinyModelSpec.plumbing(),
                                            log=lambda *_: None, family=family)
    s.data = write_synth(s.work / "data", SynthSpec(n=8, seed=0))
    log(f"[gpu-check] tiny models and data in {s.work}")


def samples_for(s: Setting, cfg: GritConfig, n: int = 8) -> list[TrainSample]:
    """``n`` completions in groups of 4 over the synthetic rows, with GRIT-shaped token ids."""
    from transformers import AutoTokenizer

    from grit_ray.data.rows import RowStream
    from grit_ray.grit.prompts import chat_messages

    tok = AutoTokenizer.from_pretrained(cfg.model.path)
    rows = list(RowStream([DataSource(path=str(s.data), images=str(s.data.parent / "images"))]))
    ids = tok(COMPLETION_TEXT, add_special_tokens=False)["input_ids"]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        row = rows[i // 4]
        prompt = tok.apply_chat_template(chat_messages(row.question, cfg.prompt.template), tokenize=False,
                                         add_generation_prompt=True)
        length = int(torch.randint(len(ids) // 3, len(ids) + 1, (1,), generator=g))
        out.append(TrainSample(prompt, row.image, ids[:length], 0.0, group_id=i // 4, where=row.where))
    return assign_advantages(out, torch.rand(n, generator=g).tolist(), cfg.algorithm)[0]


@dataclass
class LossParts:
    """What the learner's step needs besides the model: the encoder, padding, suppression, settings."""

    encoder: Any
    pad_id: int
    suppressed: torch.Tensor
    temperature: float


def loss_parts(cfg: GritConfig) -> LossParts:
    from transformers import AutoProcessor

    adapter = adapter_for(cfg.model.family)
    processor = AutoProcessor.from_pretrained(cfg.model.path)
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    temperature = cfg.rollout.temperature if cfg.algorithm.scale_logits_by_temperature else 1.0
    return LossParts(adapter.prompt_encoder(processor, cfg.model), pad,
                     torch.tensor(adapter.forbidden_token_ids(tok), dtype=torch.long), temperature)


def load_model(cfg: GritConfig, device: str, dtype: torch.dtype):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(cfg.model.path, dtype=dtype).to(device)


def backward_step(model, reference, samples: list[TrainSample], cfg: GritConfig, parts: LossParts,
                  device: str) -> tuple[float, list[torch.Tensor], int]:
    """One batch's loss (summed over micro-batches) and backward, as a learner rank runs it;
    returns (loss, masked completion log-probs per micro-batch, tokens scored)."""
    totals, settings = totals_of(samples), loss_settings(cfg.algorithm)
    adapter = adapter_for(cfg.model.family)
    loss, logps, tokens = 0.0, [], 0
    for chunk in plan_micro_batches(samples, 1, cfg.learner.micro_batch_size)[0]:
        batch = collate(chunk, parts.encoder, parts.pad_id).to(device)
        out = micro_batch_loss(model, batch, totals, settings, reference=reference, temperature=parts.temperature,
                               suppressed=parts.suppressed, adapter=adapter)
        out.loss.backward()
        loss += float(out.loss.detach())
        logps.append(out.logp.float().cpu()[batch.completion_mask.cpu() > 0])
        tokens += int(batch.prompt_mask.sum()) + int(batch.completion_mask.sum())
    parts.encoder.clear()
    return loss, logps, tokens


def grads_of(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.float().cpu().flatten() for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------------------------- checks

def check_learner(s: Setting, family: ModelFamily, steps: int, figures: dict[str, Any]) -> None:
    cfg_ref = config_for(s, family, "cpu", "model.dtype=float32")
    cfg_dev = config_for(s, family, s.device)
    samples = samples_for(s, cfg_ref)
    runs = {}
    for name, cfg, device, dtype in (("fp32_cpu", cfg_ref, "cpu", torch.float32),
                                     ("device", cfg_dev, s.device, s.dtype)):
        torch.manual_seed(0)
        model = load_model(cfg, device, dtype).train()
        reference = load_model(cfg, device, dtype).eval().requires_grad_(False) if cfg.algorithm.kl_beta > 0 else None
        parts = loss_parts(cfg)
        loss, logps, _ = backward_step(model, reference, samples, cfg, parts, device)
        runs[name] = (loss, torch.cat(logps), grads_of(model))
        if name == "device":  # throughput: the learner's whole step, AdamW included
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            started, tokens = time.perf_counter(), 0
            for _ in range(steps):
                tokens += backward_step(model, reference, samples, cfg, parts, device)[2]
                opt.step()
                opt.zero_grad(set_to_none=True)
            _sync(device)
            figures["learner_tokens_per_s"] = round(tokens / (time.perf_counter() - started), 1)
        del model, reference
    (loss32, logp32, g32), (loss_d, logp_d, g_d) = runs["fp32_cpu"], runs["device"]
    names = sorted(set(g32) & set(g_d))
    if len(names) != len(g32) or not names:
        raise AssertionError(f"gradients of {len(g32)} parameters on CPU but {len(g_d)} on {s.device}")
    a, b = torch.cat([g32[n] for n in names]), torch.cat([g_d[n] for n in names])
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    ratio = float(b.norm() / a.norm())
    logp_diff = float((logp32 - logp_d).abs().max())
    s.plain_grad_norm[family] = float(b.norm())
    figures.update(loss_fp32=round(loss32, 6), loss_device=round(loss_d, 6), grad_cosine=round(cosine, 5),
                   grad_norm_ratio=round(ratio, 4), logp_max_abs_diff=round(logp_diff, 4),
                   logp_mean_fp32=round(float(logp32.mean()), 4), tokens_scored=int(logp32.numel()))
    bad = []
    # the first step's loss is 0 by construction (ratio 1, reference = policy, advantages centred per
    # group): the gradients and log-probs are what carry the comparison
    if not math.isfinite(loss_d) or abs(loss_d - loss32) > 1e-2:
        bad.append(f"loss {loss_d:.5g} against {loss32:.5g}")
    if cosine < GRAD_COSINE_MIN:
        bad.append(f"gradient cosine {cosine:.4f} < {GRAD_COSINE_MIN}")
    if not GRAD_NORM_RATIO[0] <= ratio <= GRAD_NORM_RATIO[1]:
        bad.append(f"gradient norm ratio {ratio:.3f} outside {GRAD_NORM_RATIO}")
    if logp_diff > LOGP_MAX_ABS:
        bad.append(f"log-prob difference {logp_diff:.3f} > {LOGP_MAX_ABS}")
    if bad:
        raise AssertionError(f"{s.device} {s.dtype} step differs from fp32 CPU: " + "; ".join(bad))


def require_deepspeed(figures: dict[str, Any]) -> None:
    """Skip the check where DeepSpeed does not import (the GPU machine has it only when carried)."""
    try:
        import deepspeed
    except ImportError as e:
        raise SkipCheck(f"deepspeed does not import ({e})") from None
    figures["deepspeed"] = deepspeed.__version__


def one_rank_learner(s: Setting, family: ModelFamily, cfg: GritConfig):
    """``workers.learner.PolicyLearner`` as rank 0 of 1, outside Ray, on a free local port."""
    import socket

    from grit_ray.workers.learner import PolicyLearner

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return PolicyLearner(cfg, str(s.models[family]), rank=0, world_size=1, master_addr="127.0.0.1",
                         master_port=port)


def check_deepspeed(s: Setting, family: ModelFamily, figures: dict[str, Any]) -> None:
    require_deepspeed(figures)
    cfg = config_for(s, family, s.device, "learner.zero_stage=2", "learner.num_actors=1")
    samples = samples_for(s, cfg)
    torch.manual_seed(0)
    learner = one_rank_learner(s, family, cfg)
    # the process group stays up: a second rank in this process reuses it (init_distributed is idempotent)
    plan = plan_micro_batches(samples, 1, cfg.learner.micro_batch_size)[0]
    first = learner.train_step(plan, totals_of(samples))
    second = learner.train_step(plan, totals_of(samples))
    figures.update(startup_s=round(learner.startup_s, 2), loss_first=round(first.loss, 6),
                   loss_second=round(second.loss, 6), grad_norm=round(first.grad_norm, 5),
                   step_s=round(second.train_s, 3))
    if not (math.isfinite(first.grad_norm) and first.grad_norm > 0 and math.isfinite(second.loss)):
        raise AssertionError(f"grad norm {first.grad_norm}, second loss {second.loss}")
    plain = s.plain_grad_norm.get(family)
    if plain is not None:  # the same weights and batch as the learner check's device step
        figures["grad_norm_plain_step"] = round(plain, 5)
        if not GRAD_NORM_RATIO[0] <= first.grad_norm / plain <= GRAD_NORM_RATIO[1]:
            raise AssertionError(f"ZeRO-2 gradient norm {first.grad_norm:.5g} against the plain step's {plain:.5g}")


def check_generation(s: Setting, family: ModelFamily, figures: dict[str, Any]) -> None:
    from grit_ray.data.rows import RowStream
    from grit_ray.workers.rollout import HFGenerator, PromptRequest

    cfg = config_for(s, family, s.device, "rollout.backend=hf", "rollout.max_new_tokens=48",
                     "rollout.hf_batch_size=16")
    gen = HFGenerator(cfg, str(s.models[family]))
    rows = list(RowStream([DataSource(path=str(s.data), images=str(s.data.parent / "images"))]))
    sampled = [PromptRequest(row, group_id=i, n=4) for i, row in enumerate(rows[:4])]
    list(gen.stream(sampled[:1]))  # warm-up: kernels, caches
    _sync(s.device)
    started = time.perf_counter()
    tokens = sum(len(c.token_ids) for *_, c in gen.stream(sampled))
    _sync(s.device)
    figures["sampled_tokens_per_s"] = round(tokens / (time.perf_counter() - started), 1)
    figures["sampled_tokens"] = tokens
    greedy = [PromptRequest(row, group_id=i, n=1) for i, row in enumerate(rows)]
    batched = {r.group_id: c.token_ids for r, _, _, c in gen.stream(greedy, greedy=True)}
    gen.cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"hf_batch_size": 1})})
    alone = {r.group_id: c.token_ids for r, _, _, c in gen.stream(greedy, greedy=True)}
    figures["greedy_batched_equal_share"] = round(sum(batched[g] == alone[g] for g in alone) / len(alone), 3)
    if tokens == 0 or len(batched) != len(greedy):
        raise AssertionError(f"{tokens} sampled tokens, {len(batched)} of {len(greedy)} greedy completions")


def check_colocation(s: Setting, family: ModelFamily, figures: dict[str, Any]) -> None:
    """The colocated handoff's own code on the device (workers.colocation; vLLM's sleep mode itself
    needs vLLM, which the check machine lacks): a ZeRO-2 learner offloads its states between two
    updates, and the transformers rollout worker sleeps, refuses to generate, wakes and generates
    as before. On CUDA both must free device memory; on CPU they free none and must still run."""
    require_deepspeed(figures)
    from grit_ray.data.rows import RowStream
    from grit_ray.workers.rollout import PromptRequest, RolloutWorker, WakeTag

    cfg = config_for(s, family, s.device, "learner.zero_stage=2", "learner.num_actors=1", "algorithm.kl_beta=0.04",
                     "rollout.backend=hf", "rollout.max_new_tokens=24", "learner.offload_states=true")
    samples = samples_for(s, cfg)
    learner = one_rank_learner(s, family, cfg)
    plan = plan_micro_batches(samples, 1, cfg.learner.micro_batch_size)[0]
    first = learner.train_step(plan, totals_of(samples))
    offloaded = learner.offload_states()
    reload_s = learner.reload_states()
    second = learner.train_step(plan, totals_of(samples))
    figures.update(learner_freed_mib=round(offloaded["offload_freed_gib"] * 1024, 2),
                   learner_offload_s=round(offloaded["offload_s"], 3), learner_reload_s=round(reload_s, 3))
    if not (math.isfinite(first.loss) and math.isfinite(second.loss) and second.grad_norm > 0):
        raise AssertionError(f"after offload and reload: loss {second.loss}, grad norm {second.grad_norm}")
    del learner
    worker = RolloutWorker(cfg, str(s.models[family]))
    rows = list(RowStream([DataSource(path=str(s.data), images=str(s.data.parent / "images"))]))[:2]
    requests = [PromptRequest(row, group_id=i, n=1) for i, row in enumerate(rows)]
    before = [c.completion.token_ids for c in worker.stream(requests, greedy=True)]
    slept = worker.sleep(2)
    try:
        list(worker.stream(requests, greedy=True))
        raise AssertionError("a sleeping rollout worker generated")
    except RuntimeError as e:
        if "sleep" not in str(e):
            raise
    wake_s = worker.wake(WakeTag.WEIGHTS) + worker.wake(WakeTag.KV_CACHE)
    after = [c.completion.token_ids for c in worker.stream(requests, greedy=True)]
    figures.update(engine_freed_mib=round(slept["sleep_freed_gib"] * 1024, 2), engine_wake_s=round(wake_s, 3),
                   greedy_equal_after_wake=before == after)
    if before != after:
        raise AssertionError("greedy completions changed across sleep and wake")
    if s.device == "cuda" and (offloaded["offload_freed_gib"] <= 0 or slept["sleep_freed_gib"] <= 0):
        raise AssertionError(f"on CUDA the handoff freed learner {figures['learner_freed_mib']} MiB, engine "
                             f"{figures['engine_freed_mib']} MiB")


def _ipc_receiver(inbox, outbox) -> None:
    """The second process, as vLLM's worker under ``rollout.engine_process: separate``: opens the
    pickled ``SharedBucket`` handles (CUDA IPC on a GPU, shared-memory files on CPU) with
    ``open_shared``, applies a version only when it is newer, and reports checksums of the tensors
    it reads in place."""
    from grit_ray.workers.weight_sync import open_shared

    version_now = 0
    while (msg := inbox.get()) is not None:
        version, pickled = msg
        handles = pickle.loads(pickled)
        if version <= version_now:
            outbox.put((version, "stale", {}, ""))
            continue
        sums, where = {}, ""
        for h in handles:
            for name, t in open_shared(h):
                sums[name], where = float(t.double().sum()), str(t.device)
        version_now = version
        outbox.put((version, "applied", sums, where))


def check_ipc(s: Setting, bucket_mb: float, figures: dict[str, Any]) -> None:
    import torch.multiprocessing as mp

    from grit_ray.workers.weight_sync import SharedBuckets, TensorMeta, plan_buckets

    side = int(math.sqrt(bucket_mb * 2**20 / 6))  # one fp32 and one bf16 square fill the bucket
    shapes = {"a.weight": ((side, side), torch.float32), "b.weight": ((side, side), torch.bfloat16),
              "c.bias": ((side,), torch.float32), "d.count": ((7,), torch.int64)}
    metas = [TensorMeta(n, shape, str(dt)) for n, (shape, dt) in shapes.items()]
    [bucket] = plan_buckets(metas, bucket_mb * 4)
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_ipc_receiver, args=(inbox, outbox), daemon=True)
    child.start()
    try:
        results, handoff = [], []
        for version in (1, 2, 1):
            g = torch.Generator(device="cpu").manual_seed(version)
            tensors = [(torch.randn(shape, generator=g) * 3).to(dt) if dt.is_floating_point
                       else torch.randint(0, 100, shape, generator=g) for shape, dt in shapes.values()]
            tensors = [t.to(s.device) for t in tensors]
            want = {n: float(t.double().sum()) for n, t in zip(shapes, tensors)}
            _sync(s.device)
            started = time.perf_counter()
            shared = SharedBuckets(bucket_mb * 4)  # the rollout actor's side of the worker extension
            inbox.put((version, pickle.dumps(shared.share(zip(shapes, tensors)))))
            got_version, state, sums, where = outbox.get(timeout=120)  # the buckets live until the answer
            shared.release()
            handoff.append(time.perf_counter() - started)
            results.append((version, got_version, state, where or s.device, want, sums))
        inbox.put(None)
        child.join(timeout=30)
    finally:
        if child.is_alive():
            child.kill()
    figures.update(bucket_mib=round(bucket.nbytes / 2**20, 2), handoff_s=[round(t, 4) for t in handoff],
                   receiver_device=results[0][3], states=[r[2] for r in results])
    expected_states = ["applied", "applied", "stale"]
    if [r[2] for r in results] != expected_states or any(r[0] != r[1] for r in results):
        raise AssertionError(f"states {[r[2] for r in results]}, want {expected_states}")
    if results[0][3].split(":")[0] != s.device:
        raise AssertionError(f"the receiver read the bucket on {results[0][3]}, not in place on {s.device}")
    for version, _, state, _, want, sums in results:
        if state == "applied" and any(abs(sums[n] - want[n]) > 1e-6 * max(1.0, abs(want[n])) for n in want):
            raise AssertionError(f"version {version}: checksums {sums} against {want}")


def check_planner_tiny(s: Setting, family: ModelFamily, figures: dict[str, Any]) -> None:
    from grit_ray.models.shape import model_shape

    cfg = config_for(s, family, s.device, "algorithm.kl_beta=0")
    shape = model_shape(cfg.model, adapter_for(cfg.model.family))
    samples = samples_for(s, cfg)[:cfg.learner.micro_batch_size]
    parts = loss_parts(cfg)
    model = load_model(cfg, s.device, s.dtype).train()
    batch = collate(samples, parts.encoder, parts.pad_id)
    pixels = batch.image_inputs.get("pixel_values")
    rows_patches = 0 if pixels is None else pixels.shape[0] * (shape.tile_patches or 1) // len(samples)
    seq, completion = batch.prompt_ids.shape[1] + batch.completion_ids.shape[1], batch.completion_ids.shape[1]
    measure_activations(model, lambda: backward_step(model, None, samples, cfg, parts, s.device), shape, cfg,
                        seq, completion, rows_patches, s, figures)


@dataclass(frozen=True)
class StackShape:
    width: int
    intermediate: int
    vocab: int
    seq: int
    completion: int


# Qwen2.5-VL-3B's text width and vocabulary, one 2048-token sequence with a 512-token completion;
# on CPU a small stand-in that runs the same code in seconds
STACKS = {"cuda": StackShape(2048, 11008, 151936, 2048, 512), "cpu": StackShape(256, 1024, 8192, 512, 128)}


def check_planner_stack(s: Setting, dims: StackShape, checkpointing: bool, figures: dict[str, Any]) -> None:
    """A 2-layer Qwen2 text stack of ``dims`` scoring one sequence."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grit_ray.algo.grpo import BatchTotals
    from grit_ray.models.shape import ModelShape

    heads = max(dims.width // 128, 1)
    config = Qwen2Config(hidden_size=dims.width, intermediate_size=dims.intermediate, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=max(heads // 8, 1), vocab_size=dims.vocab,
                         tie_word_embeddings=True, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(s.device, s.dtype).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    params = sum(p.numel() for p in model.parameters())
    kv = config.num_key_value_heads * (dims.width // heads)
    shape = ModelShape("synthetic stack", params, 0, dims.width, 2, dims.intermediate, dims.vocab, kv, True, 0, 0, 0)
    seq, completion = dims.seq, dims.completion
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, dims.vocab, (1, seq), generator=g)
    batch = MicroBatch(ids[:, :seq - completion], torch.ones(1, seq - completion, dtype=torch.long),
                       ids[:, seq - completion:], torch.ones(1, completion), torch.ones(1), torch.ones(1),
                       None).to(s.device)
    cfg = load_config(overrides=["algorithm.kl_beta=0", "learner.micro_batch_size=1",
                                 f"learner.gradient_checkpointing={str(checkpointing).lower()}"])
    totals, settings = BatchTotals(1.0, float(completion)), loss_settings(cfg.algorithm)

    def step():
        micro_batch_loss(model, batch, totals, settings).loss.backward()

    figures.update(width=dims.width, vocab=dims.vocab)
    measure_activations(model, step, shape, cfg, seq, completion, 0, s, figures)


def cpu_peak_bytes(step: Callable[[], Any]) -> int | None:
    """Resident bytes gained at the peak of ``step()``, on Linux: the kernel's high-water mark
    (VmHWM), reset to the current size first (``clear_refs`` 5). Blocks of 64 KiB and more are
    mmapped (glibc's ``mallopt``), so what the step frees leaves the resident set at once instead of
    staying in malloc's heap for reuse. None where either is missing."""
    import ctypes
    import gc

    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not status.exists() or not libc.mallopt(-3, 64 * 1024):  # M_MMAP_THRESHOLD; 0 means refused
        return None

    def kib(field: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1])

    gc.collect()
    libc.malloc_trim(0)  # free heap pages back to the kernel: the step must not reuse resident ones
    try:
        clear.write_text("5")
    except OSError:
        return None
    base = kib("VmRSS")
    step()
    return (kib("VmHWM") - base) * 1024


def measure_activations(model, step: Callable[[], Any], shape, cfg: GritConfig, seq: int, completion: int,
                        patches: int, s: Setting, figures: dict[str, Any]) -> None:
    """The planner's ``activation_bytes`` for this micro-batch against the allocator's peak over
    ``step`` (forward and backward) less the weights and the gradients it leaves."""
    from grit_ray.trainer.memory_plan import activation_bytes

    w = torch.tensor([], dtype=s.dtype).element_size()
    estimate = activation_bytes(shape, cfg, w, seq, completion, patches)
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    figures.update(seq=seq, completion=completion, vision_patches=patches,
                   estimate_mib=round(estimate / 2**20, 2), gradients_mib=round(grads / 2**20, 2))
    step()  # warm-up: one-time allocations (kernel workspaces, thread pools) are not the step's
    model.zero_grad(set_to_none=True)  # the measured step allocates its gradients again
    if s.device == "cuda":
        figures["measured_by"] = "cuda allocator"
        _sync(s.device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        _sync(s.device)
        peak: int | None = torch.cuda.max_memory_allocated() - base
    else:  # the CPU allocator keeps no peak: the kernel's high-water mark does
        peak = cpu_peak_bytes(step)
        figures["measured_by"] = "rss high-water" if peak is not None else None
    if peak is None:
        figures["measured_mib"] = None
        return
    measured = peak - grads
    figures.update(measured_mib=round(measured / 2**20, 2), estimate_over_measured=round(estimate / measured, 3))


# ---------------------------------------------------------------------------------------- driver

def environment(device: str) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "machine": platform.machine(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        import deepspeed

        env["deepspeed"] = deepspeed.__version__
    except ImportError:
        env["deepspeed"] = None
    return env


def plan_checks(s: Setting, args) -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    wanted = set(args.only.split(",")) if args.only else None
    checks: list[tuple[str, Callable[[dict[str, Any]], None]]] = []
    for family in FAMILIES:
        f = family.value
        checks += [(f"learner_{f}", lambda fig, fam=family: check_learner(s, fam, args.steps, fig)),
                   (f"deepspeed_{f}", lambda fig, fam=family: check_deepspeed(s, fam, fig)),
                   (f"generation_{f}", lambda fig, fam=family: check_generation(s, fam, fig)),
                   (f"colocation_{f}", lambda fig, fam=family: check_colocation(s, fam, fig)),
                   (f"planner_{f}", lambda fig, fam=family: check_planner_tiny(s, fam, fig))]
    checks.append(("ipc_handoff", lambda fig: check_ipc(s, args.bucket_mb, fig)))
    for ckpt in (False, True):
        checks.append((f"planner_stack{'_checkpointed' if ckpt else ''}",
                       lambda fig, c=ckpt: check_planner_stack(s, STACKS[s.device], c, fig)))
    return [(n, fn) for n, fn in checks if wanted is None or n.split("_")[0] in wanted or n in wanted]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16",
                    help="the device step's dtype (compared with fp32 on CPU)")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--steps", type=int, default=3, help="timed learner steps")
    ap.add_argument("--bucket-mb", type=float, default=64.0, help="IPC handoff bucket size (MiB)")
    ap.add_argument("--only", default="", help="comma-separated check names or kinds (learner, deepspeed, "
                    "generation, colocation, planner, ipc); default: all")
    ap.add_argument("--work", type=Path, default=None, help="where the tiny models go (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        s = Setting(args.device, getattr(torch, args.dtype), args.work or Path(tmp))
        report: dict[str, Any] = {"environment": environment(args.device), "checks": []}
        prepare(s)
        for name, fn in plan_checks(s, args):
            report["checks"].append(run_check(name, fn).__dict__)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))  # what ran so far survives a kill
    # the GPU machine has neither: the check must not need them (CI asserts this list is empty)
    report["environment"]["imported_ray_or_vllm"] = sorted(m for m in ("ray", "vllm") if m in sys.modules)
    counts = {k: sum(c["status"] == k for c in report["checks"]) for k in ("ok", "failed", "skipped")}
    report["summary"] = {**counts, "seconds": round(time.perf_counter() - started, 1)}
    args.out.write_text(json.dumps(report, indent=1))
    print(f"[gpu-check] {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in "
          f"{report['summary']['seconds']:.0f}s; report: {args.out}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
