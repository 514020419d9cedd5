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


def resolve_dtype(dtype: DType, device: str) -> str:
    # CPU kernels for bf16 matmuls are slow or missing in places; fp32 is the CPU default.
    if device == "cpu" and dtype is not DType.FLOAT32:
        return DType.FLOAT32.value
    return dtype.value


def resolve_comm_backend(backend: CommBackend, device: str) -> str:
    if backend is CommBackend.AUTO:
        return "nccl" if device == "cuda" else "gloo"
    return backend.value


def vllm_env(device: str, cpu_kv_cache_gib: int) -> dict[str, str]:
    """Environment a vLLM engine process needs. The engine core runs in-process so that the owning
    actor can reach the model runner directly (weight reload) and no child process is spawned."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib)
    return env


def deepspeed_env(device: str) -> dict[str, str]:
    """Name DeepSpeed's accelerator explicitly instead of letting it probe (a GPU node may host CPU actors)."""
    return {"DS_ACCELERATOR": device}


def gloo_env(node_ip: str) -> dict[str, str]:
    """Bind gloo to the interface that carries this node's Ray address. Left alone, gloo binds
    to whatever the host name resolves to, which is loopback on many machines (127.0.1.1 in
    /etc/hosts), and peers on other hosts cannot connect. An explicit GLOO_SOCKET_IFNAME wins."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == node_ip for a in addrs):
            return {"GLOO_SOCKET_IFNAME": name}
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
    for k, v in env.items():
        os.environ.setdefault(k, v)
