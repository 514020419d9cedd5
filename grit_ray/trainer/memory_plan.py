"""The memory planner: what each GPU of a config holds, estimated from the model's shape (pure).

Estimates, per learner rank and per rollout engine, in bytes (docs/cluster.md, "Memory plan"):
- weights: every parameter in the model dtype (ZeRO-3: this rank's shard plus the gathered layers);
- gradients: the rank's shard in the model dtype, and its fp32 copy at the optimizer step
  (DeepSpeed ZeRO-1/2 flattens the shard to fp32 before Adam);
- optimizer: the fp32 master shard and Adam's two moments (12 bytes per trainable parameter / ranks);
- buckets: ZeRO-2's gradient reduce buffer (DeepSpeed's default 5e8 elements, two with overlap_comm);
- reference: the frozen reference model when algorithm.kl_beta > 0 (whole under ZeRO-2, a shard under 3);
- activations: one micro-batch at the config's longest sequence, with or without gradient
  checkpointing, plus the completion logits and their fp32 log-softmax;
- the engine: vLLM claims ``rollout.gpu_memory_utilization`` of the GPU; weights and a profiling
  peak come out of it and the rest is KV cache. The transformers backend (``rollout.backend: hf``)
  claims nothing up front: its weights, and the KV cache of one ``generate`` call of
  ``rollout.hf_batch_size`` sequences at the longest length.
- colocation (``GritConfig.colocation``): a GPU whose engine sleeps while its learner trains, and
  whose learner offloads its states while the engine generates, peaks in one of the two phases:
  training (the learner whole, the engine's residue) or generating (the engine's claim, the
  learner's bf16 weights and buckets). Without sleep and offload both are resident at once.
The constants are per-token tensor counts of a SwiGLU decoder block as transformers runs it; they are
an estimate: on CPU the activation term is within 0.9-1.4x of the measured resident peak
(bench/gpu_check.py's planner rows; docs/cluster.md), and it has not been compared with a GPU
allocator yet.

A CUDA run checks its plan before it starts any actor (``start_problems``), and the driver checks the
cluster's GPU count before it places the actors (``trainer.placement.gpu_shortfall``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from grit_ray.config import Device, EngineSleep, GritConfig, ZeroStage
from grit_ray.models.shape import ModelShape
from grit_ray.workers.hardware import resolve_dtype
from grit_ray.workers.learner import deepspeed_config

GIB = 1024**3
DS_REDUCE_BUCKET = 500_000_000  # DeepSpeed's reduce_bucket_size default (elements)
CUDA_CONTEXT = int(0.6 * GIB)  # per process, outside the caching allocator
ENGINE_PROFILE_PEAK = int(1.5 * GIB)  # vLLM's profiling run and sampler at its default token budget
HEADROOM = 0.05  # allocator fragmentation: plan to at most 95% of a GPU
ENGINE_ASLEEP = int(0.5 * GIB)  # what a sleeping engine keeps: CUDA graphs, sampler and scheduler buffers


@dataclass(frozen=True)
class LearnerMemory:
    """One learner rank, bytes."""

    weights: int
    gradients: int
    optimizer: int
    buckets: int
    reference: int
    activations: int

    offloaded: int | None = None  # between updates, with learner.offload_states; None: never offloaded

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.buckets + self.reference + self.activations

    def offloaded_view(self, zero3: bool) -> LearnerMemory:
        """The same rank with what ``PolicyLearner.offload_states`` keeps on the device between updates:
        the bf16 weights (the sync reads them), the reduce buckets, and a ZeRO-3 reference shard."""
        kept = self.weights + self.buckets + (self.reference if zero3 else 0)
        return LearnerMemory(self.weights, self.gradients, self.optimizer, self.buckets, self.reference,
                             self.activations, offloaded=kept)


@dataclass(frozen=True)
class EngineMemory:
    """One vLLM engine, bytes: ``reserved`` is what it claims; weights and the profile peak come out of it."""

    reserved: int
    weights: int
    profile_peak: int
    kv_cache: int
    kv_tokens: int  # tokens of KV cache (prompt + completion of every sequence in flight)


@dataclass(frozen=True)
class GpuLoad:
    """What one kind of GPU in the placement holds."""

    label: str
    count: int  # GPUs of this kind
    learners: int  # learner ranks per GPU
    engines: int  # rollout engines per GPU
    learner: LearnerMemory | None
    engine: EngineMemory | None
    engines_sleep: bool = False  # rollout.sleep: the engines free their claim while the learners train

    def _phase(self, learner: int | None, engine: int | None) -> int:
        own = self.learners * (learner or 0) + self.engines * (engine or 0)
        return own + (self.learners + self.engines) * CUDA_CONTEXT

    @property
    def training(self) -> int:
        """Bytes while the learners update."""
        claim = self.engine.reserved if self.engine else None
        return self._phase(self.learner.total if self.learner else None,
                           ENGINE_ASLEEP if self.engines_sleep and claim else claim)

    @property
    def generating(self) -> int:
        """Bytes while the engines generate."""
        m = self.learner
        kept = None if m is None else (m.offloaded if m.offloaded is not None else m.total)
        return self._phase(kept, self.engine.reserved if self.engine else None)

    @property
    def total(self) -> int:
        return max(self.training, self.generating)

    @property
    def hands_over(self) -> bool:
        """Learners and engines take turns with this GPU's memory."""
        return bool(self.learners and self.engines and (self.engines_sleep or
                                                        (self.learner and self.learner.offloaded is not None)))


@dataclass
class MemoryPlan:
    shape: ModelShape
    gpu_bytes: int | None  # memory of each GPU; None: unknown (nothing checked against it)
    gpus_needed: int
    gpus_available: int | None
    loads: list[GpuLoad]
    problems: list[str] = field(default_factory=list)
    colocation: list[str] = field(default_factory=list)  # what the handoff does, and on which device


def sequence_lengths(cfg: GritConfig, max_prompt_tokens: int) -> tuple[int, int]:
    """(longest prompt + completion, longest completion) the learner scores, in tokens."""
    completion = cfg.rollout.max_new_tokens
    return min(max_prompt_tokens + completion, cfg.rollout.max_model_len), completion


def activation_bytes(shape: ModelShape, cfg: GritConfig, w: int, seq: int, completion: int,
                     vision_patches: int) -> int:
    """One micro-batch's forward activations kept for backward, plus the logits path. Under a token
    budget, as many rows of the longest length (``seq``) as the budget holds, at least one."""
    budget = cfg.learner.max_tokens_per_micro_batch
    mb = cfg.learner.micro_batch_size if budget is None else max(1, budget // seq)
    # per token per block: ~9 hidden-wide and 4 intermediate-wide tensors in the model dtype, and
    # RMSNorm's two fp32 upcasts (16 bytes per hidden unit)
    block = w * (9 * shape.hidden + 3 * shape.kv_dim + 4 * shape.intermediate) + 16 * shape.hidden
    vision_block = w * (9 * shape.vision_hidden + 4 * shape.vision_intermediate) + 16 * shape.vision_hidden
    if cfg.learner.gradient_checkpointing:  # each block's input, and one block recomputed at a time
        text = mb * seq * (shape.layers * w * shape.hidden + block)
        vision = mb * vision_patches * (shape.vision_layers * w * shape.vision_hidden + vision_block)
    else:
        text = mb * seq * shape.layers * block
        vision = mb * vision_patches * shape.vision_layers * vision_block
    # completion logits (model dtype), their fp32 log-softmax and entropy, and the fp32 gradient
    logits = mb * completion * shape.vocab * (w + 3 * 4)
    return text + vision + logits


def learner_memory(shape: ModelShape, cfg: GritConfig, seq: int, completion: int, vision_patches: int,
                   w: int) -> LearnerMemory:
    ranks = cfg.learner.num_actors
    trainable = shape.params - (shape.vision_params if cfg.learner.freeze_vision_tower else 0)
    zero3 = cfg.learner.zero_stage is ZeroStage.ZERO3
    if zero3:
        per_layer = (shape.params - shape.vision_params - shape.vocab * shape.hidden) // max(shape.layers, 1)
        gathered = (2 * per_layer + shape.vocab * shape.hidden) * w  # prefetched layers, the embedding
        weights = shape.params * w // ranks + min(gathered, shape.params * w)
        buckets = 0
    else:
        weights = shape.params * w
        device = "cuda" if cfg.model.device is Device.CUDA else "cpu"
        overlap = deepspeed_config(cfg, ranks, device)["zero_optimization"]["overlap_comm"]
        buffers = 2 if overlap else 1  # overlap_comm keeps a second bucket in flight
        buckets = min(DS_REDUCE_BUCKET, trainable) * w * buffers
    gradients = trainable * (w + 4) // ranks
    optimizer = trainable * 12 // ranks
    reference = 0
    if cfg.algorithm.kl_beta > 0:
        reference = shape.params * w // ranks if zero3 else shape.params * w
    return LearnerMemory(weights, gradients, optimizer, buckets, reference,
                         activation_bytes(shape, cfg, w, seq, completion, vision_patches))


def hf_generator_memory(shape: ModelShape, cfg: GritConfig, seq: int, w: int) -> EngineMemory:
    """The transformers backend claims no share up front: its weights, and the KV cache and logits
    of one ``generate`` call of ``rollout.hf_batch_size`` sequences at the longest length."""
    rows = cfg.rollout.hf_batch_size
    weights = shape.params * w
    kv = rows * seq * shape.kv_bytes_per_token * w
    logits = rows * shape.vocab * 4 * 2  # the last position's fp32 logits and their softmax
    return EngineMemory(weights + kv + logits, weights, logits, kv, rows * seq)


def engine_memory(shape: ModelShape, cfg: GritConfig, gpu_bytes: int, w: int) -> EngineMemory:
    reserved = int(cfg.rollout.gpu_memory_utilization * gpu_bytes)
    weights = shape.params * w
    kv = max(reserved - weights - ENGINE_PROFILE_PEAK, 0)
    return EngineMemory(reserved, weights, ENGINE_PROFILE_PEAK, kv, kv // (shape.kv_bytes_per_token * w))


def per_gpu(share: float) -> int:
    """Actors of one kind that fit on a GPU at ``share`` GPUs each (Ray packs fractions)."""
    return max(1, math.floor(1.0 / share + 1e-9)) if share > 0 else 0


def plan_memory(cfg: GritConfig, shape: ModelShape, max_prompt_tokens: int, vision_patches: int,
                gpu_gib: float | None = None, gpus: int | None = None) -> MemoryPlan:
    """The per-GPU estimate of ``cfg`` and what cannot fit or be placed (naming the fields and a fix).
    ``gpu_gib`` and ``gpus`` default to ``resources.gpu_memory_gib`` and ``resources.cluster_gpus``."""
    from grit_ray.trainer.placement import gpus_requested

    r = cfg.resources
    gpu_gib = gpu_gib if gpu_gib is not None else r.gpu_memory_gib
    gpus = gpus if gpus is not None else r.cluster_gpus
    gpu_bytes = int(gpu_gib * GIB) if gpu_gib else None
    w = 4 if resolve_dtype(cfg.model.dtype, "cuda" if cfg.model.device is Device.CUDA else "cpu") == "float32" else 2
    seq, completion = sequence_lengths(cfg, max_prompt_tokens)
    learner = learner_memory(shape, cfg, seq, completion, vision_patches, w)
    vllm = cfg.rollout.backend.value == "vllm"
    if vllm:  # its claim is a share of the GPU: unknown without the GPU's size
        engine = engine_memory(shape, cfg, gpu_bytes, w) if gpu_bytes else None
    else:
        engine = hf_generator_memory(shape, cfg, seq, w)
    colocation = cfg.colocation()
    n_learn, n_roll = cfg.learner.num_actors, cfg.rollout.num_workers
    gl, gr = r.gpus_per_learner, r.gpus_per_rollout_worker
    loads: list[GpuLoad] = []
    if r.colocate and gl + gr > 0:
        each = per_gpu(gl + gr)
        shared = learner.offloaded_view(cfg.learner.zero_stage is ZeroStage.ZERO3) if colocation.offload_ranks \
            else learner
        sleeps = colocation.sleep is not EngineSleep.OFF
        loads.append(GpuLoad("learner + engine", math.ceil(n_roll / each), each, each, shared, engine, sleeps))
        if n_learn > n_roll:
            loads.append(GpuLoad("learner", math.ceil((n_learn - n_roll) / each), each, 0, learner, None))
    else:
        if gl > 0:
            loads.append(GpuLoad("learner", math.ceil(n_learn / per_gpu(gl)), per_gpu(gl), 0, learner, None))
        if gr > 0:
            loads.append(GpuLoad("engine", math.ceil(n_roll * gr) if gr > 1 else math.ceil(n_roll / per_gpu(gr)),
                                 0, per_gpu(gr), None, engine))
    needed = math.ceil(gpus_requested(cfg) - 1e-9)
    out = MemoryPlan(shape, gpu_bytes, needed, gpus, loads, colocation=colocation.lines())
    if gpus is not None and needed > gpus:
        out.problems.append(
            f"resources: the actors need {needed} GPUs (learner.num_actors {n_learn} x resources.gpus_per_learner "
            f"{gl:g} + rollout.num_workers {n_roll} x resources.gpus_per_rollout_worker {gr:g}) but the cluster "
            f"has {gpus} (resources.cluster_gpus); lower learner.num_actors or rollout.num_workers, or colocate")
    if gpu_bytes:
        budget = gpu_bytes * (1 - HEADROOM)
        for load in loads:
            if load.total > budget:
                hand_over = "" if load.hands_over else ("turn on rollout.sleep and learner.offload_states (engine and "
                                                        "learner take turns), or ")
                fix = (f"{hand_over}lower rollout.gpu_memory_utilization, or resources.colocate: false with whole "
                       "GPUs" if load.engines and load.learners else
                       "turn on learner.gradient_checkpointing, lower learner.micro_batch_size, or use "
                       "learner.zero_stage: 3 over more ranks")
                out.problems.append(f"{load.label}: about {load.total / GIB:.1f} GiB on a {gpu_gib:g} GiB GPU "
                                    f"(resources.gpu_memory_gib; {1 - HEADROOM:.0%} usable): {fix}")
        if vllm and engine is not None and engine.kv_tokens < cfg.rollout.max_model_len:
            out.problems.append(
                f"rollout.gpu_memory_utilization: {cfg.rollout.gpu_memory_utilization:g} of {gpu_gib:g} GiB leaves "
                f"KV cache for {engine.kv_tokens} tokens, under rollout.max_model_len {cfg.rollout.max_model_len} "
                "(vLLM refuses to start); raise it")
    return out


def plan_for_config(cfg: GritConfig, gpu_gib: float | None = None, gpus: int | None = None) -> MemoryPlan:
    """``plan_memory`` with the model's shape and image size read for ``cfg`` (``models.shape``)."""
    from grit_ray.models import adapter_for, max_prompt_tokens
    from grit_ray.models.shape import model_shape, vision_patches

    shape = model_shape(cfg.model, adapter_for(cfg.model.family))
    return plan_memory(cfg, shape, max_prompt_tokens(cfg), vision_patches(cfg.model, shape), gpu_gib, gpus)


def format_plan(plan: MemoryPlan) -> str:
    """The planner's table, as ``grit-ray plan`` prints it."""
    s = plan.shape
    g = lambda b: f"{b / GIB:.1f}"  # noqa: E731
    lines = [f"model: {s.params / 1e9:.2f} B parameters ({s.vision_params / 1e6:.0f} M vision), "
             f"{s.layers} layers x {s.hidden} wide, vocabulary {s.vocab}; from {s.source}",
             f"GPUs: {plan.gpus_needed} needed, " + (f"{plan.gpus_available} in the cluster" if plan.gpus_available
                                                      is not None else "cluster size not given"),
             "", "| GPUs | holds | weights | grads | optimizer | buckets | reference | activations | engine "
                 "(KV tokens) | total GiB | of |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    cap = g(plan.gpu_bytes) if plan.gpu_bytes else "?"
    for load in plan.loads:
        m = load.learner
        learner = [g(x) for x in (m.weights, m.gradients, m.optimizer, m.buckets, m.reference, m.activations)] \
            if m and load.learners else ["-"] * 6
        eng = (f"{g(load.engine.reserved)} ({load.engine.kv_tokens})" if load.engine
               else ("? (give --gpu-memory)" if load.engines else "-"))
        what = " + ".join(x for x in (f"{load.learners} learner" if load.learners else "",
                                      f"{load.engines} engine" if load.engines else "") if x)
        lines.append(f"| {load.count} | {what} | " + " | ".join(learner) + f" | {eng} | {g(load.total)} | {cap} |")
    lines.append("")
    for load in plan.loads:
        if load.hands_over:  # the peak is one of two phases: say both
            lines.append(f"{load.label}: training {g(load.training)} GiB (engine asleep: rollout.sleep), "
                         f"generating {g(load.generating)} GiB (learner states offloaded: learner.offload_states)")
    lines += [f"colocation: {line}" for line in plan.colocation]
    lines.append("")
    lines += [f"problem: {p}" for p in plan.problems] or ["fits" if plan.gpu_bytes else
                                                          "not checked against a GPU size (--gpu-memory)"]
    return "\n".join(lines)


def start_problems(cfg: GritConfig) -> list[str]:
    """What the memory plan refuses for a CUDA run whose hardware the config names
    (``resources.gpu_memory_gib`` or ``cluster_gpus``); nothing on CPU or when neither is given."""
    r = cfg.resources
    if cfg.model.device is not Device.CUDA or (r.gpu_memory_gib is None and r.cluster_gpus is None):
        return []
    return plan_for_config(cfg).problems
