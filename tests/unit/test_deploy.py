"""The Kubernetes manifest: every Ray pod gets a memory-backed /dev/shm (Kubernetes' default is
64 MiB, too small for Ray's object store and NCCL's shared-memory transport)."""

from pathlib import Path

import yaml

RAYJOB = Path(__file__).resolve().parents[2] / "deploy" / "rayjob.yaml"


def _pod_specs(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]


def test_every_ray_pod_mounts_a_memory_backed_dev_shm():
    specs = _pod_specs(yaml.safe_load(RAYJOB.read_text()))
    assert len(specs) >= 2
    for spec in specs:
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
            assert len(shm) == 1, container["name"]
            assert volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory", container["name"]
