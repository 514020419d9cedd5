"""A user's reward actor, configured by import path (reward.actor_class) - no change to grit_ray."""

from dataclasses import replace

from grit_ray.grit.grounding import answer_text
from grit_ray.workers.reward import RewardActor, RewardItem, ScoredCompletion


class ShortAnswerBonus(RewardActor):
    """GRIT's rewards plus 10 for an answer of at most one word."""

    async def score(self, item: RewardItem) -> ScoredCompletion:
        scored = await super().score(item)
        if scored.reward is None:
            return scored
        short = len((answer_text(item.completion) or "").split()) <= 1
        return replace(scored, reward=scored.reward + (10.0 if short else 0.0),
                       components={**scored.components, "short_answer_bonus": 10.0 if short else 0.0})


class TokenSumReward(RewardActor):
    """Reward = sum of token ids mod 7: a signal that an untrained model's groups always carry."""

    async def score(self, item: RewardItem) -> ScoredCompletion:
        scored = await super().score(item)
        return replace(scored, reward=float(sum(item.token_ids) % 7))


class LowTokenReward(RewardActor):
    """Reward = share of completion tokens with an id below 300: a dense signal that an untrained
    tiny model starts near 0.3 on and can learn to raise (the learning-signal test)."""

    async def score(self, item: RewardItem) -> ScoredCompletion:
        scored = await super().score(item)
        ids = item.token_ids or [0]
        return replace(scored, reward=sum(t < 300 for t in ids) / len(ids))
