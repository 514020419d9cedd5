"""Environment the workers set: defaults the user may override, and what the design requires."""

import os

import psutil

from grit_ray.workers.hardware import VLLM_REQUIRED_ENV, apply_env, cpu_rank_binding, require_env, socket_env, vllm_env


def test_an_exported_multiprocessing_flag_is_overridden_and_said(monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    lines = require_env(VLLM_REQUIRED_ENV)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert len(lines) == 1 and "VLLM_ENABLE_V1_MULTIPROCESSING=1 overridden with 0" in lines[0]
    assert require_env(VLLM_REQUIRED_ENV) == []  # already right: nothing to say


def test_defaults_keep_what_the_user_exported(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    apply_env(vllm_env("cpu", 1))
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert vllm_env("cuda", 1) == {}


def test_gloo_and_nccl_bind_to_the_interface_of_the_node_address(monkeypatch):
    name, addrs = next((n, a) for n, a in psutil.net_if_addrs().items() if any(x.family.name == "AF_INET" for x in a))
    ip = next(x.address for x in addrs if x.family.name == "AF_INET")
    assert socket_env(ip) == {"GLOO_SOCKET_IFNAME": name, "NCCL_SOCKET_IFNAME": name}
    assert socket_env("192.0.2.254") == {}  # an address of no interface here: left to the libraries
    exported = {k: v for k, v in os.environ.items() if k != "GLOO_SOCKET_IFNAME"} | {"NCCL_SOCKET_IFNAME": "ib0"}
    monkeypatch.setattr(os, "environ", exported)  # a copy: nothing leaks into later tests
    apply_env(socket_env(ip))
    assert os.environ["NCCL_SOCKET_IFNAME"] == "ib0" and os.environ["GLOO_SOCKET_IFNAME"] == name


def test_the_cuda_index_is_the_actors_own_gpu_whether_or_not_ray_narrowed_visibility():
    from grit_ray.workers.hardware import cuda_device_index

    assert cuda_device_index([3], "3") == 0  # Ray's usual narrowing: the actor sees only its GPU
    assert cuda_device_index([2, 3], "2,3") == 0
    assert cuda_device_index([5], None) == 5  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: all visible
    assert cuda_device_index([5], "0,1,2,3,4,5,6,7") == 5
    assert cuda_device_index([5], "7, 5") == 1  # a user's own ordering
    assert cuda_device_index([], None) == 0  # no Ray GPUs (outside Ray): the first visible device


def test_cpu_tensor_parallel_ranks_get_disjoint_cores():
    assert cpu_rank_binding([0, 1], 2) == "0|1"
    assert cpu_rank_binding(list(range(8)), 2) == "0-3|4-7"
    assert cpu_rank_binding([0, 1, 2, 5, 6, 7, 8], 2) == "0,1,2,5|6-8"  # gaps spelled out, the extra core first
    assert cpu_rank_binding([3], 2) == "3|3"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in vllm_env("cpu", 1, 1) and vllm_env("cuda", 1, 2) == {}
