"""``grit-ray score`` and the LLM judge against vLLM's own OpenAI API server (``python -m
vllm.entrypoints.openai.api_server``), started here on 127.0.0.1 with the tiny model and an API key:
nonsense replies, a wrong key and a server that dies mid-run are all marked, never scored 0, and the
key appears in no file and no output."""

from __future__ import annotations

import asyncio
import json

import pytest

from grit_ray.cli import main
from grit_ray.config import JudgeConfig, JudgeKind
from grit_ray.judge.llm import OpenAIJudge
from grit_ray.judge.protocol import JudgeRequest, JudgeStatus
from grit_ray.testing.judge_server import VLLMJudgeServer

pytestmark = pytest.mark.vllm

KEY_ENV = "GRIT_VLLM_JUDGE_KEY"
KEY = "sk-vllm-judge-test-key-9137"
ANSWER = "<think> the cat [1, 2, 30, 40] </think> <rethink> one </rethink> <answer> {} </answer>"


@pytest.fixture(scope="module")
def vllm_judge(tiny_model_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, KEY)
    server = VLLMJudgeServer(str(tiny_model_dir), api_key_env=KEY_ENV,
                             extra_args=["--enforce-eager", "--max-model-len", "1024", "--dtype", "float32"])
    yield server
    server.stop()
    mp.undo()


def _rows(tmp_path, n=4):
    path = tmp_path / "completions.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"How many cats? ({i})", "answer": "1", "image": "x.png", "width": 64,
                                "height": 64, "bboxs": [[1, 2, 30, 40]], "dataset": "tallyqa",
                                "completion": ANSWER.format(i % 2)}) + "\n")
    return path


def _score(vllm_judge, tmp_path, capsys):
    out = tmp_path / "scored.jsonl"
    rc = main(["score", str(_rows(tmp_path)), "--out", str(out), "--judge", "openai",
               "--judge-base-url", vllm_judge.base_url(), "--judge-model", vllm_judge.model,
               "--judge-api-key-env", KEY_ENV, "--judge-retries", "1", "--judge-timeout", "60",
               "--judge-max-reply-tokens", "12", "--concurrency", "2"])
    printed = capsys.readouterr()
    files = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    return rc, [json.loads(line) for line in out.read_text().splitlines()], printed.out + printed.err + files


def test_the_real_server_scores_or_marks_every_row_never_a_silent_zero(vllm_judge, tmp_path, capsys):
    rc, rows, seen = _score(vllm_judge, tmp_path, capsys)
    assert rc == 0 and len(rows) == 4
    for r in rows:  # the tiny model replies noise: a score it wrote, or unparsable and unknown
        j = r["judge"]
        assert (j["status"] == "ok" and 0.0 <= j["score"] <= 1.0) or \
            (j["status"] == "failed" and j["error"].startswith("unparsable reply") and r["reward"] is None)
    assert KEY not in seen


def test_a_wrong_key_marks_every_row_naming_the_variable(vllm_judge, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-0000")
    rc, rows, seen = _score(vllm_judge, tmp_path, capsys)
    assert rc == 0
    assert all(r["judge"] == {"status": "failed", "error": f"HTTP 401 (the key in {KEY_ENV} was refused) after 1 "
                              f"attempt(s)"} and r["reward"] is None for r in rows)
    assert "sk-wrong-key-0000" not in seen and KEY not in seen


def test_a_server_that_dies_mid_run_is_retried_then_marked(vllm_judge):
    """The last test of the module: it kills the server."""
    cfg = JudgeConfig(kind=JudgeKind.OPENAI, base_url=vllm_judge.base_url(), model=vllm_judge.model,
                      api_key_env=KEY_ENV, max_retries=2, timeout_s=60, max_reply_tokens=12)
    judge = OpenAIJudge(cfg, backoff_base_s=0.05)
    request = JudgeRequest("How many cats?", "1", "1")

    async def run():
        try:
            before = await judge.judge(request)
            vllm_judge.proc.kill()
            vllm_judge.proc.wait()
            after = await judge.judge(request)
            return before, after
        finally:
            await judge.aclose()

    before, after = asyncio.run(run())
    assert before.status is JudgeStatus.OK or before.error.startswith("unparsable reply")
    assert after.status is JudgeStatus.FAILED and after.score is None
    assert after.error == "connection error after 3 attempt(s)" and after.attempts == 3
    assert judge.usage.retried["connection error"] == 2 and judge.usage.failed["connection error"] == 1
