"""Judges against a real OpenAI-compatible HTTP server on 127.0.0.1 (grit_ray.testing.judge_server)."""

import asyncio
import json
import time
import urllib.request

import pytest

from grit_ray.config import JudgeConfig, JudgeKind, RuleMatch
from grit_ray.judge.llm import GRIT_JUDGE_TEMPLATE, JudgeReplyError, OpenAIJudge, parse_judge_score
from grit_ray.judge.protocol import JudgeRequest
from grit_ray.judge.rule import normalise_answer, rule_score
from grit_ray.judge.secrets import MissingAPIKey
from grit_ray.judge.usage import JudgeUsage, judge_report, report_line
from grit_ray.testing.judge_server import JudgeServer


@pytest.fixture
def server():
    with JudgeServer(latency_s=0.0, hang_s=5.0) as s:
        yield s


def _judge(server, **kw) -> OpenAIJudge:
    cfg = JudgeConfig(kind=JudgeKind.OPENAI, base_url=server.base_url, model="local", api_key_env="GRIT_TEST_KEY",
                      **{"timeout_s": 2.0, "max_retries": 3, "concurrency": 8, **kw})
    return OpenAIJudge(cfg, backoff_base_s=0.01, seed=0)


def _run(judge, reqs):
    async def go():
        try:
            return await judge.judge_many(reqs)
        finally:
            await judge.aclose()
    return asyncio.run(go())


def req(pred, ref="Yes"):
    return JudgeRequest("\nQuestion: Is it red?", ref, pred)


def test_published_template_shape():
    assert "model\u2019s answer" in GRIT_JUDGE_TEMPLATE and "Model\u2019s answer: {prediction}" in GRIT_JUDGE_TEMPLATE
    assert "Question: {question} \nStandard answer: {answer} \n" in GRIT_JUDGE_TEMPLATE


@pytest.mark.parametrize("reply, score", [
    ("{score: 1}", 1.0), ('{"score": 0.5}', 0.5), ("Score: 0.75 because", 0.75), ("score 0.3 ... final score: 1", 1.0),
    ("{Score: 0}", 0.0)])
def test_parse_published_score(reply, score):
    assert parse_judge_score(reply) == score


@pytest.mark.parametrize("reply", ["no number here", "score: high", "{score: 7}", ""])
def test_unparsable_scores_raise(reply):
    with pytest.raises(JudgeReplyError):
        parse_judge_score(reply)


@pytest.mark.parametrize("pred, ref, score", [
    ("Yes.", "yes", 1.0), ("yeah", "Yes", 1.0), ("No", "yes", 0.0), ("three", "3", 1.0), ("The red square", "red square", 1.0),
    ("a blue circle", "the blue circle", 1.0), ("4", "3", 0.0), ("", "", 0.0), ("False", "no", 1.0)])
def test_rule_judge(pred, ref, score):
    assert rule_score(pred, ref) == score


@pytest.mark.parametrize("pred, ref, score", [
    ("3, no green square.", "3", 1.0), ("three circles", "3", 1.0), ("No, 3", "3", 0.0), ("2 or 3", "3", 0.0),
    ("Yes, it is left of it", "yes", 1.0), ("yes no", "no", 0.0), ("It is yes", "yes", 0.0), ("", "yes", 0.0),
    ("the red square and more", "red square", 0.0), ("The red square", "red square", 1.0)])
def test_leading_rule_reads_the_first_word_of_number_and_yes_no_answers_only(pred, ref, score):
    assert rule_score(pred, ref, RuleMatch.LEADING) == score


def test_exact_rule_does_not_read_a_first_word():
    assert rule_score("3, no green square.", "3") == 0.0 and rule_score("Yes, it is", "yes", RuleMatch.EXACT) == 0.0


def test_normalise():
    assert normalise_answer("The TWO red squares!") == "2 red squares"


def test_scores_through_real_server(server, monkeypatch):
    monkeypatch.delenv("GRIT_TEST_KEY", raising=False)
    results = _run(_judge(server), [req("Yes"), req("no")])
    assert [r.status for r in results] == ["ok", "ok"] and [r.score for r in results] == [1.0, 0.0]


def test_transient_500_and_429_are_retried(server):
    results = _run(_judge(server), [req("Yes #500x2"), req("Yes #429x1"), req("Yes #garbagex1")])
    assert [r.status for r in results] == ["ok"] * 3 and [r.score for r in results] == [1.0] * 3
    assert [r.attempts for r in results] == [3, 2, 2]


def test_persistent_failures_are_marked_failed_with_reason_never_zero(server):
    results = _run(_judge(server, max_retries=2), [req("Yes #500"), req("Yes #429"), req("Yes #garbage")])
    assert all(r.status == "failed" and r.score is None for r in results)
    assert results[0].error == "HTTP 500 after 3 attempt(s)"
    assert results[1].error == "rate limited (429) after 3 attempt(s)"
    assert results[2].error.startswith("unparsable reply") and results[2].error.endswith("after 3 attempt(s)")
    assert results[0].to_json() == {"status": "failed", "error": "HTTP 500 after 3 attempt(s)"}


def test_hang_times_out_and_fails(server):
    t = time.perf_counter()
    (r,) = _run(_judge(server, timeout_s=0.3, max_retries=1), [req("Yes #hang")])
    assert r.status == "failed" and r.error == "timeout after 2 attempt(s)"
    assert time.perf_counter() - t < 3.0


def test_calls_run_concurrently_under_the_limit():
    with JudgeServer(latency_s=0.2) as s:
        t = time.perf_counter()
        results = _run(_judge(s, concurrency=16), [req(f"Yes {i}") for i in range(96)])
        elapsed = time.perf_counter() - t
        stats = json.loads(urllib.request.urlopen(s.base_url.rsplit("/v1", 1)[0] + "/stats").read())
    assert all(r.status == "ok" for r in results)
    assert stats["peak_in_flight"] <= 16 and stats["requests"] == 96
    # one at a time would take 19.2 s; the HTTP round trips on a busy 2-core machine add up to ~2 s
    assert elapsed < 4.5, f"96 x 0.2 s at concurrency 16 took {elapsed:.2f}s (ideal 1.2 s, serial 19.2 s)"


def test_missing_key_for_openai_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("GRIT_TEST_KEY", raising=False)
    with pytest.raises(MissingAPIKey, match="export GRIT_TEST_KEY"):
        OpenAIJudge(JudgeConfig(kind=JudgeKind.OPENAI, api_key_env="GRIT_TEST_KEY"))


def test_key_is_never_in_repr(server, monkeypatch):
    monkeypatch.setenv("GRIT_TEST_KEY", "sk-secret-value-42")
    judge = _judge(server)
    assert "sk-secret-value-42" not in repr(judge) and "sk-secret-value-42" not in repr(vars(judge).get("cfg"))
    asyncio.run(judge.aclose())


def test_image_is_sent_to_a_multimodal_judge(server):
    (r,) = _run(_judge(server, send_image=True), [JudgeRequest("q", "Yes", "Yes", image=b"\x89PNG fake")])
    assert r.status == "ok" and r.score == 1.0


def test_azure_settings_address_the_deployment_with_the_key(server, monkeypatch):
    monkeypatch.setenv("GRIT_AZURE_KEY", "azure-test-key-7")
    cfg = JudgeConfig(kind=JudgeKind.AZURE_OPENAI, azure_endpoint=server.base_url.removesuffix("/v1"),
                      azure_deployment="gpt4o-grit", api_version="2024-10-21", api_key_env="GRIT_AZURE_KEY",
                      max_retries=1, timeout_s=2.0)
    results = _run(OpenAIJudge(cfg, backoff_base_s=0.01), [req("Yes"), req("no")])
    assert [r.score for r in results] == [1.0, 0.0]
    path, api_key, _ = server.posts[0]
    assert path == "/openai/deployments/gpt4o-grit/chat/completions?api-version=2024-10-21"
    assert api_key == "azure-test-key-7"


def test_azure_needs_its_three_settings_and_a_key(monkeypatch):
    with pytest.raises(ValueError, match="azure-openai needs azure_deployment, api_version"):
        JudgeConfig(kind=JudgeKind.AZURE_OPENAI, azure_endpoint="https://x.openai.azure.com")
    with pytest.raises(ValueError, match="azure_deployment set but kind is openai"):
        JudgeConfig(kind=JudgeKind.OPENAI, azure_deployment="gpt4o")
    monkeypatch.delenv("GRIT_AZURE_KEY", raising=False)
    cfg = JudgeConfig(kind=JudgeKind.AZURE_OPENAI, azure_endpoint="http://127.0.0.1:9", azure_deployment="d",
                      api_version="2024-10-21", api_key_env="GRIT_AZURE_KEY")
    with pytest.raises(MissingAPIKey, match="azure-openai judge needs an API key: export GRIT_AZURE_KEY"):
        OpenAIJudge(cfg)


def test_usage_counts_calls_retries_failures_tokens_and_latency(server):
    judge = _judge(server, max_retries=2, usd_per_million_input_tokens=2.5, usd_per_million_output_tokens=10.0)
    results = _run(judge, [req("Yes"), req("Yes #500x1"), req("Yes #garbagex1"), req("Yes #429")])
    assert [r.status for r in results] == ["ok", "ok", "ok", "failed"]
    u = judge.usage
    assert u.requests == 4 and u.attempts == 1 + 2 + 2 + 3 == server.requests
    assert dict(u.retried) == {"HTTP 500": 1, "unparsable reply": 1, "rate limited (429)": 2}
    assert dict(u.failed) == {"rate limited (429)": 1}
    assert u.completion_tokens == 5 * 4 and u.prompt_tokens > 0  # the server's usage: 5 reply tokens a reply
    report = judge_report(judge.cfg, u, cache_hits=3)
    assert report["retries"] == 4 and report["failed_by_cause"] == {"rate limited (429)": 1}
    assert 0 < report["latency_s"]["p50"] <= report["latency_s"]["p99"] <= report["latency_s"]["max"]
    assert report["estimated_cost_usd"] == pytest.approx((u.prompt_tokens * 2.5 + 20 * 10.0) / 1e6)
    line = report_line(report)
    assert line.startswith("judge openai (local): 4 requests, 8 calls (4 retries, 1 failed: rate limited (429) 1)")
    assert "3 cache hits" in line and "about $" in line
    merged = JudgeUsage.from_json(u.to_json()).merge(u)
    assert merged.attempts == 16 and merged.failed["rate limited (429)"] == 2


def test_the_rule_judge_reports_no_calls():
    assert report_line(judge_report(JudgeConfig(), None)) == "judge rule: no calls"
