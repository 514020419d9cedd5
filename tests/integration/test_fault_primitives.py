"""How the driver sees actors die and hang (grit_ray/workers/faults.py), with real Ray actors
whose processes are really killed."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from grit_ray.workers.faults import ActorHangError, ActorLostError, Incarnations, get_all, unreachable, wait_until_alive

pytestmark = [pytest.mark.ray]


class Sleeper:
    def pid(self) -> int:
        return os.getpid()

    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="grit-ray-fault-tests")
    yield
    ray.shutdown()


def _kill(actor) -> None:
    os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)


def test_a_call_past_its_timeout_is_a_hang_naming_the_actor(ray_local):
    fast, slow = (ray.remote(Sleeper).remote() for _ in range(2))
    ray.get([fast.pid.remote(), slow.pid.remote()])  # both started: only the call is timed
    with pytest.raises(ActorHangError, match=r"weight sync: rollout worker 1 did not answer within 1s"):
        get_all([fast.nap.remote(0.0), slow.nap.remote(30)], ["rollout worker 0", "rollout worker 1"], 1.0,
                "weight sync")
    assert get_all([fast.nap.remote(0.1)], ["x"], 10, "ok") == [0.1]


def test_a_death_raises_at_once_naming_the_actor(ray_local):
    peer, doomed = (ray.remote(Sleeper).remote() for _ in range(2))
    doomed_pid = ray.get([peer.pid.remote(), doomed.pid.remote()])[1]
    started = time.perf_counter()
    waiting = peer.nap.remote(60)  # a peer blocked (as in a collective with the dead rank)
    dying = doomed.nap.remote(60)
    time.sleep(1)
    os.kill(doomed_pid, signal.SIGKILL)
    with pytest.raises(ActorLostError, match="learner step: learner rank 1 died"):
        get_all([waiting, dying], ["learner rank 0", "learner rank 1"], 120, "learner step")
    assert time.perf_counter() - started < 30  # not after the peer's minute
    assert unreachable([peer, doomed], ["learner rank 0", "learner rank 1"], timeout_s=5) == [
        "learner rank 0", "learner rank 1"]  # rank 0 is still busy, rank 1 is dead
    ray.kill(peer)


def test_a_restarted_actor_is_awaited_and_noticed(ray_local):
    actor = ray.remote(Sleeper).options(max_restarts=1, max_task_retries=0).remote()
    seen = Incarnations([actor])
    assert seen.restarted() == []
    _kill(actor)
    assert wait_until_alive(actor, "reward actor 0", timeout_s=60) >= 0
    assert seen.restarted() == [0] and seen.restarted() == []  # noticed once
    _kill(actor)  # its one restart is used up
    with pytest.raises(ActorLostError, match="reward actor 0 died and will not be restarted"):
        wait_until_alive(actor, "reward actor 0", timeout_s=60)


def test_a_local_ray_short_of_gpus_fails_at_once_and_a_cluster_is_waited_on(ray_local):
    from grit_ray.config import load_config
    from grit_ray.trainer.placement import placement

    cfg = load_config(overrides=["resources.gpus_per_learner=1", "fault_tolerance.restart_timeout_s=2"])
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"reserve 1 GPUs .* has 0: this machine's local Ray"):
        placement(cfg)
    assert time.perf_counter() - started < 2  # not after restart_timeout_s
    said: list[str] = []
    cfg.resources.ray_address = "auto"  # a cluster: an autoscaler may still add the GPUs
    with pytest.raises(RuntimeError, match="cannot hold the actors"):
        placement(cfg, log=said.append)
    assert len(said) == 1 and "waiting up to 2s" in said[0]
