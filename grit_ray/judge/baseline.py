"""The best answer given without looking at the image: one constant answer per question kind.

A trained model's accuracy means something only above what a model could score by ignoring the
image. For each kind of question (per dataset: yes/no, a number, anything else) the constant that
matches most of those rows' reference answers is the best such model can do without the picture;
its accuracy over all rows is the baseline the run prints beside its own (docs/results.md). Answers
are compared as the rule judge compares them (``normalise_answer``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from grit_ray.judge.rule import AnswerKind, answer_kind, normalise_answer  # kinds as the rule judge reads them


@dataclass(frozen=True)
class ConstantAnswer:
    dataset: str
    kind: AnswerKind
    answer: str  # normalised
    right: int
    rows: int


def best_constant_answers(rows: Iterable[tuple[str, str]]) -> list[ConstantAnswer]:
    """(dataset, reference answer) rows -> the best constant answer of each (dataset, kind), most
    rows first (ties: the answer first in sort order, so the result is deterministic)."""
    groups: dict[tuple[str, AnswerKind], Counter] = defaultdict(Counter)
    for dataset, reference in rows:
        groups[(dataset, answer_kind(reference))][normalise_answer(reference)] += 1
    out = []
    for (dataset, kind), counts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        answer, right = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        out.append(ConstantAnswer(dataset, kind, answer, right, sum(counts.values())))
    return out


def constant_accuracy(answers: list[ConstantAnswer]) -> float:
    """Accuracy over all rows of answering each kind with its best constant."""
    total = sum(a.rows for a in answers)
    return sum(a.right for a in answers) / total if total else 0.0


def constant_line(answers: list[ConstantAnswer]) -> str:
    """'best constant answer per question kind: 0.312 (vsr yes/no "no" 20/38, ...)'."""
    parts = ", ".join(f'{a.dataset} {a.kind.value} "{a.answer}" {a.right}/{a.rows}' for a in answers)
    return f"best constant answer per question kind: {constant_accuracy(answers):.3f} ({parts})"
