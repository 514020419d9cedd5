"""The one path from a completion to its reward: the answer is cut out of the chain, judged, and
the reward components are computed from the chain and the judge's score.

The reward actors (training), ``grit-ray eval`` (through them), ``grit-ray score`` and the demo
all score through ``CompletionScorer``, so a completion gets the same reward whoever asks. A judge
failure never becomes a 0: the reward is None and the status says why (``JudgeStatus``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grit_ray.config import JudgeFailurePolicy, PromptTemplate, RuleMatch
from grit_ray.data.rows import Row
from grit_ray.grit.prompts import judged_answer, user_text
from grit_ray.grit.rewards import RewardInput, RewardSet
from grit_ray.judge.protocol import Judge, JudgeRequest, JudgeResult, JudgeStatus
from grit_ray.judge.rule import rule_score


@dataclass
class RewardItem:
    """What a scorer needs to score one completion."""

    group_id: int
    index: int
    question: str
    reference: str
    dataset: str
    completion: str
    token_ids: list[int] = field(default_factory=list)
    image: bytes | None = None  # only when the judge is to see the image
    template: PromptTemplate = PromptTemplate.GRIT  # how the question was asked (direct: the whole reply answers)

    @classmethod
    def for_row(cls, group_id: int, index: int, row: Row | Mapping[str, Any], completion: str,
                token_ids: Sequence[int] = (), image: bytes | None = None,
                template: PromptTemplate = PromptTemplate.GRIT) -> RewardItem:
        """The item of one completion of a data row (a ``Row``, or a row in GRIT's JSON form as
        ``grit-ray score`` reads it): the question, the reference answer and the dataset come from it."""
        if isinstance(row, Row):
            question, answer, dataset = row.question, row.answer, row.dataset
        else:
            question, answer, dataset = row["question"], row["answer"], row["dataset"]
        return cls(group_id=group_id, index=index, question=question, reference=str(answer), dataset=dataset,
                   completion=completion, token_ids=list(token_ids), image=image, template=template)


@dataclass
class ScoredCompletion:
    group_id: int
    index: int
    reward: float | None  # None: unknown (the judge failed); never a silent 0
    components: dict[str, float | None]
    judge_status: JudgeStatus
    judge_error: str | None = None
    judge_attempts: int = 0
    cached: bool = False
    seconds: float = 0.0
    judge_score: float | None = None  # the raw judge score (ACC averages it unbinarised)

    @property
    def failure_reason(self) -> str | None:
        """The error's kind without details: 'timeout', 'HTTP 500', 'unparsable reply', ..."""
        if self.judge_error is None:
            return None
        return self.judge_error.split(" after ")[0].split(":")[0]

    def judge_json(self) -> dict[str, Any]:
        """The ``judge`` field of a scored row (``grit-ray score`` / ``eval`` schema): a completion
        without an answer counts as a 0 for ACC."""
        if self.judge_status is JudgeStatus.NOT_ASKED:
            return {"status": JudgeStatus.OK.value, "score": 0.0, "note": "no <answer> in completion; not sent"}
        if self.judge_status is JudgeStatus.OK:
            return {"status": JudgeStatus.OK.value, "score": self.judge_score}
        out: dict[str, Any] = {"status": self.judge_status.value, "error": self.judge_error}
        if self.judge_status is JudgeStatus.FALLBACK:
            out["score"] = self.judge_score
        return out


def judged_accuracy(judged: Iterable[dict[str, Any]]) -> float | None:
    """ACC / 100: the mean raw judge score over the rows the judge scored (``ScoredCompletion.judge_json``
    or a scored row's ``judge``; a completion without an answer counts 0, a failed or fallback judgement is
    left out). ``grit-ray eval`` and the in-training ``eval/accuracy`` both report it, so one name is one
    number under any judge; the training reward binarises the same score (``answer_accuracy``)."""
    scores = [j["score"] for j in judged if j["status"] == JudgeStatus.OK.value]
    return statistics.fmean(scores) if scores else None


JudgeCall = Callable[[JudgeRequest], Awaitable[tuple[JudgeResult, bool]]]  # -> (result, served from a cache)


class CompletionScorer:
    """Rewards of completions under one reward set and one judge."""

    def __init__(self, reward_set: RewardSet, judge: Judge, counting_datasets: list[str] | frozenset[str],
                 on_failure: JudgeFailurePolicy = JudgeFailurePolicy.RETRY_LATER, judge_call: JudgeCall | None = None,
                 fallback_match: RuleMatch = RuleMatch.EXACT):
        self.reward_set = reward_set
        self.fallback_match = fallback_match  # how the rule fallback compares (reward.judge.rule_match)
        self.judge = judge
        self.counting = {d.lower() for d in counting_datasets}
        self.on_failure = on_failure
        self.judge_call = judge_call or self._uncached

    async def _uncached(self, req: JudgeRequest) -> tuple[JudgeResult, bool]:
        return await self.judge.judge(req), False

    async def score(self, item: RewardItem) -> ScoredCompletion:
        started = time.perf_counter()
        # the paper's direct-query baseline: the reply is the answer (boxes-first: after "So:")
        ans = judged_answer(item.completion, item.template)
        status, error, attempts, cached, judge_score = JudgeStatus.NOT_ASKED, None, 0, False, None
        if ans is not None:
            # as released: the judge sees the whole user text, suffix included
            req = JudgeRequest(user_text(item.question, item.template), item.reference, ans.strip(), item.image)
            result, cached = await self.judge_call(req)
            status, error, attempts = result.status, result.error, result.attempts
            if result.status is JudgeStatus.OK:
                judge_score = result.score
            elif self.on_failure is JudgeFailurePolicy.RULE_FALLBACK:
                judge_score, status = rule_score(ans, item.reference, self.fallback_match), JudgeStatus.FALLBACK
        x = RewardInput(completion=item.completion, reference=item.reference,
                        is_counting=item.dataset.lower() in self.counting, judge_score=judge_score,
                        token_ids=item.token_ids or None, template=item.template)
        values, total = self.reward_set.score(x)
        return ScoredCompletion(group_id=item.group_id, index=item.index, reward=total, components=values,
                                judge_status=status, judge_error=error, judge_attempts=attempts, cached=cached,
                                seconds=time.perf_counter() - started, judge_score=judge_score)
