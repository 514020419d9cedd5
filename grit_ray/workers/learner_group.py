"""Data-parallel learner ranks as Ray actors, and the driver-side handle that shards batches over
them. ``LearnerActor`` is a thin wrapper: every method forwards to ``PolicyLearner``."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from grit_ray.algo.experience import TrainSample, totals_of
from grit_ray.algo.micro_batching import padding_report, plan_micro_batches
from grit_ray.algo.stats import LearnerStats
from grit_ray.config import GritConfig
from grit_ray.workers.faults import get_all
from grit_ray.workers.hardware import apply_env, socket_env
from grit_ray.workers.learner import PolicyLearner
from grit_ray.workers.weight_sync import Bucket, ChannelSpec, SharedBuckets, WeightSender


class LearnerActor:
    """Ray actor around one ``PolicyLearner`` rank. Set up in two calls so all ranks can join the
    process group concurrently."""

    def __init__(self):
        self.learner: PolicyLearner | None = None
        self.sender: WeightSender | None = None
        self.sync_plan: list[Bucket] = []
        self.shared: SharedBuckets | None = None  # the ipc transport's buffers, until the engines loaded them

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's IP and a free port, for rank 0 to host the process group."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, cfg: GritConfig, model_path: str, rank: int, world_size: int, addr: str, port: int) -> float:
        apply_env(socket_env(ray.util.get_node_ip_address()))  # the ranks meet across hosts, not on loopback
        self.learner = PolicyLearner(cfg, model_path, rank, world_size, addr, port)
        return self.learner.startup_s

    def train_step(self, micro_batches: list[list[TrainSample]], totals) -> LearnerStats:
        return self.learner.train_step(micro_batches, totals)

    # colocation (docs/cluster.md): states to host memory between updates, back for the next
    def offload_states(self) -> dict[str, float]:
        return self.learner.offload_states()

    def reload_states(self) -> float:
        return self.learner.reload_states()

    # weight sync: every rank gathers; rank 0 also sends
    def weight_plan(self, bucket_mb: float, trainable_only: bool) -> list[Bucket]:
        return self.learner.weight_plan(bucket_mb, trainable_only)

    def prepare_sync(self, plan: list[Bucket], channel: ChannelSpec | None) -> None:
        self.sync_plan = plan
        if self.sender:  # a rebuilt group: release the old one first
            self.sender.close()
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

    def share_weights(self) -> list:
        """The ipc transport: each bucket gathered (every rank takes part) and shared on this host by
        rank 0, packed on the learner's device: a GPU buffer by its CUDA IPC handle, a CPU one as a
        /dev/shm file. The buffers live until ``release_shared``, after the engines loaded them."""
        flats = self.learner.packed_buckets(self.sync_plan, self.learner.device)
        if self.learner.rank != 0:
            for _ in flats:
                pass
            return []
        self.shared = SharedBuckets(0)
        return self.shared.share_packed(flats, self.sync_plan)

    def release_shared(self) -> None:
        if self.shared is not None:
            self.shared.release()
            self.shared = None

    def put_weights(self) -> list:
        """The object-store path whatever the transport: each bucket gathered (every rank takes
        part) and put into Ray's object store by rank 0. Refits a restarted rollout worker."""
        flats = self.learner.packed_buckets(self.sync_plan, "cpu")
        if self.learner.rank != 0:
            for _ in flats:
                pass
            return []
        return [ray.put(flat) for flat in flats]

    def save_hf_model(self, out_dir: str, bucket_mb: float) -> str | None:
        out = self.learner.save_hf_model(out_dir, bucket_mb)
        return None if out is None else str(out)

    def save_checkpoint(self, ckpt_dir: str) -> None:
        self.learner.save_checkpoint(ckpt_dir)

    def load_checkpoint(self, ckpt_dir: str) -> int:
        return self.learner.load_checkpoint(ckpt_dir)


@dataclass
class StartedStep:
    """An optimizer step in flight: the ranks' answers, and the plan's real and computed tokens
    (``algo.micro_batching.padding_report``), logged as ``learner/*`` beside the step's statistics."""

    refs: list
    tokens: dict[str, float]


class LearnerGroup:
    """Driver-side handle on N learner actors (data parallel)."""

    actor_class: type = LearnerActor  # testing/ swaps in a subclass with inspection hooks

    def __init__(self, cfg: GritConfig, model_path: str, num_actors: int | None = None,
                 actor_options: dict[str, Any] | None = None, per_actor_options: list[dict] | None = None,
                 wait: bool = True):
        """Start the ranks; with ``wait`` false return once they are set up in the background
        (``wait_ready`` later), so the learners start while the engines do."""
        self.cfg = cfg
        self.size = num_actors or cfg.learner.num_actors
        options = {"num_cpus": cfg.resources.cpus_per_actor, "num_gpus": cfg.resources.gpus_per_learner}
        options.update(actor_options or {})
        placed = per_actor_options or [{}] * self.size  # e.g. a placement-group bundle per rank
        self.actors = [ray.remote(self.actor_class).options(**options, **placed[r]).remote() for r in range(self.size)]
        self.names = [f"learner rank {r}" for r in range(self.size)]  # how errors name each actor
        self.issuing = threading.Lock()  # see each_rank
        addr, port = ray.get(self.actors[0].rendezvous_address.remote())
        self.address = f"{addr}:{port}"  # where the ranks' process group meets (rank 0's node)
        self._setup = [a.setup.remote(cfg, model_path, r, self.size, addr, port) for r, a in enumerate(self.actors)]
        self.startup_s = 0.0
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        self.startup_s = max(self._get(self._setup, "learner set-up"))

    def _get(self, refs: list, what: str) -> list[Any]:
        """Results of one call per rank; a rank that does not answer within
        ``fault_tolerance.learner_step_timeout_s`` raises ``ActorHangError`` naming it."""
        return get_all(refs, self.names, self.cfg.fault_tolerance.learner_step_timeout_s, what)

    def each_rank(self, method: str, *args) -> list:
        """One call of ``method`` per rank, issued together. Ranks run collectives in the order
        their calls arrive, so two threads of the driver (one-step-off starts the update from a
        helper thread while a refit may ask for the weights) must not interleave their calls."""
        with self.issuing:
            return [getattr(a, method).remote(*args) for a in self.actors]

    def _all(self, method: str, *args) -> list[Any]:
        return self._get(self.each_rank(method, *args), method)

    def start_train_step(self, samples: list[TrainSample]) -> StartedStep:
        """Start one optimizer step over the whole batch (advantages already set) and return at
        once: the driver generates the next batch meanwhile (one-step-off). ``finish_train_step``
        waits for it."""
        totals = totals_of(samples)
        lc = self.cfg.learner
        plan = plan_micro_batches(samples, self.size, lc.micro_batch_size, lc.max_tokens_per_micro_batch)
        with self.issuing:
            refs = [a.train_step.remote(rank_plan, totals) for a, rank_plan in zip(self.actors, plan)]
        return StartedStep(refs, padding_report(plan))

    def finish_train_step(self, started: StartedStep) -> LearnerStats:
        return LearnerStats.reduce(self._get(started.refs, "learner step"))

    def train_step(self, samples: list[TrainSample]) -> LearnerStats:
        """One optimizer step over the whole batch; advantages must already be set."""
        return self.finish_train_step(self.start_train_step(samples))

    def on_ranks(self, ranks: tuple[int, ...], method: str, what: str) -> list[Any]:
        """``method`` on the given ranks only (rank-local calls, no collective: offload and reload)."""
        with self.issuing:
            refs = [getattr(self.actors[r], method).remote() for r in ranks]
        return get_all(refs, [self.names[r] for r in ranks], self.cfg.fault_tolerance.learner_step_timeout_s, what)

    def save_hf_model(self, out_dir: str | Path) -> Path:
        return Path(self._all("save_hf_model", str(out_dir), self.cfg.weight_sync.bucket_mb)[0])

    def save_checkpoint(self, ckpt_dir: str | Path) -> None:
        self._all("save_checkpoint", str(ckpt_dir))

    def load_checkpoint(self, ckpt_dir: str | Path) -> int:
        return self._all("load_checkpoint", str(ckpt_dir))[0]

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
