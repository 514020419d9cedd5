"""The rule judge: normalised exact match, behind the same async interface as the LLM judge."""

from __future__ import annotations

import re

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


def rule_score(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return 1.0 if normalise_answer(prediction) == normalise_answer(reference) and normalise_answer(reference) else 0.0


class RuleJudge:
    """Normalised exact match, behind the same async interface."""

    async def judge(self, req: JudgeRequest) -> JudgeResult:
        return JudgeResult(JudgeStatus.OK, score=rule_score(req.prediction, req.reference))

    async def judge_many(self, reqs: list[JudgeRequest]) -> list[JudgeResult]:
        return [await self.judge(r) for r in reqs]

    async def aclose(self) -> None:
        return None
