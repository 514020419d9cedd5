"""The reward actor's judge cache: shared calls for identical requests, bounded, least recently
used evicted first (the class is used here directly, without Ray)."""

import asyncio

from grit_ray.config import JudgeConfig, RewardConfig
from grit_ray.judge.protocol import JudgeRequest
from grit_ray.workers.reward import RewardActor


def _actor(entries: int) -> RewardActor:
    return RewardActor(RewardConfig(judge=JudgeConfig(cache_entries=entries)), [])


def _req(answer: str) -> JudgeRequest:
    return JudgeRequest(question="How many?", reference="2", prediction=answer)


def test_cache_never_holds_more_than_its_bound_and_keeps_the_recently_used():
    actor = _actor(entries=2)

    async def run():
        await actor._judge(_req("1"))
        await actor._judge(_req("2"))
        hit = await actor._judge(_req("1"))  # "1" is now the most recent
        await actor._judge(_req("3"))  # evicts "2", the least recently used
        again_1 = await actor._judge(_req("1"))
        again_2 = await actor._judge(_req("2"))
        return hit, again_1, again_2

    hit, again_1, again_2 = asyncio.run(run())
    assert hit[1] is True and again_1[1] is True
    assert again_2[1] is False  # evicted: judged again
    assert len(actor._cache) == 2
    assert actor.stats["cache_evictions"] == 2
    assert actor.stats["judge_calls"] == 4
    assert again_2[0].score == 1.0
