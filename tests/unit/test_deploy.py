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


# The RayJob fields this manifest uses, with the types KubeRay's ray.io/v1 API declares for them
# (written here from its API reference; the CRD itself is not vendored). Kubernetes prunes fields a
# CRD does not know, silently: a misspelt key would vanish at `kubectl apply`, so unknown keys fail
# here instead. Quantities may be strings or numbers; rayStartParams values must be strings.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_CONTAINER = {
    "type": "object", "required": ["name", "image"],
    "properties": {"name": {"type": "string"}, "image": {"type": "string"},
                   "resources": {"type": "object", "properties": {
                       k: {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}}
                       for k in ("limits", "requests")}, "additionalProperties": False},
                   "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                   "volumeMounts": {"type": "array", "items": {
                       "type": "object", "required": ["name", "mountPath"],
                       "properties": {"name": {"type": "string"}, "mountPath": {"type": "string"}}}}},
}
_POD_TEMPLATE = {
    "type": "object", "required": ["spec"],
    "properties": {"spec": {"type": "object", "required": ["containers"], "properties": {
        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
        "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}}}}},
}
_GROUP = {"rayStartParams": _STRINGS, "template": _POD_TEMPLATE}
RAYJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {"type": "object", "additionalProperties": False, "required": ["entrypoint", "rayClusterSpec"],
                 "properties": {
                     "entrypoint": {"type": "string"}, "shutdownAfterJobFinishes": {"type": "boolean"},
                     "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                     "runtimeEnvYAML": {"type": "string"},
                     "rayClusterSpec": {"type": "object", "additionalProperties": False, "properties": {
                         "headGroupSpec": {"type": "object", "additionalProperties": False, "required": ["template"],
                                           "properties": _GROUP},
                         "workerGroupSpecs": {"type": "array", "minItems": 1, "items": {
                             "type": "object", "additionalProperties": False, "required": ["groupName", "template"],
                             "properties": {**_GROUP, "groupName": {"type": "string"},
                                            **{k: {"type": "integer", "minimum": 0}
                                               for k in ("replicas", "minReplicas", "maxReplicas")}}}}}}}},
    },
}


def _problems(job: dict) -> list[str]:
    import jsonschema

    out = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
           for e in jsonschema.Draft202012Validator(RAYJOB_SCHEMA).iter_errors(job)]
    if out:
        return out
    for spec in _pod_specs(job):  # what the API server checks beyond the schema
        volumes = [v["name"] for v in spec.get("volumes", [])]
        out += [f"volume {v} defined twice" for v in set(volumes) if volumes.count(v) > 1]
        out += [f"{c['name']} mounts {m['name']}, which no volume defines"
                for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] not in volumes]
    return out


def test_the_rayjob_manifest_fits_the_kuberay_v1_api():
    job = yaml.safe_load(RAYJOB.read_text())
    assert _problems(job) == []
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])  # a YAML document inside a string
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())


def test_the_schema_check_catches_what_kubernetes_would_prune_or_refuse():
    import copy

    job = yaml.safe_load(RAYJOB.read_text())
    typo, number, unmounted = copy.deepcopy(job), copy.deepcopy(job), copy.deepcopy(job)
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    number["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-gpus": 8}
    unmounted["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"].pop()
    assert any("shutdownAfterJobFinish" in p for p in _problems(typo))
    assert any("rayStartParams" in p and "string" in p for p in _problems(number))
    assert any("mounts dshm" in p for p in _problems(unmounted))
