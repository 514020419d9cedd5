"""The rule judge: normalised match, exact or on the answer's first word (``RuleMatch``), behind
the same async interface as the LLM judge."""

from __future__ import annotations

import enum
import re

from grit_ray.config import RuleMatch
from grit_ray.judge.protocol import JudgeRequest, JudgeResult, JudgeStatus

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_YES = {"yes", "yeah", "yep", "true", "correct", "right", "y"}
_NO = {"no", "nope", "false", "incorrect", "wrong", "n", "not"}
_ARTICLES = {"a", "an", "the"}


def normalise_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, number words -> digits, yes/no variants -> yes/no."""
    words = re.sub(r"[^a-z0-9\s]", " ", text.lower()).split()
    words = [_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES]
    if len(words) == 1 and words[0] in _YES:
        return "yes"
    if len(words) == 1 and words[0] in _NO:
        return "no"
    return " ".join(words)


class AnswerKind(str, enum.Enum):
    YES_NO = "yes/no"
    NUMBER = "number"
    OPEN = "open"


def answer_kind(reference: str) -> AnswerKind:
    norm = normalise_answer(reference)
    if norm in ("yes", "no"):
        return AnswerKind.YES_NO
    return AnswerKind.NUMBER if norm.isdigit() else AnswerKind.OPEN


def rule_score(prediction: str, reference: str, match: RuleMatch = RuleMatch.EXACT) -> float:
    """1.0 when the normalised answers are equal, else 0.0. With ``RuleMatch.LEADING`` a number or
    yes/no reference is compared with the answer's first word only ("3, no green square." scores
    for "3"; "No, 3" does not), as an LLM judge reads an answer that says more than it was asked."""
    ref = normalise_answer(reference)
    if not ref:
        return 0.0
    pred = normalise_answer(prediction)
    if match is RuleMatch.LEADING and answer_kind(reference) is not AnswerKind.OPEN:
        first = pred.split()[0] if pred else ""
        return 1.0 if normalise_answer(first) == ref else 0.0
    return 1.0 if pred == ref else 0.0


class RuleJudge:
    """Normalised match (``RuleMatch``), behind the same async interface."""

    def __init__(self, match: RuleMatch = RuleMatch.EXACT):
        self.match = match

    async def judge(self, req: JudgeRequest) -> JudgeResult:
        return JudgeResult(JudgeStatus.OK, score=rule_score(req.prediction, req.reference, self.match))

    async def judge_many(self, reqs: list[JudgeRequest]) -> list[JudgeResult]:
        return [await self.judge(r) for r in reqs]

    async def aclose(self) -> None:
        return None
