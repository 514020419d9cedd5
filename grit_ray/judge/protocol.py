"""What a judge is asked and what it answers; the status every layer reports a judgement with.

A judge returns a ``JudgeResult``: ``OK`` with a score, or ``FAILED`` with the reason. A failed
call is never turned into a score of 0 here; callers decide (GRIT's released code silently
scored failures as wrong answers, which poisons the training signal).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol


class JudgeStatus(enum.StrEnum):
    OK = "ok"  # the judge scored the answer
    FAILED = "failed"  # the call failed (timeout, HTTP error, unparsable reply): the score is unknown
    FALLBACK = "fallback"  # the call failed and the rule judge scored instead (reward.judge.on_failure)
    NOT_ASKED = "not_asked"  # no <answer> in the completion: nothing to judge, accuracy 0


@dataclass(frozen=True)
class JudgeResult:
    status: JudgeStatus  # OK or FAILED from a judge
    score: float | None = None
    error: str | None = None
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.status is JudgeStatus.OK:
            out["score"] = self.score
        else:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class JudgeRequest:
    question: str  # what the judge sees as the question
    reference: str
    prediction: str
    image: bytes | None = None  # PNG/JPEG bytes for a multimodal judge


class Judge(Protocol):
    async def judge(self, req: JudgeRequest) -> JudgeResult: ...

    async def judge_many(self, reqs: list[JudgeRequest]) -> list[JudgeResult]: ...

    async def aclose(self) -> None: ...
