"""Data-parallel learner ranks as Ray actors, and the driver-side handle that shards batches over
them. ``LearnerActor`` is a thin wrapper: every method forwards to ``PolicyLearner``."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import ray
import torch

from grit_ray.config import GritConfig
from grit_ray.algo.experience import TrainSample, totals_of
from grit_ray.workers.learner import PolicyLearner
from grit_ray.workers.weight_sync import Bucket, ChannelSpec, WeightSender


class LearnerActor:
    """Ray actor around one ``PolicyLearner`` rank. Set up in two calls so all ranks can join the
    process group concurrently."""

    def __init__(self):
        self.learner: PolicyLearner | None = None
        self.sender: WeightSender | None = None
        self.sync_plan: list[Bucket] = []

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's IP and a free port, for rank 0 to host the process group."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, cfg: GritConfig, model_path: str, rank: int, world_size: int, addr: str, port: int) -> float:
        self.learner = PolicyLearner(cfg, model_path, rank, world_size, addr, port)
        return self.learner.startup_s

    def train_step(self, samples: list[TrainSample], totals) -> dict[str, float]:
        return self.learner.train_step(samples, totals)

    def full_weights(self, bucket_mb: float) -> dict[str, torch.Tensor]:
        """The whole model on rank 0 (others return {}); for tests and small models."""
        plan = self.learner.weight_plan(bucket_mb)
        return {n: t for bucket in self.learner.gathered_buckets(plan) for n, t in bucket}

    def bucket_sizes(self, bucket_mb: float) -> list[int]:
        """Bytes per gathered bucket on rank 0 (others: [])."""
        plan = self.learner.weight_plan(bucket_mb)
        return [sum(t.numel() * t.element_size() for _, t in b) for b in self.learner.gathered_buckets(plan) if b]

    # weight sync: every rank gathers; rank 0 also sends
    def weight_plan(self, bucket_mb: float, trainable_only: bool) -> list[Bucket]:
        return self.learner.weight_plan(bucket_mb, trainable_only)

    def prepare_sync(self, plan: list[Bucket], channel: ChannelSpec | None) -> None:
        self.sync_plan = plan
        self.sender = WeightSender(plan, channel) if self.learner.rank == 0 else None
        if self.sender:
            self.sender.connect()

    def send_weights(self) -> dict[str, Any]:
        started = time.perf_counter()
        device = self.learner.device if self.sender and self.sender.channel else "cpu"
        flats = self.learner.packed_buckets(self.sync_plan, device)
        if self.sender is None:
            for _ in flats:  # take part in the gathers
                pass
            return {"refs": [], "send_s": time.perf_counter() - started}
        refs = self.sender.send(flats)
        return {"refs": refs, "send_s": time.perf_counter() - started}

    def raw_send(self) -> list:
        return self.sender.raw_send(self.learner.device) if self.sender else []

    def save_hf_model(self, out_dir: str, bucket_mb: float) -> str | None:
        out = self.learner.save_hf_model(out_dir, bucket_mb)
        return None if out is None else str(out)

    def save_checkpoint(self, ckpt_dir: str) -> None:
        self.learner.save_checkpoint(ckpt_dir)

    def load_checkpoint(self, ckpt_dir: str) -> int:
        return self.learner.load_checkpoint(ckpt_dir)


def shard_samples(samples: list[TrainSample], ranks: int, micro_batch_size: int) -> list[list[TrainSample]]:
    """Contiguous equal shards; the batch is filled up with zero-weight copies to a multiple of
    ranks x micro_batch_size, so every rank runs the same number of micro-batches (ZeRO-3's
    collectives run in lock-step). Fillers change neither the loss nor the metrics."""
    if not samples:
        raise ValueError("empty training batch")
    unit = ranks * micro_batch_size
    padded = list(samples) + [samples[-1].filler() for _ in range(-len(samples) % unit)]
    per_rank = len(padded) // ranks
    return [padded[r * per_rank:(r + 1) * per_rank] for r in range(ranks)]


def reduce_rank_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Metric sums from every rank -> batch metrics (means over real completion tokens)."""
    total: dict[str, float] = {}
    for m in per_rank:
        for k, v in m.items():
            if k.endswith("_max") or k == "train_s":
                total[k] = max(total.get(k, v), v)
            elif k in ("grad_norm", "lr"):  # identical on every rank after the step
                total[k] = v
            elif k == "micro_batches":
                total[k] = v
            else:
                total[k] = total.get(k, 0.0) + v
    tokens = max(total.pop("token_sum", 0.0), 1.0)
    for name in ("kl", "is_weight", "logp_gap", "logp_abs_gap", "entropy"):
        if f"{name}_sum" in total:
            total[f"{name}_mean"] = total.pop(f"{name}_sum") / tokens
    total["clip_fraction"] = total.pop("clipped_token_sum", 0.0) / tokens
    total["tokens"] = tokens
    return total


class LearnerGroup:
    """Driver-side handle on N learner actors (data parallel)."""

    def __init__(self, cfg: GritConfig, model_path: str, num_actors: int | None = None,
                 actor_options: dict[str, Any] | None = None, per_actor_options: list[dict] | None = None):
        self.cfg = cfg
        self.size = num_actors or cfg.learner.num_actors
        options = {"num_cpus": cfg.resources.cpus_per_actor, "num_gpus": cfg.resources.gpus_per_learner}
        options.update(actor_options or {})
        placed = per_actor_options or [{}] * self.size  # e.g. a placement-group bundle per rank
        self.actors = [ray.remote(LearnerActor).options(**options, **placed[r]).remote() for r in range(self.size)]
        addr, port = ray.get(self.actors[0].rendezvous_address.remote())
        self.startup_s = max(ray.get([a.setup.remote(cfg, model_path, r, self.size, addr, port)
                                      for r, a in enumerate(self.actors)]))

    def _all(self, method: str, *args) -> list[Any]:
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def train_step(self, samples: list[TrainSample]) -> dict[str, float]:
        """One optimizer step over the whole batch; advantages must already be set."""
        totals = totals_of(samples)
        shards = shard_samples(samples, self.size, self.cfg.learner.micro_batch_size)
        results = ray.get([a.train_step.remote(s, totals) for a, s in zip(self.actors, shards)])
        return reduce_rank_metrics(results)

    def full_weights(self, bucket_mb: float | None = None) -> dict[str, torch.Tensor]:
        return self._all("full_weights", bucket_mb or self.cfg.weight_sync.bucket_mb)[0]

    def save_hf_model(self, out_dir: str | Path) -> Path:
        return Path(self._all("save_hf_model", str(out_dir), self.cfg.weight_sync.bucket_mb)[0])

    def save_checkpoint(self, ckpt_dir: str | Path) -> None:
        self._all("save_checkpoint", str(ckpt_dir))

    def load_checkpoint(self, ckpt_dir: str | Path) -> int:
        return self._all("load_checkpoint", str(ckpt_dir))[0]

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
