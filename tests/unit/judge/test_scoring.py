"""The one scoring path: statuses, the failure policy and the judge field of scored rows."""

import asyncio

from grit_ray.config import JudgeFailurePolicy, PromptTemplate, RewardPreset, RuleMatch
from grit_ray.grit.rewards import RewardSet
from grit_ray.judge.protocol import JudgeResult, JudgeStatus
from grit_ray.judge.rule import RuleJudge
from grit_ray.judge.scoring import CompletionScorer, RewardItem, judged_accuracy

GOOD = "<think> the cat [1, 2, 30, 40] </think> <rethink> one cat </rethink> <answer> 1 </answer>"


class FailingJudge(RuleJudge):
    async def judge(self, req):
        return JudgeResult(JudgeStatus.FAILED, error="timeout after 2 attempt(s)", attempts=2)


def _score(judge, completion, policy=JudgeFailurePolicy.RETRY_LATER, template=PromptTemplate.GRIT,
           fallback_match=RuleMatch.EXACT):
    scorer = CompletionScorer(RewardSet.build(RewardPreset.GRIT_CODE), judge, ["tallyqa"], policy,
                              fallback_match=fallback_match)
    item = RewardItem(group_id=0, index=0, question="How many cats?", reference="1", dataset="TallyQA",
                      completion=completion, template=template)
    return asyncio.run(scorer.score(item))


def test_a_judged_answer_is_ok_and_counts_the_boxes():
    s = _score(RuleJudge(), GOOD)
    assert s.judge_status is JudgeStatus.OK and s.components["answer_accuracy"] == 1.0
    assert s.components["target_count"] == 1.0  # the dataset matches case-insensitively
    assert s.judge_json() == {"status": "ok", "score": 1.0}


def test_a_failed_judge_is_unknown_never_zero():
    s = _score(FailingJudge(), GOOD)
    assert s.judge_status is JudgeStatus.FAILED and s.reward is None and s.components["answer_accuracy"] is None
    assert s.failure_reason == "timeout" and s.judge_json() == {"status": "failed", "error": "timeout after 2 attempt(s)"}


def test_rule_fallback_scores_and_says_so():
    s = _score(FailingJudge(), GOOD, JudgeFailurePolicy.RULE_FALLBACK)
    assert s.judge_status is JudgeStatus.FALLBACK and s.reward is not None and s.judge_json()["score"] == 1.0


def test_the_rule_fallback_compares_as_configured():
    said_more = GOOD.replace("<answer> 1 </answer>", "<answer> 1, a cat </answer>")
    assert _score(FailingJudge(), said_more, JudgeFailurePolicy.RULE_FALLBACK).judge_json()["score"] == 0.0
    leading = _score(FailingJudge(), said_more, JudgeFailurePolicy.RULE_FALLBACK, fallback_match=RuleMatch.LEADING)
    assert leading.judge_status is JudgeStatus.FALLBACK and leading.judge_json()["score"] == 1.0
    assert _score(RuleJudge(RuleMatch.LEADING), said_more).components["answer_accuracy"] == 1.0


def test_no_answer_is_not_asked_and_scores_zero_accuracy():
    s = _score(FailingJudge(), "<think> nothing </think>")
    assert s.judge_status is JudgeStatus.NOT_ASKED and s.components["answer_accuracy"] == 0.0
    assert s.judge_json()["status"] == "ok" and s.judge_json()["score"] == 0.0


def test_direct_prompt_judges_the_whole_reply():
    s = _score(RuleJudge(), "1", template=PromptTemplate.DIRECT)
    assert s.judge_status is JudgeStatus.OK and s.judge_score == 1.0
    # the training reward credits it too (a direct or boxes-first run learns from its answers)
    assert s.components["answer_accuracy"] == 1.0
    assert _score(RuleJudge(), "2", template=PromptTemplate.DIRECT).components["answer_accuracy"] == 0.0


def test_boxes_first_reply_is_judged_after_so_and_rewarded():
    chain = "cat [1, 2, 30, 40]. So: 1"
    s = _score(RuleJudge(), chain, template=PromptTemplate.BOXES_FIRST)
    assert s.judge_score == 1.0 and s.components["answer_accuracy"] == 1.0
    # under GRIT's prompt the same reply has no <answer>: not asked, no accuracy
    s = _score(RuleJudge(), chain)
    assert s.judge_status is JudgeStatus.NOT_ASKED and s.components["answer_accuracy"] == 0.0


class HalfJudge(RuleJudge):
    """An LLM-like judge that gives partial credit."""

    async def judge(self, req):
        return JudgeResult(JudgeStatus.OK, score=0.5)


def test_acc_averages_the_raw_score_and_the_training_reward_binarises_it():
    half, failed, unanswered = (_score(HalfJudge(), GOOD), _score(FailingJudge(), GOOD),
                                _score(HalfJudge(), "<think> nothing </think>"))
    assert half.components["answer_accuracy"] == 1.0  # any score above 0 is right for training
    # ACC: 0.5 and the unanswered row's 0, the failed row left out (not a 0)
    assert judged_accuracy(s.judge_json() for s in (half, failed, unanswered)) == 0.25
    assert judged_accuracy([failed.judge_json()]) is None


def test_an_item_is_made_alike_from_a_row_and_from_its_json():
    from grit_ray.data.rows import Row

    row = Row(question="How many cats?", answer="1", image="/x.png", width=8, height=8, bboxs=[], dataset="tallyqa")
    a = RewardItem.for_row(3, 1, row, GOOD, (5, 6), template=PromptTemplate.DIRECT)
    b = RewardItem.for_row(3, 1, {**row.to_json(), "answer": 1}, GOOD, [5, 6], template=PromptTemplate.DIRECT)
    assert a == b and a.reference == "1" and a.token_ids == [5, 6] and a.dataset == "tallyqa"
