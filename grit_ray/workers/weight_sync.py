"""Weight sync, learner -> rollout workers, after every optimizer step.

The learner's trainable parameters are cut into buckets of about ``weight_sync.bucket_mb`` by a
plan made once at start-up (names, shapes, dtypes: the same on both sides). Each bucket travels
as one flat byte buffer, so one collective (or one object) moves many parameters and dtypes mix
freely. A sync is one control call per actor: learner ranks gather and send bucket after bucket
while every rollout worker receives and hands the tensors to its engine as a lazy iterator, so a
worker never holds more than one bucket beyond its model.

Transports (``weight_sync.transport``):
- ``broadcast``: a process group of its own (TCP store + gloo or nccl) made of learner rank 0 and
  every rollout worker; rank 0 broadcasts each bucket. Works across nodes; nccl on GPUs.
- ``object_store``: learner rank 0 puts each bucket into Ray's object store; workers fetch them.
- ``ipc``: learner rank 0 and the engines on one host (colocated): rank 0 shares each packed bucket
  in place (``SharedBuckets``: a CUDA IPC handle on a GPU, a /dev/shm file on CPU) and the engines
  open it, in the rollout actor or inside vLLM's worker processes (``vllm_extension``).

Frozen parameters (a frozen vision tower) are not in the plan: the engines loaded them at start.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch

from grit_ray.config import CommBackend, Device
from grit_ray.workers.faults import get_all
from grit_ray.workers.hardware import resolve_comm_backend, resolve_device

_DTYPES = {str(t): t for t in (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64,
                               torch.int32, torch.uint8, torch.int8, torch.bool)}


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str  # str(torch.dtype), e.g. "torch.float32"

    @property
    def nbytes(self) -> int:
        numel = 1
        for d in self.shape:
            numel *= d
        return numel * _DTYPES[self.dtype].itemsize


ALIGN = 64  # every tensor starts on a 64-byte boundary: viewable as any dtype, cache-line aligned


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Bucket:
    tensors: tuple[TensorMeta, ...]

    @property
    def offsets(self) -> list[int]:
        out, at = [], 0
        for t in self.tensors:
            out.append(at)
            at += _aligned(t.nbytes)
        return out

    @property
    def nbytes(self) -> int:
        return sum(_aligned(t.nbytes) for t in self.tensors)


def plan_buckets(metas: Iterable[TensorMeta], bucket_mb: float) -> list[Bucket]:
    """Consecutive tensors grouped up to ``bucket_mb`` MiB; a tensor larger than that is a bucket alone."""
    limit = bucket_mb * 2**20
    buckets: list[Bucket] = []
    current: list[TensorMeta] = []
    size = 0
    for m in metas:
        if current and size + _aligned(m.nbytes) > limit:
            buckets.append(Bucket(tuple(current)))
            current, size = [], 0
        current.append(m)
        size += _aligned(m.nbytes)
    if current:
        buckets.append(Bucket(tuple(current)))
    return buckets


def pack_into(tensors: list[torch.Tensor], bucket: Bucket, device: str) -> torch.Tensor:  # (bucket bytes,) uint8
    """Copy ``tensors`` (laid out as ``bucket``) into one new flat byte buffer on ``device``."""
    flat = torch.empty(bucket.nbytes, dtype=torch.uint8, device=device)
    for (_, view), t in zip(unpack(flat, bucket), tensors):
        view.copy_(t.detach())
    return flat


def unpack(flat: torch.Tensor, bucket: Bucket) -> Iterator[tuple[str, torch.Tensor]]:
    """Views into ``flat`` (no copies), one per tensor of the bucket."""
    for m, offset in zip(bucket.tensors, bucket.offsets):
        yield m.name, flat[offset:offset + m.nbytes].view(_DTYPES[m.dtype]).reshape(m.shape)


@dataclass(frozen=True)
class SharedBucket:
    """A bucket handed to another process of the same host without passing its bytes through a
    socket: a file in shared memory (``/dev/shm``, CPU) that the receiver maps, or a CUDA IPC handle
    (torch's multiprocessing reductions: the receiver opens the sender's device memory in place).
    How the rollout actor hands weights to vLLM's worker processes (``rollout.engine_process:
    separate``)."""

    bucket: Bucket
    path: str | None = None
    cuda_ipc: tuple | None = None  # (rebuild function, its arguments): picklable, opened once per receiver


def shm_dir() -> str:
    import tempfile

    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class SharedBuckets:
    """The sender's side: packs (name, tensor) pairs as they come into buckets of about ``bucket_mb``
    and shares each; the files (or device buffers) live until ``release``, after the receivers have
    loaded them."""

    def __init__(self, bucket_mb: float):
        self.limit = bucket_mb * 2**20
        self.handles: list[SharedBucket] = []
        self._keep: list[torch.Tensor] = []  # device buffers the IPC handles point at

    def share(self, named: Iterable[tuple[str, torch.Tensor]]) -> list[SharedBucket]:
        pending: list[tuple[TensorMeta, torch.Tensor]] = []
        size = 0
        for name, t in named:
            meta = TensorMeta(name, tuple(t.shape), str(t.dtype))
            if pending and size + _aligned(meta.nbytes) > self.limit:
                self._share(pending)
                pending, size = [], 0
            pending.append((meta, t))
            size += _aligned(meta.nbytes)
        if pending:
            self._share(pending)
        return self.handles

    def share_packed(self, flats: Iterable[torch.Tensor], plan: list[Bucket]) -> list[SharedBucket]:
        """Buckets already packed by the plan (the learner's gathered buffers), shared as they are:
        a CUDA buffer by its IPC handle (kept alive here), a CPU one written to a file."""
        for flat, bucket in zip(flats, plan):
            if flat.device.type == "cuda":
                from torch.multiprocessing.reductions import reduce_tensor

                self._keep.append(flat)
                self.handles.append(SharedBucket(bucket, cuda_ipc=reduce_tensor(flat)))
            else:
                target = self._file(bucket)
                target.copy_(flat)
        return self.handles

    def _file(self, bucket: Bucket) -> torch.Tensor:  # (bucket bytes,) uint8, mapped from a new /dev/shm file
        import tempfile

        fd, path = tempfile.mkstemp(prefix="grit-ray-bucket-", dir=shm_dir())
        os.close(fd)
        self.handles.append(SharedBucket(bucket, path=path))  # listed first: release removes it whatever happens
        return torch.from_file(path, shared=True, size=bucket.nbytes, dtype=torch.uint8)

    def _share(self, items: list[tuple[TensorMeta, torch.Tensor]]) -> None:
        bucket = Bucket(tuple(m for m, _ in items))
        device = items[0][1].device
        if device.type == "cuda":
            from torch.multiprocessing.reductions import reduce_tensor

            flat = pack_into([t for _, t in items], bucket, str(device))
            self._keep.append(flat)
            self.handles.append(SharedBucket(bucket, cuda_ipc=reduce_tensor(flat)))
            return
        flat = self._file(bucket)
        for (_, target), (_, t) in zip(unpack(flat, bucket), items):
            target.copy_(t.detach())

    def release(self) -> None:
        for h in self.handles:
            if h.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(h.path)
        self._keep, self.handles = [], []


def open_shared(handle: SharedBucket) -> Iterator[tuple[str, torch.Tensor]]:
    """The receiver's side: the bucket's tensors, views of the sender's memory (valid until its
    ``release``: load them before answering)."""
    if handle.cuda_ipc is not None:
        rebuild, args = handle.cuda_ipc
        flat = rebuild(*args)
    else:
        assert handle.path is not None
        flat = torch.from_file(handle.path, shared=False, size=handle.bucket.nbytes, dtype=torch.uint8)
    yield from unpack(flat, handle.bucket)


@dataclass(frozen=True)
class ChannelSpec:
    """Where the sync group meets: learner rank 0 hosts the store; rollout workers are ranks 1..N."""

    host: str
    port: int
    rank: int
    world_size: int
    backend: CommBackend  # resolved by each member for its own device (auto: nccl on a GPU)
    device: Device
    timeout_s: float


class BroadcastChannel:
    """An independent process group (not torch.distributed's default one, which DeepSpeed and vLLM
    own), so learners and engines in different processes and nodes can share one."""

    def __init__(self, spec: ChannelSpec):
        self.spec = spec
        self.group = None

    def connect(self) -> None:
        s = self.spec
        timeout = timedelta(seconds=s.timeout_s)
        store = torch.distributed.TCPStore(s.host, s.port, s.world_size, is_master=s.rank == 0, timeout=timeout,
                                           wait_for_workers=True)
        store = torch.distributed.PrefixStore("grit-ray-weight-sync", store)
        if resolve_comm_backend(s.backend, resolve_device(s.device)) == "nccl":
            self.group = torch.distributed.ProcessGroupNCCL(store, s.rank, s.world_size, timeout)
        else:
            self.group = torch.distributed.ProcessGroupGloo(store, s.rank, s.world_size, timeout)

    def close(self) -> None:
        """Release the group's communicator and sockets (NCCL's would otherwise stay allocated on
        the GPU until the process exits). Called when the group is rebuilt, which happens when a
        member was lost, so it aborts (local, immediate) rather than waiting on every member."""
        if self.group is not None:
            self.group.abort()
            self.group = None

    def broadcast_async(self, buf: torch.Tensor):
        """Start broadcasting ``buf`` from rank 0 (into ``buf`` elsewhere); returns the work handle."""
        return self.group.broadcast(buf, 0)

    def broadcast(self, buf: torch.Tensor) -> torch.Tensor:
        self.broadcast_async(buf).wait()
        return buf


class WeightSender:
    """Lives in learner rank 0; turns gathered buckets into broadcasts or Ray objects."""

    def __init__(self, plan: list[Bucket], channel: ChannelSpec | None):
        self.plan = plan
        self.channel = BroadcastChannel(channel) if channel else None

    def connect(self) -> None:
        if self.channel:
            self.channel.connect()

    def close(self) -> None:
        if self.channel:
            self.channel.close()

    def send(self, flats: Iterable[torch.Tensor]) -> list:
        """Broadcast each packed bucket (returns []) or put it in the object store (returns the refs).
        Broadcasts are pipelined: bucket k + 1 is gathered and packed while bucket k is on the wire."""
        import ray

        refs = []
        in_flight = None  # (work, buffer): the buffer must live until its broadcast completes
        for flat in flats:
            if self.channel:
                work = self.channel.broadcast_async(flat)
                if in_flight:
                    in_flight[0].wait()
                in_flight = (work, flat)
            else:
                refs.append(ray.put(flat.cpu()))
        if in_flight:
            in_flight[0].wait()
        return refs


class WeightReceiver:
    """Lives in each rollout worker; yields (name, tensor) lazily, one bucket at a time."""

    def __init__(self, plan: list[Bucket], channel: ChannelSpec | None, device: Device):
        self.plan = plan
        self.channel = BroadcastChannel(channel) if channel else None
        self.device_setting = device
        self.device = "cpu"

    def connect(self) -> None:
        """Runs in the rollout worker: the device is that process's, not the driver's."""
        self.device = resolve_device(self.device_setting)
        if self.channel:
            self.channel.connect()

    def close(self) -> None:
        if self.channel:
            self.channel.close()

    def receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Double-buffered: bucket k + 1 arrives while the engine loads bucket k."""
        loaded = None  # (buffer, bucket) received and waiting to be loaded
        for bucket in self.plan:
            buf = torch.empty(bucket.nbytes, dtype=torch.uint8, device=self.device)
            work = self.channel.broadcast_async(buf)
            if loaded:
                yield from unpack(*loaded)
            work.wait()
            loaded = (buf, bucket)
        if loaded:
            yield from unpack(*loaded)

    def receive_refs(self, refs: list) -> Iterator[tuple[str, torch.Tensor]]:
        import ray

        if len(refs) != len(self.plan):
            raise ValueError(f"weight sync: {len(refs)} buckets received, the plan has {len(self.plan)}")
        for ref, bucket in zip(refs, self.plan):
            yield from unpack(ray.get(ref).to(self.device), bucket)


class WeightSync:
    """Driver-side handle: wires learner rank 0 to every rollout worker, then ``sync()`` after
    each optimizer step makes one call per actor. A rollout worker that Ray restarted is refitted
    on its own through the object store (``refit``); a broadcast group that lost a member is
    rebuilt, with every member, before the next sync."""

    def __init__(self, cfg, learners, rollout):
        import ray

        from grit_ray.config import SyncTransport

        ws = cfg.weight_sync
        self.cfg, self.learners, self.rollout = cfg, learners, rollout
        self.broadcast = ws.transport is SyncTransport.BROADCAST
        self.ipc = ws.transport is SyncTransport.IPC
        self.timeout_s = ws.timeout_s
        self.plan: list[Bucket] = ray.get(learners.actors[0].weight_plan.remote(ws.bucket_mb, True))
        self.nbytes = sum(b.nbytes for b in self.plan)
        self._wire()
        self.version = 0
        rollout.refit = self.refit

    def _wire(self) -> None:
        """All members of the sync group connect together (a broadcast group on a fresh port)."""
        import ray

        n = 1 + len(self.rollout.workers)
        specs: list[ChannelSpec | None] = [None] * n
        self.address = "object store"
        if self.ipc:  # shared in place: every engine must be on learner rank 0's host
            host = ray.get(self.learners.actors[0].rendezvous_address.remote())[0]
            nodes = get_all([w.node_address.remote() for w in self.rollout.workers], self.rollout.names,
                            self.timeout_s, "weight sync set-up")
            away = [f"{name} on {node}" for name, node in zip(self.rollout.names, nodes) if node != host]
            if away:
                raise RuntimeError(f"weight_sync.transport ipc shares buckets on one host, learner rank 0's ({host}); "
                                   f"{', '.join(away)}: colocate them (resources.colocate) or use broadcast")
            self.address = f"shared on {host}"
        if self.broadcast:
            host, port = ray.get(self.learners.actors[0].rendezvous_address.remote())
            self.address = f"{host}:{port}"  # learner rank 0's node hosts the group's store
            specs = [ChannelSpec(host=host, port=port, rank=r, world_size=n, backend=self.cfg.learner.comm_backend,
                                 device=self.cfg.model.device, timeout_s=self.timeout_s) for r in range(n)]
        calls = [a.prepare_sync.remote(self.plan, specs[0] if i == 0 else None)
                 for i, a in enumerate(self.learners.actors)]
        calls += [w.attach_receiver.remote(WeightReceiver(self.plan, specs[i + 1], self.cfg.model.device))
                  for i, w in enumerate(self.rollout.workers)]
        get_all(calls, self.learners.names + self.rollout.names, self.timeout_s, "weight sync set-up")
        self.rewire = False

    def sync(self, version: int | None = None) -> dict[str, float]:
        """Current learner weights into every rollout engine; returns timing and volume.
        ``version`` labels the weights (the driver passes the step that produced them). A member
        that does not answer within ``weight_sync.timeout_s`` raises ``ActorHangError`` naming it."""
        if self.rewire:
            self._wire()
        self.version = self.version + 1 if version is None else version
        started = time.perf_counter()
        if self.broadcast:
            sends = self.learners.each_rank("send_weights")
            receives = [w.receive_weights.remote(self.version) for w in self.rollout.workers]
            received = get_all(receives + sends, self.rollout.names + self.learners.names, self.timeout_s,
                               "weight sync")[:len(receives)]
        elif self.ipc:
            handles = get_all(self.learners.each_rank("share_weights"), self.learners.names, self.timeout_s,
                              "weight sync")[0]
            try:
                received = get_all([w.receive_weights_shared.remote(handles, self.version)
                                    for w in self.rollout.workers], self.rollout.names, self.timeout_s, "weight sync")
            finally:  # the buffers are freed once every engine has loaded them (or failed to)
                get_all([self.learners.actors[0].release_shared.remote()], self.learners.names[:1], self.timeout_s,
                        "weight sync")
        else:
            sends = self.learners.each_rank("send_weights")
            refs = get_all(sends, self.learners.names, self.timeout_s, "weight sync")[0]["refs"]
            received = get_all([w.receive_weights_from_refs.remote(refs, self.version)
                                for w in self.rollout.workers], self.rollout.names, self.timeout_s, "weight sync")
        wall = time.perf_counter() - started
        return {"sync_s": wall, "sync_bytes": float(self.nbytes), "sync_gb_per_s": self.nbytes / wall / 1e9,
                "sync_tensors": float(received[0]["loaded_tensors"]), "weights_version": float(self.version)}

    def refit(self, i: int) -> None:
        """Rollout worker ``i`` was restarted with the initial weights: give it the current ones
        through the object store, and check that it reports their version."""
        worker, name = self.rollout.workers[i], self.rollout.names[i]
        what = f"refit of {name}"
        refs = get_all(self.learners.each_rank("put_weights"), self.learners.names, self.timeout_s, what)[0]
        # one actor runs its calls in order: attach, load, then report the version it holds
        calls = [worker.attach_receiver.remote(WeightReceiver(self.plan, None, self.cfg.model.device)),
                 worker.receive_weights_from_refs.remote(refs, self.version), worker.weights_version_now.remote()]
        loaded = get_all(calls, [name] * len(calls), self.timeout_s, what)[-1]
        if loaded != self.version:
            raise RuntimeError(f"{what}: it reports weights version {loaded}, "
                               f"expected {self.version}")
        self.rewire = self.broadcast  # the old broadcast group lost a member: rebuild it before the next sync
