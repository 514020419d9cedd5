"""The reward-actor pool in a real local Ray, against a real OpenAI-compatible judge server on
127.0.0.1 (grit_ray.testing.judge_server) with latency and injected faults: 500s, 429s, hangs, garbage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import ray

from grit_ray.config import load_config
from grit_ray.judge.rate_limit import RateLimiter
from grit_ray.testing.judge_server import JudgeServer
from grit_ray.workers.reward import RewardItem, RewardPool, import_object

pytestmark = pytest.mark.ray

KEY = "sk-grit-test-never-print-me-4242"
GOOD = "<think> the box [1, 2, 3, 4] </think> <rethink> yes </rethink> <answer> {} </answer>"


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    repo = str(Path(__file__).resolve().parents[2])
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="grit-ray-reward-tests",
             runtime_env={"env_vars": {"PYTHONPATH": repo}})  # tests.custom_reward_actor importable in actors
    yield
    ray.shutdown()


@pytest.fixture
def server():
    with JudgeServer(latency_s=0.05, hang_s=5.0) as s:
        yield s


def _cfg(server, monkeypatch, **judge):
    monkeypatch.setenv("GRIT_TEST_KEY", KEY)
    base = {"reward.judge.kind": "openai", "reward.judge.base_url": server.base_url, "reward.judge.model": "local",
            "reward.judge.api_key_env": "GRIT_TEST_KEY", "reward.judge.timeout_s": 1.0,
            "reward.judge.max_retries": 3, "reward.judge.concurrency": 16}
    base.update({f"reward.judge.{k}": v for k, v in judge.items()})
    return load_config(overrides=[f"{k}={v}" for k, v in base.items()])


def _item(g, i, answer, reference="Yes", dataset="vsr"):
    completion = GOOD.format(answer) if answer is not None else "<think> no answer tag </think>"
    return RewardItem(g, i, "Is the cat left of the dog?", reference, dataset, completion)


def test_every_completion_is_scored_or_marked(server, monkeypatch):
    pool = RewardPool(_cfg(server, monkeypatch, on_failure="drop_group"))
    items = [_item(0, 0, "Yes"), _item(0, 1, "No"), _item(0, 2, None),  # ok, ok, nothing to judge
             _item(1, 0, "#500x2 Yes"), _item(1, 1, "#429x1 Yes"),  # recovered by the call's own retries
             _item(2, 0, "#garbage Yes"), _item(3, 0, "#hang Yes")]  # fail every attempt
    scored = {(s.group_id, s.index): s for s in pool.score(items)}
    assert scored[(0, 0)].judge_status == "ok" and scored[(0, 0)].components["answer_accuracy"] == 1.0
    assert scored[(0, 1)].components["answer_accuracy"] == 0.0 and scored[(0, 1)].reward is not None
    assert scored[(0, 2)].judge_status == "not_asked" and scored[(0, 2)].components["answer_accuracy"] == 0.0
    assert scored[(1, 0)].judge_status == "ok" and scored[(1, 0)].judge_attempts == 3
    assert scored[(1, 1)].judge_status == "ok" and scored[(1, 1)].judge_attempts == 2
    garbage, hang = scored[(2, 0)], scored[(3, 0)]
    assert garbage.reward is None and garbage.failure_reason == "unparsable reply" and garbage.judge_attempts == 4
    assert hang.reward is None and hang.failure_reason == "timeout"
    assert garbage.components["answer_accuracy"] is None  # unknown, not 0

    settled = pool.settle(items, list(scored.values()))
    assert settled.dropped_groups == {2, 3}
    assert settled.metrics["judge_failed/unparsable reply"] == 1 and settled.metrics["judge_failed/timeout"] == 1
    assert settled.metrics["groups_dropped_judge"] == 2 and settled.metrics["judge_ok"] == 4
    assert settled.reward(2, 0) is None and settled.reward(0, 0) == scored[(0, 0)].reward
    pool.shutdown()


def test_retry_later_recovers_what_recovers_and_drops_what_does_not(server, monkeypatch):
    pool = RewardPool(_cfg(server, monkeypatch, on_failure="retry_later"))
    # 4 attempts in the call all get 500; the retry at the end of the step gets through
    items = [_item(0, 0, "#500x4 Yes"), _item(0, 1, "Yes"), _item(1, 0, "#garbage Yes"), _item(1, 1, "Yes")]
    first = pool.score(items)
    assert first[0].reward is None and first[0].failure_reason == "HTTP 500"
    settled = pool.settle(items, first)
    assert settled.metrics["judge_retried"] == 2 and settled.metrics["judge_recovered"] == 1
    assert settled.scored[(0, 0)].reward is not None and settled.scored[(0, 0)].judge_status == "ok"
    assert settled.dropped_groups == {1}  # still unparsable after the retry
    pool.shutdown()


def test_rule_fallback_marks_the_fallback(server, monkeypatch):
    pool = RewardPool(_cfg(server, monkeypatch, on_failure="rule_fallback"))
    items = [_item(0, 0, "#garbage Yes"), _item(0, 1, "Yes")]
    scored = pool.score(items)
    assert scored[0].judge_status == "fallback" and scored[0].reward is not None
    assert scored[0].judge_error.startswith("unparsable reply")
    assert pool.settle(items, scored).dropped_groups == set()
    pool.shutdown()


def test_identical_requests_share_one_judge_call(server, monkeypatch):
    pool = RewardPool(_cfg(server, monkeypatch))
    items = [_item(0, i, "Yes") for i in range(4)] + [_item(1, i, "No") for i in range(4)]
    scored = pool.score(items)
    assert server.requests == 2  # one call per distinct (question, reference, answer)
    assert sum(s.cached for s in scored) == 6 and len({s.reward for s in scored[:4]}) == 1
    assert pool.counters()["cache_hits"] == 6
    pool.shutdown()


def test_judge_calls_overlap_up_to_the_concurrency_limit(monkeypatch):
    with JudgeServer(latency_s=0.2) as server:
        pool = RewardPool(_cfg(server, monkeypatch, concurrency=16))
        items = [_item(g, 0, f"answer {g}") for g in range(64)]
        pool.score([_item(99, 0, "warm-up")])  # actor, client and connection up before the clock starts
        t = time.perf_counter()
        scored = pool.score(items)
        wall = time.perf_counter() - t
        assert all(s.reward is not None for s in scored)
        assert 16 >= server.peak_in_flight >= 12
        # ideal 4 waves x 0.2 s = 0.8 s; one at a time would be 12.8 s. The bound leaves room for a
        # busy 2-core machine (HTTP server threads, client, Ray) without letting serial calls pass.
        assert wall < 3 * (64 / 16) * 0.2, wall
        pool.shutdown()


def test_rate_limiter_holds_the_request_rate():
    async def go():
        limiter = RateLimiter(requests_per_minute=600, tokens_per_minute=None)  # 10/s, bursts of 10
        t = time.perf_counter()
        await asyncio.gather(*(limiter.acquire(1) for _ in range(30)))
        return time.perf_counter() - t, limiter.waited_s

    wall, waited = asyncio.run(go())
    assert 1.8 <= wall <= 3.5 and waited > 0  # 10 at once, then 20 at 10/s


def test_token_budget_limits_large_prompts():
    async def go():
        limiter = RateLimiter(requests_per_minute=None, tokens_per_minute=60_000)  # 1000 tokens/s
        t = time.perf_counter()
        for _ in range(4):
            await limiter.acquire(500)
        return time.perf_counter() - t

    assert 0.9 <= asyncio.run(go()) <= 2.5  # 1000 in the bucket, then 1000 more at 1000/s


def test_custom_reward_actor_class_from_a_test_module(server, monkeypatch):
    cfg = _cfg(server, monkeypatch)
    cfg = cfg.model_copy(update={"reward": cfg.reward.model_copy(
        update={"actor_class": "tests.custom_reward_actor:ShortAnswerBonus"})})
    pool = RewardPool(cfg)
    scored = pool.score([_item(0, 0, "Yes"), _item(0, 1, "it is yes")])
    assert scored[0].components["short_answer_bonus"] == 10.0 and scored[1].components["short_answer_bonus"] == 0.0
    assert scored[0].reward - scored[1].reward >= 10.0 - 1.0  # the bonus, whatever GRIT's parts say
    pool.shutdown()
    with pytest.raises(ValueError, match="expected 'package.module:ClassName'"):
        import_object("tests.custom_reward_actor.ShortAnswerBonus")
    with pytest.raises(ValueError, match="NoSuchClass"):
        import_object("tests.custom_reward_actor:NoSuchClass")


def test_the_api_key_never_reaches_results_counters_or_logs(server, monkeypatch):
    pool = RewardPool(_cfg(server, monkeypatch))
    scored = pool.score([_item(0, 0, "Yes"), _item(0, 1, "#garbage x")])
    text = repr(scored) + repr(pool.counters()) + repr(pool.actors)
    pool.shutdown()
    assert KEY not in text
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    for f in logs.rglob("*"):
        if f.is_file() and f.stat().st_size < 50_000_000:
            assert KEY.encode() not in f.read_bytes(), f


def test_missing_key_is_a_clear_error_before_any_actor_starts(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    from grit_ray.judge.secrets import MissingAPIKey

    with pytest.raises(MissingAPIKey, match="export OPENAI_API_KEY"):
        RewardPool(load_config(overrides=["reward.judge.kind=openai"]))


@pytest.mark.vllm
def test_a_vllm_judge_served_as_a_ray_actor(tiny_model_dir):
    """vLLM's OpenAI server inside the cluster answers the reward actors. The tiny model's replies
    are noise, so they come back as unparsable (marked, never 0): the point is the plumbing."""
    from grit_ray.testing.judge_server import VLLMJudgeServer

    server = ray.remote(VLLMJudgeServer).options(
        num_cpus=0.5, runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}}
    ).remote(str(tiny_model_dir), extra_args=["--enforce-eager", "--max-model-len", "1024", "--dtype", "float32"])
    try:
        url = ray.get(server.base_url.remote())
        assert url.startswith("http://127.0.0.1:")  # bound to loopback unless told otherwise
        pool = RewardPool(load_config(overrides=[
            "reward.judge.kind=openai", f"reward.judge.base_url={url}", f"reward.judge.model={tiny_model_dir}",
            "reward.judge.max_retries=1", "reward.judge.timeout_s=60"]))
        scored = pool.score([_item(0, 0, "Yes"), _item(0, 1, "No")])
        pool.shutdown()
    finally:
        ray.get(server.stop.remote())
    for s in scored:
        assert s.judge_status == "ok" or (s.failure_reason == "unparsable reply" and s.reward is None)
        assert s.judge_attempts >= 1
