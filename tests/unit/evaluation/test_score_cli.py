"""`grit-ray score` contract, against a real local judge server."""

import json
import time

import pytest

from grit_ray.cli import main
from grit_ray.testing.judge_server import JudgeServer

GOOD = ("<think> circles at [0, 0, 10, 10] and [20, 20, 30, 30] </think> <rethink> two circles </rethink>"
        " <answer> 2</answer>")


def _rows():
    return [
        {"id": "a", "question": "How many circles?", "answer": "2", "dataset": "tallyqa", "width": 100, "height": 100,
         "bboxs": [[0, 0, 10, 10], [20, 20, 30, 30]], "completion": GOOD},
        {"id": "b", "question": "Is it red?", "answer": "Yes", "dataset": "vsr", "width": 100, "height": 100,
         "bboxs": [], "completion": "<think> x y </think><rethink> z </rethink><answer> No"},
        {"id": "c", "question": "Is it red?", "answer": "Yes", "dataset": "vsr", "width": 100, "height": 100,
         "bboxs": [[0, 0, 50, 50]], "completion": "<answer> Yes #500"},
        {"id": "d", "question": "Is it blue?", "answer": "No", "dataset": "vsr", "width": 100, "height": 100,
         "bboxs": [[0, 0, 50, 50]], "completion": "nothing"},
    ]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_with_openai_judge_marks_failures_and_summarises(tmp_path, capsys):
    inp = _write(tmp_path / "in.jsonl", _rows())
    with JudgeServer() as server:
        rc = main(["score", str(inp), "--out", str(tmp_path / "out.jsonl"), "--judge", "openai",
                   "--judge-base-url", server.base_url, "--judge-model", "local", "--judge-timeout", "2",
                   "--judge-retries", "1", "--concurrency", "4"])
    assert rc == 0  # judge failures are reported, not fatal
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["a", "b", "c", "d"]                  # same order, fields pass through
    a, b, c, d = out
    assert a["judge"] == {"status": "ok", "score": 1.0} and a["reward"] == pytest.approx(4.05) and a["giou"] == 1.0
    assert set(a["rewards"]) == {"think_rethink_format", "box_format", "target_count", "answer_format", "repetition",
                                 "answer_bleu", "answer_accuracy"}
    assert b["judge"]["score"] == 0.0 and b["rewards"]["answer_accuracy"] == 0.0 and b["giou"] is None
    assert c["judge"] == {"status": "failed", "error": "HTTP 500 after 2 attempt(s)"}
    assert c["rewards"]["answer_accuracy"] is None and c["reward"] is None   # unknown, not zero
    assert c["giou"] == 0.0                                                  # no predicted box
    assert d["rewards"]["answer_accuracy"] == 0.0 and d["judge"]["status"] == "ok"   # no <answer>: no call
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["tallyqa"] == {"n": 1, "acc": 100.0, "giou": 1.0, "reward_mean": pytest.approx(4.05),
                                  "judge_failures": 0}
    assert summary["vsr"]["n"] == 3 and summary["vsr"]["judge_failures"] == 1 and summary["vsr"]["acc"] == 0.0
    assert summary["all"]["n"] == 4
    printed = capsys.readouterr().out
    assert "judge failures" in printed and "tallyqa" in printed


def test_score_rule_judge_and_paper_preset(tmp_path):
    inp = _write(tmp_path / "in.jsonl", _rows()[:1])
    assert main(["score", str(inp), "--out", str(tmp_path / "o.jsonl"), "--preset", "grit-paper"]) == 0
    (row,) = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["reward"] == pytest.approx(3.1) and "repetition" not in row["rewards"]


def test_score_coord_frames(tmp_path):
    row = {**_rows()[0], "completion": "<think> [0, 0, 500, 1000] </think>", "bboxs": [[0, 0, 50, 100]]}
    inp = _write(tmp_path / "in.jsonl", [row])
    main(["score", str(inp), "--out", str(tmp_path / "o.jsonl"), "--coord-frame", "norm1000"])
    assert json.loads((tmp_path / "o.jsonl").read_text())["giou"] == 1.0
    main(["score", str(inp), "--out", str(tmp_path / "o.jsonl"), "--coord-frame", "original"])
    # read as original pixels the box is clipped to the 100x100 image: IoU = 5000 / 10000
    assert json.loads((tmp_path / "o.jsonl").read_text())["giou"] == pytest.approx(0.5)


@pytest.mark.parametrize("content, reason", [
    ('{"question": "q"', "in.jsonl:1: bad JSON"),
    ('{"question": "q", "answer": "a", "dataset": "vsr"}', "in.jsonl:1: field 'completion' must be a string"),
    ('[1]', "in.jsonl:1: row must be a JSON object"),
])
def test_unreadable_input_exits_nonzero_with_one_line(tmp_path, capsys, content, reason):
    (tmp_path / "in.jsonl").write_text(content + "\n")
    assert main(["score", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1
    assert main(["score", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 1


def test_96_rows_at_concurrency_16_take_about_ceil_96_16_latencies(tmp_path):
    rows = [{**_rows()[1], "id": i, "completion": f"<answer> Yes {i}"} for i in range(96)]
    inp = _write(tmp_path / "in.jsonl", rows)
    with JudgeServer(latency_s=0.2) as server:
        t = time.perf_counter()
        rc = main(["score", str(inp), "--out", str(tmp_path / "o.jsonl"), "--judge", "openai", "--judge-base-url",
                   server.base_url, "--concurrency", "16"])
        elapsed = time.perf_counter() - t
    assert rc == 0 and elapsed < 3.5, f"{elapsed:.2f}s; ideal 6 x 0.2 = 1.2 s"
