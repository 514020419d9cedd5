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


@dataclass(frozen=True)
class AnswerInformation:
    """Whether a model's answers depend on the row they answer: ``right`` against the right answers
    the same answers would score if each were given to another row of the same kind (``shuffled``,
    the mean over seeded permutations; ``shuffled_p95`` their 95th percentile). Right answers beyond
    that come from the image and question, not from the answers' mix: only those give GRPO a
    completion that is right *for looking*."""

    kind: AnswerKind
    samples: int
    answered: int  # samples with an answer of the kind's form (a number, yes/no, ...)
    right: int
    shuffled: float
    shuffled_p95: float

    @property
    def informative(self) -> float:
        return self.right - self.shuffled


def answer_information(answers: Iterable[tuple[str, str | None]], rounds: int = 200, seed: int = 0,
                       ) -> list[AnswerInformation]:
    """(reference, answer or None) pairs -> per answer kind of the reference, ``AnswerInformation``.
    An answer counts as answered when it has the reference kind's form; right as the rule judge
    compares; shuffling permutes the answered answers among the answered rows of the kind."""
    import random

    from grit_ray.judge.rule import rule_score

    by_kind: dict[AnswerKind, list[tuple[str, str | None]]] = defaultdict(list)
    for reference, answer in answers:
        by_kind[answer_kind(reference)].append((reference, answer))
    rng = random.Random(seed)
    out = []
    for kind, pairs in sorted(by_kind.items(), key=lambda kv: kv[0].value):
        formed = [(r, a) for r, a in pairs if a is not None and answer_kind(a) is kind]
        refs, given = [r for r, _ in formed], [a for _, a in formed]
        right = sum(rule_score(a, r) > 0 for r, a in formed)
        shuffled = []
        for _ in range(rounds):
            perm = given[:]
            rng.shuffle(perm)
            shuffled.append(sum(rule_score(a, r) > 0 for r, a in zip(refs, perm)))
        shuffled.sort()
        out.append(AnswerInformation(kind, len(pairs), len(formed), right, sum(shuffled) / rounds if rounds else 0.0,
                                     float(shuffled[int(0.95 * (rounds - 1))]) if rounds else 0.0))
    return out
