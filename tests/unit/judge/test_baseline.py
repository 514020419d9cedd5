"""The best constant answer per question kind: what a model scores without looking at the image."""

from __future__ import annotations

from grit_ray.config import SynthSpec
from grit_ray.data.synth import synth_rows
from grit_ray.judge.baseline import (
    AnswerKind,
    answer_information,
    answer_kind,
    best_constant_answers,
    constant_accuracy,
    constant_line,
)
from grit_ray.judge.rule import rule_score


def test_each_kind_gets_its_most_common_answer():
    rows = [("vsr", "Yes"), ("vsr", "No"), ("vsr", "no"), ("vsr", "the red circle"), ("vsr", "the blue square"),
            ("vsr", "the red circle"), ("tallyqa", "2"), ("tallyqa", "0"), ("tallyqa", "two"), ("tallyqa", "3")]
    answers = best_constant_answers(rows)
    by = {(a.dataset, a.kind): a for a in answers}
    assert by[("vsr", AnswerKind.YES_NO)].answer == "no" and by[("vsr", AnswerKind.YES_NO)].right == 2
    assert by[("vsr", AnswerKind.OPEN)].answer == "red circle" and by[("vsr", AnswerKind.OPEN)].right == 2
    assert by[("tallyqa", AnswerKind.NUMBER)].answer == "2" and by[("tallyqa", AnswerKind.NUMBER)].right == 2
    assert constant_accuracy(answers) == 6 / 10
    assert constant_line(answers).startswith("best constant answer per question kind: 0.600 (")


def test_the_constant_scores_what_the_rule_judge_gives_it_on_synthetic_rows():
    rows = [row for row, _ in synth_rows(SynthSpec(n=200, seed=11, max_count=4))]
    answers = best_constant_answers((r["dataset"], r["answer"]) for r in rows)
    judged = sum(rule_score(a.answer, r["answer"]) for r in rows for a in answers
                 if (a.dataset, a.kind) == (r["dataset"], answer_kind(r["answer"])))
    assert judged / len(rows) == constant_accuracy(answers)
    # no single constant does better on any kind
    for a in answers:
        kind_rows = [r for r in rows if (r["dataset"], answer_kind(r["answer"])) == (a.dataset, a.kind)]
        assert all(sum(rule_score(r2["answer"], r["answer"]) for r in kind_rows) <= a.right for r2 in kind_rows)


def test_answers_that_read_the_row_are_informative_and_a_constant_is_not():
    refs = ["0", "1", "2", "3"] * 10 + ["Yes", "No"] * 10
    looking = answer_information([(r, r) for r in refs], rounds=100)  # every answer right for its row
    number = next(i for i in looking if i.kind is AnswerKind.NUMBER)
    assert (number.samples, number.answered, number.right) == (40, 40, 40)
    assert number.shuffled < 20 and number.informative > 20  # shuffled among rows, mostly wrong
    constant = answer_information([(r, "0" if r.isdigit() else "No") for r in refs], rounds=100)
    assert all(i.informative == 0.0 for i in constant)  # a constant scores the same on any row
    unformed = answer_information([("3", "a triangle"), ("2", None), ("1", "1")], rounds=10)
    assert (unformed[0].samples, unformed[0].answered, unformed[0].right) == (3, 1, 1)
