"""grit-ray judge agree: two judges' verdicts on the same rows, matched by what was judged."""

import json

import pytest

from grit_ray.cli import main
from grit_ray.judge.agreement import AgreementInputError, agreement, cohen_kappa


def _write(path, verdicts, datasets=None):
    with path.open("w") as f:
        for i, v in enumerate(verdicts):
            judge = {"status": "failed", "error": "timeout"} if v is None else {"status": "ok", "score": v}
            f.write(json.dumps({"dataset": (datasets or ["vsr"] * len(verdicts))[i], "question": f"q{i}",
                                "answer": "Yes", "completion": f"<answer> {i} </answer>", "judge": judge}) + "\n")
    return path


def test_kappa_is_one_for_identical_verdicts_zero_for_chance_and_negative_against():
    assert cohen_kappa([[5, 0], [0, 5]]) == 1.0
    assert cohen_kappa([[5, 5], [5, 5]]) == 0.0  # agreement at the chance rate of two coin flips
    assert cohen_kappa([[0, 5], [5, 0]]) == -1.0
    assert cohen_kappa([[0, 0], [0, 10]]) is None  # both call everything right: chance agreement is total


def test_agreement_matches_rows_by_content_and_leaves_failures_out(tmp_path):
    a = _write(tmp_path / "a.jsonl", [1.0, 1.0, 0.0, 0.0, 1.0, None], ["vsr", "vsr", "vsr", "tallyqa", "tallyqa", "vsr"])
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    b_rows = list(reversed(rows))  # another order: rows are matched by what was judged
    verdicts = {"q0": 1.0, "q1": 0.6, "q2": 1.0, "q3": 0.0, "q4": 0.0, "q5": 1.0}
    for r in b_rows:
        r["judge"] = {"status": "ok", "score": verdicts[r["question"]]}
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps(r) + "\n" for r in b_rows))
    r = agreement(a, b)
    assert r["matched"] == 6 and r["judge_failed"] == 1 and r["only_in_a"] == r["only_in_b"] == 0
    every = r["datasets"]["all"]
    assert every["n"] == 5 and every["agree"] == pytest.approx(3 / 5)  # q0, q1 (0.6 > 0 is right), q3
    assert every["table"] == {"both_right": 2, "only_a_right": 1, "only_b_right": 1, "both_wrong": 1}
    assert r["datasets"]["tallyqa"]["n"] == 2 and r["mean_score_gap"] == pytest.approx((0 + 0.4 + 1 + 0 + 1) / 5)


def test_rows_that_are_not_scored_are_an_error_naming_the_line(tmp_path):
    a = _write(tmp_path / "a.jsonl", [1.0])
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"question": "q0"}\n')
    with pytest.raises(AgreementInputError, match=r"b.jsonl:1: not a scored row"):
        agreement(a, bad)


def test_the_command_prints_the_table_and_writes_json(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", [1.0, 0.0, 1.0, 0.0])
    b = _write(tmp_path / "b.jsonl", [1.0, 0.0, 0.0, 0.0])
    assert main(["judge", "agree", str(a), str(b), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| all | 4 | 0.750 | 0.500 |" in out
    assert json.loads((tmp_path / "r.json").read_text())["datasets"]["all"]["kappa"] == pytest.approx(0.5)
    assert main(["judge", "agree", str(a), str(tmp_path / "missing.jsonl")]) == 1
