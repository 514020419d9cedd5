"""One data-parallel learner rank: a DeepSpeed engine over the policy, the frozen reference model,
and the GRPO-GR loss from ``algo.grpo``. Plain class; ``learner_group`` wraps it in Ray actors.

Gradient accumulation: the rank runs its micro-batches with DeepSpeed's explicit accumulation
boundary, so the micro-batch count may vary from step to step (dropped groups); the loss of each
micro-batch is already its share of the global batch (``BatchTotals``), so DeepSpeed's own
division by the accumulation steps is turned off and its mean over ranks is undone by scaling the
loss by the world size.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from grit_ray.algo.experience import TrainSample, collate, micro_batch_loss
from grit_ray.algo.grpo import BatchTotals, loss_settings
from grit_ray.algo.stats import LearnerStats
from grit_ray.config import GritConfig, ZeroStage
from grit_ray.models import adapter_for
from grit_ray.models.files import copy_side_files
from grit_ray.schedules import warmup_cosine
from grit_ray.workers.hardware import (
    apply_env,
    cuda_device_index,
    deepspeed_env,
    limit_threads,
    resolve_comm_backend,
    resolve_device,
    resolve_dtype,
)
from grit_ray.workers.weight_sync import Bucket, TensorMeta, pack_into, plan_buckets

R = TypeVar("R")


def deepspeed_config(cfg: GritConfig, world_size: int, device: str) -> dict[str, Any]:
    """The DeepSpeed config dict for the policy engine, from the typed config (pure)."""
    lc = cfg.learner
    per_rank = cfg.algorithm.completions_per_step // world_size
    zero: dict[str, Any] = {"stage": int(lc.zero_stage), "contiguous_gradients": True, "overlap_comm": device == "cuda"}
    if lc.zero_stage is ZeroStage.ZERO3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # we gather bucket by bucket ourselves
    return {
        "train_micro_batch_size_per_gpu": lc.micro_batch_size,
        "gradient_accumulation_steps": max(per_rank // lc.micro_batch_size, 1),
        "train_batch_size": max(per_rank // lc.micro_batch_size, 1) * lc.micro_batch_size * world_size,
        "gradient_clipping": lc.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": resolve_dtype(cfg.model.dtype, device) == "bfloat16"},
        "zero_allow_untested_optimizer": True,  # torch AdamW: no JIT-compiled optimizer op needed
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps`` (or constant)."""
    return warmup_cosine(step, warmup_steps=warmup_steps, total_steps=total_steps, decay_from=warmup_steps,
                         constant=schedule == "constant")


def move_zero3_optimizer_states(zero3_optimizer, device: str) -> None:
    """The fp32 master partitions and Adam's moments of a ZeRO-3 rank to ``device``. DeepSpeed 0.19's
    ``offload_states`` moves these only for its own FusedAdam (a CUDA op) and refuses torch's AdamW,
    whose state is the same tensors by name; the step counters stay where torch keeps them."""
    for flat in zero3_optimizer.fp32_partitioned_groups_flat:
        flat.data = flat.data.to(device)
    for state in zero3_optimizer.optimizer.state.values():
        for key, value in state.items():
            if key != "step" and torch.is_tensor(value):
                value.data = value.data.to(device)


def _ray_gpu_ids() -> list:
    """The GPUs Ray assigned to this actor; none outside Ray (bench/gpu_check.py runs a rank alone)."""
    try:
        import ray
    except ImportError:
        return []
    return ray.get_gpu_ids() if ray.is_initialized() else []


class PolicyLearner:
    """One rank of the data-parallel learner. All ranks must call the collective methods
    (``train_step``, ``gathered_buckets``, ``save_*``, ``load_checkpoint``) together."""

    def __init__(self, cfg: GritConfig, model_path: str, rank: int, world_size: int, master_addr: str,
                 master_port: int):
        started = time.perf_counter()
        self.cfg, self.rank, self.world_size, self.model_path = cfg, rank, world_size, model_path
        self.device = resolve_device(cfg.model.device)
        self.dtype = getattr(torch, resolve_dtype(cfg.model.dtype, self.device))
        apply_env(deepspeed_env(self.device))
        self.cuda_index = 0
        if self.device == "cuda":
            # the GPU Ray gave this actor, whether or not Ray narrowed CUDA_VISIBLE_DEVICES to it
            gpu_ids = _ray_gpu_ids()
            self.cuda_index = cuda_device_index(gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"))
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size),
                          LOCAL_RANK=str(self.cuda_index) if self.device == "cuda" else str(rank))
        limit_threads(cfg.resources.actor_threads)
        import deepspeed
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.integrations import HfDeepSpeedConfig

        if self.device == "cpu" and not cfg.learner.cpu_shm_allreduce:
            # The shared-memory allreduce kernel JIT-compiles for 26-42 s; gloo does the job without it.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend=resolve_comm_backend(cfg.learner.comm_backend, self.device),
                                   auto_mpi_discovery=False, verbose=False)
        if self.device == "cuda":
            torch.cuda.set_device(self.cuda_index)
        torch.manual_seed(cfg.run.seed)
        self.ds_config = deepspeed_config(cfg, world_size, self.device)
        self.zero3 = cfg.learner.zero_stage is ZeroStage.ZERO3
        # ZeRO-3: transformers partitions weights at load time only while this object is alive.
        self._hf_ds = HfDeepSpeedConfig(self.ds_config) if self.zero3 else None

        def load():
            return AutoModelForImageTextToText.from_pretrained(model_path, dtype=self.dtype,
                                                               trust_remote_code=cfg.model.trust_remote_code)

        model = load()
        adapter = self.adapter = adapter_for(cfg.model.family)
        if cfg.learner.freeze_vision_tower and (tower := adapter.vision_tower(model)) is not None:
            tower.requires_grad_(False)
        if cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learner.lr, betas=tuple(cfg.learner.adam_betas),
                                      eps=cfg.learner.adam_eps, weight_decay=cfg.learner.weight_decay)
        total, warm, sched = cfg.run.steps, cfg.learner.warmup_steps, cfg.learner.lr_schedule

        def make_scheduler(opt):
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, warm, total, sched))

        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=make_scheduler, config=self.ds_config)

        self.reference = None
        if cfg.algorithm.kl_beta > 0:  # beta = 0: no reference model at all
            ref = load().eval().requires_grad_(False)
            if self.zero3:
                ref_config = {k: self.ds_config[k] for k in ("train_micro_batch_size_per_gpu", "bf16")}
                ref_config["zero_optimization"] = {"stage": 3}
                self.reference = deepspeed.initialize(model=ref, config=ref_config)[0]
            else:
                self.reference = ref.to(self.device)

        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
        self.encoder = adapter.prompt_encoder(processor, cfg.model)
        self.pad_id = processor.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = processor.tokenizer.eos_token_id
        alg = cfg.algorithm
        self.loss_settings = loss_settings(alg)
        # one-step-off: completions come from the weights before the last update, so the ratio is
        # taken against the log-probs of the policy that sampled them (docs/training.md)
        self.behaviour_ratio = alg.max_staleness > 0
        self.temperature = cfg.rollout.temperature if alg.scale_logits_by_temperature else 1.0
        # the rollout engines never sample vision placeholders; score the same distribution
        self.suppressed = torch.tensor(adapter.forbidden_token_ids(processor.tokenizer), dtype=torch.long)
        self.step = 0
        self.offloaded = False  # states in host memory between updates (learner.offload_states)
        # Start-up leaves about 550,000 long-lived objects (torch, transformers, DeepSpeed; measured
        # for the tiny model outside Ray). DeepSpeed's offload_states runs two full gc.collect() over
        # them per call, 0.27 s each on CPU; frozen into the permanent generation, the offload takes
        # 2 ms (docs/cluster.md, "Colocation").
        gc.collect()
        gc.freeze()
        self.startup_s = time.perf_counter() - started

    # ------------------------------------------------------------------ training

    def train_step(self, chunks: list[list[TrainSample]], totals: BatchTotals) -> LearnerStats:
        """One optimizer step over this rank's micro-batches (``algo.micro_batching``; every rank runs as
        many). Returns this rank's sums (the group reduces them)."""
        self.reload_states()  # the handoff reloads first and times it; a no-op then
        started = time.perf_counter()
        self.engine.train()
        stats = LearnerStats()
        for i, chunk in enumerate(chunks):
            batch = collate(chunk, self.encoder, self.pad_id).to(self.device)
            self.engine.set_gradient_accumulation_boundary(i == len(chunks) - 1)
            out = micro_batch_loss(self.engine, batch, totals, self.loss_settings, reference=self.reference,
                                   temperature=self.temperature, suppressed=self.suppressed, adapter=self.adapter,
                                   behaviour_ratio=self.behaviour_ratio, where=chunk[0].where)
            stats.entropy_mean = (stats.entropy_mean or 0.0) + out.entropy_sum
            # DeepSpeed averages gradients over ranks; the loss is already this micro-batch's share.
            self.engine.backward(out.loss * self.world_size, scale_wrt_gas=False)
            stats.loss += float(out.loss.detach())
            stats.accumulate(out.metrics)
        stats.lr = float(self.scheduler.get_last_lr()[0])  # the rate this step applies
        self.engine.step()
        self.encoder.clear()
        self.step += 1
        grad_norm = self.engine.get_global_grad_norm()
        stats.grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        stats.micro_batches = float(len(chunks))
        stats.train_s = time.perf_counter() - started
        return stats

    # ------------------------------------------------------------------ colocation

    def _device_bytes(self) -> int:
        return torch.cuda.memory_reserved(self.cuda_index) if self.device == "cuda" else 0

    def offload_states(self) -> dict[str, float]:
        """Move what only the update needs to host memory: the fp32 master weights, Adam's moments,
        the gradient partitions (DeepSpeed's ``offload_states``) and a ZeRO-2 reference model; then
        empty the CUDA cache so a colocated engine can claim it. The bf16 weights stay: the weight
        sync reads them. Returns the seconds and the device memory freed (GiB; 0 on CPU)."""
        if self.offloaded:
            return {"offload_s": 0.0, "offload_freed_gib": 0.0}
        from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum, OffloadStateTypeEnum

        started, before = time.perf_counter(), self._device_bytes()
        states = [OffloadStateTypeEnum.lp_grads, OffloadStateTypeEnum.contiguous_grad_buffer]
        if self.zero3:
            move_zero3_optimizer_states(self.engine.optimizer, "cpu")
        else:
            states += [OffloadStateTypeEnum.optim_states, OffloadStateTypeEnum.hp_params]
        # pinned host buffers make the reload fast on a GPU; on CPU there is nothing to pin for
        self.engine.offload_states(include=states, device=OffloadDeviceEnum.cpu, pin_memory=self.device == "cuda")
        if self.reference is not None and not self.zero3:  # ZeRO-3's reference is a shard, left in place
            self.reference.to("cpu")
        if self.device == "cuda":
            torch.cuda.empty_cache()
        self.offloaded = True
        return {"offload_s": time.perf_counter() - started,
                "offload_freed_gib": (before - self._device_bytes()) / 1024**3}

    def reload_states(self) -> float:
        """Undo ``offload_states`` before an update; returns the seconds it took."""
        if not self.offloaded:
            return 0.0
        started = time.perf_counter()
        self.engine.reload_states()
        if self.zero3:
            move_zero3_optimizer_states(self.engine.optimizer, self.device)
        if self.reference is not None and not self.zero3:
            self.reference.to(self.device)
        self.offloaded = False
        return time.perf_counter() - started

    @contextmanager
    def _states_resident(self) -> Iterator[None]:
        """Checkpoints read and write the optimizer state where DeepSpeed expects it: reloaded for
        the call, offloaded again after it when they were."""
        was = self.offloaded
        self.reload_states()
        try:
            yield
        finally:
            if was:
                self.offload_states()

    # ------------------------------------------------------------------ weights out

    def weight_plan(self, bucket_mb: float, trainable_only: bool = False) -> list[Bucket]:
        """Buckets of (name, full shape, dtype); identical on every rank. ``trainable_only`` leaves
        out frozen parameters (weight sync does not re-send what never changes)."""
        metas = [TensorMeta(n, tuple(p.ds_shape if hasattr(p, "ds_shape") else p.shape), str(p.dtype))
                 for n, p in self.engine.module.named_parameters() if p.requires_grad or not trainable_only]
        return plan_buckets(metas, bucket_mb)

    def _each_gathered(self, plan: list[Bucket], take: Callable[[Bucket, list[torch.nn.Parameter]], R]) -> Iterator[R]:
        """``take(bucket, params)`` for each bucket while its parameters are gathered: under ZeRO-3
        one collective per bucket (all ranks iterate together), released before the result is
        handed on, so no rank ever holds the whole model twice."""
        import deepspeed

        params = dict(self.engine.module.named_parameters())
        for bucket in plan:
            group = [params[m.name] for m in bucket.tensors]
            with deepspeed.zero.GatheredParameters(group, enabled=self.zero3):
                out = take(bucket, group)
            yield out

    def gathered_buckets(self, plan: list[Bucket], device: str = "cpu",
                         rank0_only: bool = True) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Full parameters bucket by bucket, copied to ``device``. Other ranks get empty buckets
        when ``rank0_only``."""
        keep = self.rank == 0 or not rank0_only
        return self._each_gathered(plan, lambda bucket, group: (
            [(m.name, p.detach().to(device, copy=True)) for m, p in zip(bucket.tensors, group)] if keep else []))

    def packed_buckets(self, plan: list[Bucket], device: str) -> Iterator[torch.Tensor | None]:
        """Each bucket as one flat byte buffer on rank 0 (None elsewhere), copied straight out of the
        gathered parameters: one copy per byte, no intermediate tensors."""
        return self._each_gathered(plan, lambda bucket, group: (
            pack_into(group, bucket, device) if self.rank == 0 else None))

    def save_hf_model(self, out_dir: str | Path, bucket_mb: float = 512) -> Path | None:
        """HF-format model (safetensors shards, one per bucket, + index and side files) that
        transformers and vLLM load. Collective; rank 0 writes."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        tmp = out.with_name(out.name + ".partial")
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        weight_map: dict[str, str] = {}
        total = 0
        shards: list[str] = []
        for bucket in self.gathered_buckets(self.weight_plan(bucket_mb)):
            if self.rank != 0:
                continue
            fname = f"model-{len(shards) + 1:05d}.safetensors"
            save_file({n: t.contiguous() for n, t in bucket}, str(tmp / fname), metadata={"format": "pt"})
            shards.append(fname)
            for n, t in bucket:
                weight_map[n] = fname
                total += t.numel() * t.element_size()
        if self.rank != 0:
            return None
        # the standard sharded naming, so tools that count shards are happy
        final_names = {f: f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i, f in enumerate(shards)}
        for old, new in final_names.items():
            (tmp / old).rename(tmp / new)
        index = {"metadata": {"total_size": total}, "weight_map": {n: final_names[f] for n, f in weight_map.items()}}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
        copy_side_files(self.model_path, tmp)  # also for a hub id: from its snapshot in the HF cache
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)  # a crash mid-save never leaves a half-written model under the final name
        return out

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, ckpt_dir: str | Path) -> None:
        """Optimizer, scheduler, partitioned weights and step, for exact resume. Collective."""
        with self._states_resident():
            self.engine.save_checkpoint(str(Path(ckpt_dir) / "deepspeed"), tag="state",
                                        client_state={"step": self.step})
        if self.rank == 0:  # config, tokenizer, processor and chat template travel with the state
            copy_side_files(self.model_path, Path(ckpt_dir))

    def load_checkpoint(self, ckpt_dir: str | Path) -> int:
        with self._states_resident():
            path, client = self.engine.load_checkpoint(str(Path(ckpt_dir) / "deepspeed"), tag="state",
                                                       load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {ckpt_dir}/deepspeed")
        self.step = int(client["step"])
        return self.step
