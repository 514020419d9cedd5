"""A three-host Ray cluster on this machine: each node in its own network namespace with its own
IP on a bridge (the test makes them as root and removes them afterwards). The head runs no
actors; learners live on one host, rollout workers and reward actors on another. ``ray job
submit`` to the head trains; the process groups meet at the learner host's IP, not on loopback.
Then the rollout host is lost: the run stops with a message that says so and a checkpoint. It is
resumed once the host is back, with a spare host beside it; the host holding the rollout worker is
lost again, and this time the run goes on with the other."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.cli_runs import REPO

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

BRIDGE, SUBNET = "grit-br0", "10.77.0"
HEAD, LEARNERS, ROLLOUTS, SPARE = "head", "learners", "rollouts", "spare"
IPS = {HEAD: f"{SUBNET}.11", LEARNERS: f"{SUBNET}.12", ROLLOUTS: f"{SUBNET}.13", SPARE: f"{SUBNET}.14"}
GCS_PORT, DASHBOARD_PORT = 6390, 8266
RAY = str(Path(sys.executable).parent / "ray")


def _sh(*cmd: str, ns: str | None = None, env: dict | None = None, timeout: int = 120, check: bool = True):
    full = (["ip", "netns", "exec", f"grit-{ns}"] if ns else []) + list(cmd)
    return subprocess.run(full, env=env, capture_output=True, text=True, timeout=timeout, check=check)


def _namespaces_possible() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "add", "grit-probe"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "grit-probe"], capture_output=True)
    return None


def _make_hosts() -> None:
    _sh("ip", "link", "add", BRIDGE, "type", "bridge")
    _sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)  # this (root) namespace reaches the head's dashboard
    _sh("ip", "link", "set", BRIDGE, "up")
    for i, (host, ip) in enumerate(IPS.items()):
        veth = f"grit-v{i}"
        _sh("ip", "netns", "add", f"grit-{host}")
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", f"grit-{host}")
        _sh("ip", "link", "set", veth, "master", BRIDGE)
        _sh("ip", "link", "set", veth, "up")
        _sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=host)
        _sh("ip", "link", "set", "eth0", "up", ns=host)
        _sh("ip", "link", "set", "lo", "up", ns=host)


def _remove_hosts() -> None:
    for i, host in enumerate(IPS):
        _kill_host(host)
        subprocess.run(["ip", "netns", "del", f"grit-{host}"], capture_output=True)
        subprocess.run(["ip", "link", "del", f"grit-v{i}"], capture_output=True)  # gone with the namespace, or now
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def _host_pids(host: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", f"grit-{host}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _kill_host(host: str) -> None:
    """Every process of the host, at once: the host is lost."""
    for pid in _host_pids(host):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while _host_pids(host) and time.time() < deadline:
        time.sleep(0.1)


def _start_node(host: str, env: dict, temp: Path) -> None:
    if host == HEAD:  # no CPUs: no actor can be placed on the head
        args = ["--head", "--port", str(GCS_PORT), "--dashboard-host", IPS[HEAD], "--dashboard-port",
                str(DASHBOARD_PORT), "--num-cpus", "0", "--temp-dir", str(temp / host)]
    else:
        role = {LEARNERS: '{"learner_host": 4}', ROLLOUTS: '{"rollout_host": 4}', SPARE: '{"rollout_host": 4}'}[host]
        args = ["--address", f"{IPS[HEAD]}:{GCS_PORT}", "--num-cpus", "2", "--resources", role,
                "--temp-dir", str(temp / host)]  # a disk of its own, as on separate machines
    _sh(RAY, "start", "--node-ip-address", IPS[host], "--disable-usage-stats", *args, ns=host, env=env, timeout=180)


@pytest.fixture
def cluster(tmp_path):
    if (why := _namespaces_possible()) is not None:
        pytest.skip(why)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    temp = Path(tempfile.mkdtemp(prefix="grit-mh-", dir="/tmp"))  # Ray's socket paths must stay short
    _remove_hosts()  # leftovers of an interrupted run
    _make_hosts()
    try:
        for host in (HEAD, LEARNERS, ROLLOUTS):  # the spare host joins later
            _start_node(host, env, temp)
        yield env, temp
    finally:
        _remove_hosts()
        shutil.rmtree(temp, ignore_errors=True)


def _job(*train_args: str) -> list[str]:
    """``ray job submit`` of ``grit-ray train`` to the head, from this (root) namespace."""
    return [RAY, "job", "submit", "--address", f"http://{IPS[HEAD]}:{DASHBOARD_PORT}", "--working-dir", str(REPO),
            "--runtime-env", str(REPO / "deploy" / "runtime_env.yaml"), "--",
            sys.executable, "-m", "grit_ray.cli", "train", *train_args]


def _steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(x)["step"] for x in path.read_text().splitlines()] if path.exists() else []


def _host_running(title: str) -> str | None:
    """The host whose processes include one titled ``title`` (e.g. ``ray::RolloutWorker``)."""
    for host in IPS:
        for pid in _host_pids(host):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                    return host
            except OSError:
                pass
    return None


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int) -> None:
    deadline = time.time() + 600
    while step not in _steps(run):
        assert proc.poll() is None and time.time() < deadline, f"the run ended before step {step}"
        time.sleep(0.1)


def test_three_hosts_train_and_survive_or_stop_on_a_lost_host(cluster, tmp_path, tiny_model_dir):
    env, temp = cluster
    run = tmp_path / "run"
    placed = ["--set", f"model.path={tiny_model_dir}", "learner.num_actors=2", "learner.zero_stage=3",
              "learner.micro_batch_size=2", "algorithm.prompts_per_step=4", "rollout.max_new_tokens=16",
              "algorithm.refill_zero_signal_groups=false", "data.synthetic.n=64", "eval.every_n_steps=null",
              "checkpoint.every_n_steps=2", "checkpoint.save_final=false", "fault_tolerance.restart_timeout_s=20",
              "resources.learner_resources={learner_host: 1}", "resources.rollout_resources={rollout_host: 1}",
              "resources.reward_resources={rollout_host: 1}"]

    # a run on three hosts; its rollout host is lost after step 3, and nothing else offers rollout_host
    submitted = subprocess.Popen(_job("--steps", "24", "--run-dir", str(run), *placed), env=env, cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_step(submitted, run, 3)
    _kill_host(ROLLOUTS)
    out, _ = submitted.communicate(timeout=600)
    # both process groups (DeepSpeed's and the weight sync's) met on the learner host's address
    started = out.split("actors up", 1)[1].split("\n", 1)[0]
    assert f"learner group at {IPS[LEARNERS]}:" in started and f"weight sync via {IPS[LEARNERS]}:" in started, started
    assert submitted.returncode != 0, out[-3000:]
    assert "rollout worker 0" in out and "the cluster cannot hold the actors" in out, out[-4000:]
    assert f"grit-ray train --resume {run}" in out  # says how to go on
    assert (run / "checkpoints" / "step-000002" / "driver.json").exists()

    # the host comes back, with a spare beside it; the run resumes from its checkpoint. Then the
    # host holding the rollout worker is lost: the other one can hold it, so the run goes on
    _start_node(ROLLOUTS, env, temp)
    _start_node(SPARE, env, temp)
    resumed = subprocess.Popen(_job("--resume", str(run), "--set", "fault_tolerance.restart_timeout_s=180"),
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_step(resumed, run, 6)
    lost = _host_running("ray::RolloutWorker")
    assert lost in (ROLLOUTS, SPARE), lost
    _kill_host(lost)
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0 and "succeeded" in out.lower(), out[-4000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 25))  # every step once
    assert sum(r.get("faults/rollout_restarts", 0) for r in rows) == 1, out[-3000:]
