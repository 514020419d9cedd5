"""Where the actors run: one placement group for learners and rollout workers."""

from __future__ import annotations

from typing import Any

from grit_ray.config import GritConfig


def bundles(cfg: GritConfig) -> tuple[list[dict[str, float]], list[int]]:
    """The placement group's bundles (one per learner, then one per rollout worker; with
    ``resources.colocate`` rollout worker i shares learner i's) and each rollout worker's bundle."""
    r = cfg.resources
    n_learn, n_roll = cfg.learner.num_actors, cfg.rollout.num_workers
    learner = {"CPU": r.cpus_per_actor, "GPU": r.gpus_per_learner, **r.learner_resources}
    rollout = {"CPU": r.cpus_per_actor, "GPU": r.gpus_per_rollout_worker, **r.rollout_resources}
    if r.colocate:
        if n_roll > n_learn:
            raise ValueError(f"resources.colocate: {n_roll} rollout workers but only {n_learn} learner bundles")
        shared = {k: learner.get(k, 0) + rollout.get(k, 0) for k in {*learner, *rollout}}
        out = [dict(shared) for _ in range(n_learn)]
        roll_idx = list(range(n_roll))
    else:
        out = [dict(learner) for _ in range(n_learn)] + [dict(rollout) for _ in range(n_roll)]
        roll_idx = list(range(n_learn, n_learn + n_roll))
    return [{k: v for k, v in b.items() if v} for b in out], roll_idx


def gpus_requested(cfg: GritConfig) -> float:
    """GPUs the learners and rollout workers reserve together."""
    return sum(b.get("GPU", 0.0) for b in bundles(cfg)[0])


def gpu_shortfall(cfg: GritConfig, cluster_gpus: float) -> str | None:
    """Why a Ray cluster with ``cluster_gpus`` GPUs cannot hold the actors, or None when it can."""
    need = gpus_requested(cfg)
    if need <= cluster_gpus + 1e-9:
        return None
    r = cfg.resources
    return (f"the actors reserve {need:g} GPUs (learner.num_actors {cfg.learner.num_actors} x "
            f"resources.gpus_per_learner {r.gpus_per_learner:g} + rollout.num_workers {cfg.rollout.num_workers} "
            f"x resources.gpus_per_rollout_worker {r.gpus_per_rollout_worker:g}"
            f"{', colocated' if r.colocate else ''}) but the Ray cluster has {cluster_gpus:g}")


def placement(cfg: GritConfig, log=print) -> tuple[list[dict], list[dict], Any]:
    """Per-actor scheduling options: learners and rollout workers in one placement group (``bundles``).
    A local Ray (``resources.ray_address`` null) that has too few GPUs fails at once; a cluster that
    has too few is waited on (an autoscaler may add nodes) up to ``fault_tolerance.restart_timeout_s``."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    r = cfg.resources
    n_learn = cfg.learner.num_actors
    group, roll_idx = bundles(cfg)
    if (short := gpu_shortfall(cfg, ray.cluster_resources().get("GPU", 0.0))) is not None:
        if r.ray_address is None:
            raise RuntimeError(f"{short}: this machine's local Ray cannot place them; lower the GPU shares or "
                               "join a GPU cluster (resources.ray_address)")
        log(f"{short}: waiting up to {cfg.fault_tolerance.restart_timeout_s:.0f}s "
            "(fault_tolerance.restart_timeout_s) for nodes to join")
    pg = placement_group(group, strategy=r.placement_strategy)
    timeout = cfg.fault_tolerance.restart_timeout_s
    ready, _ = ray.wait([pg.ready()], timeout=timeout)
    if not ready:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(pg)
        raise RuntimeError(f"the cluster cannot hold the actors: {len(group)} bundles {group} "
                           f"({gpus_requested(cfg):g} GPUs in all, "
                           f"{r.placement_strategy}) were not placed within {timeout:.0f}s "
                           f"(fault_tolerance.restart_timeout_s); check `ray status`")

    def opts(i: int) -> dict:
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)}

    return [opts(i) for i in range(n_learn)], [opts(i) for i in roll_idx], pg
