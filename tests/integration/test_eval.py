"""``grit-ray eval`` on the tiny model with synthetic rows: outputs, and the same numbers with one
rollout worker or two (the released code's results changed with the GPU count)."""

from __future__ import annotations

import json

import pytest

from grit_ray.cli import main

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


def _eval(tiny_model_dir, synth_jsonl, out, workers):
    return main(["eval", "--model", str(tiny_model_dir), "--data", str(synth_jsonl), "--images",
                 str(synth_jsonl.parent / "images"), "--out", str(out), "--workers", str(workers),
                 "--max-rows", "8", "--set", "rollout.max_new_tokens=24"])


def test_eval_outputs_and_worker_count_independence(tiny_model_dir, synth_jsonl, tmp_path, capsys):
    assert _eval(tiny_model_dir, synth_jsonl, tmp_path / "one", 1) == 0
    printed = capsys.readouterr().out
    assert _eval(tiny_model_dir, synth_jsonl, tmp_path / "two", 2) == 0
    one = [json.loads(x) for x in (tmp_path / "one" / "results.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "results.jsonl").read_text().splitlines()]
    assert len(one) == 8 and one == two  # row order, completions, scores: all the same
    assert [r["where"].rsplit(":", 1)[1] for r in one] == [str(i) for i in range(1, 9)]
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["all"]["n"] == 8 and set(summary) >= {"all"} and summary["all"]["judge_failures"] == 0
    assert "| dataset | n | ACC | GIoU |" in (tmp_path / "one" / "summary.md").read_text()
    assert "dataset" in printed and "all" in printed
    assert json.loads((tmp_path / "one" / "judge_report.json").read_text())["judge"] == "rule"
    report = (tmp_path / "one" / "report.html").read_text()
    assert report.count('<div class="card') == 8
    for r in one:
        assert {"completion", "rewards", "reward", "giou", "judge"} <= set(r) and r["judge"]["status"] == "ok"


def test_eval_input_errors_are_clear(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("")
    assert main(["eval", "--model", str(tmp_path / "none"), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "not an HF model directory" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "data file not found" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--crossmodal"]) == 2
    assert "--crossmodal needs a multimodal LLM judge" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "o")]) == 1
    assert "no rows to evaluate" in capsys.readouterr().err
    # the same check guards training's model.path, before any actor starts
    assert main(["train", "--steps", "1", "--run-dir", str(tmp_path / "run"), "--set",
                 f"model.path={tmp_path / 'none'}"]) == 2
    assert "model.path" in capsys.readouterr().err
