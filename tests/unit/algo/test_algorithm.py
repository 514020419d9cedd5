"""GRPO-GR math on hand-computed values: no model, no Ray."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from grit_ray.algo.experience import TrainSample, assign_advantages, totals_of
from grit_ray.algo.grpo import (
    BatchTotals,
    LossSettings,
    group_advantages,
    k3_kl,
    policy_loss,
    refill_draw_size,
    token_logprobs,
    zero_signal_groups,
)
from grit_ray.algo.micro_batching import shard_samples
from grit_ray.algo.stats import LearnerStats
from grit_ray.config import AlgorithmConfig, LossAggregation
from grit_ray.workers.learner import lr_multiplier


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 4.0, 4.0])
    gid = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv = group_advantages(rewards, gid, eps=1e-4)
    # group 0: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    s0 = math.sqrt(((0.75**2) + 3 * 0.25**2) / 3)
    assert adv[0].item() == pytest.approx(0.75 / (s0 + 1e-4), rel=1e-6)
    assert adv[1].item() == pytest.approx(-0.25 / (s0 + 1e-4), rel=1e-6)
    s1 = math.sqrt(4 * 1.0 / 3)  # deviations +-1
    assert adv[4].item() == pytest.approx(-1 / (s1 + 1e-4), rel=1e-6)
    # matches torch's unbiased std on each group
    for g in (0, 1):
        r = rewards[gid == g]
        torch.testing.assert_close(adv[gid == g], ((r - r.mean()) / (r.std() + 1e-4)).float())


def test_dr_grpo_drops_the_std():
    adv = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([7, 7, 7]), std_normalize=False)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0]))


def test_flat_and_singleton_groups_have_zero_advantage():
    adv = group_advantages(torch.tensor([0.5, 0.5, 0.5, 1.0]), torch.tensor([0, 0, 0, 1]))
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]  # flat group: 0/(0+eps); singleton: no baseline
    assert not torch.isnan(adv).any()


@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=8, max_size=8), st.randoms())
def test_advantages_do_not_depend_on_where_group_members_sit(rewards, rnd):
    """Members of a group spread over shards (any permutation) get the same advantages."""
    r = torch.tensor(rewards)
    gid = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    perm = list(range(8))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    whole = group_advantages(r, gid)
    shuffled = group_advantages(r[perm], gid[perm])
    torch.testing.assert_close(shuffled, whole[perm])


def test_zero_signal_groups():
    flat = zero_signal_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert flat.tolist() == [True, True, False, False, True, True]


def _samples(n_groups=2, g=4):
    return [TrainSample("p", "img.png", [1] * (i + 1), 0.0, group_id=i // g) for i in range(n_groups * g)]


@pytest.mark.parametrize("drop", [False, True])
def test_assign_advantages_counts_and_optionally_drops_flat_groups(drop):
    algo = AlgorithmConfig(group_size=4, drop_zero_signal_groups=drop)
    out, stats = assign_advantages(_samples(), [1, 1, 1, 1, 0, 1, 0, 1], algo)
    assert stats["groups"] == 2 and stats["zero_signal_groups"] == 1
    assert len(out) == (4 if drop else 8) and stats["dropped_samples"] == (4 if drop else 0)
    assert [s.group_id for s in out][-4:] == [1, 1, 1, 1]
    assert out[-1].advantage > 0 > out[-2].advantage


def test_refill_draw_size_follows_the_informative_share_within_the_limit():
    assert refill_draw_size(needed=0, drawn=4, informative=4, limit=16) == 0
    assert refill_draw_size(needed=2, drawn=4, informative=2, limit=16) == 4  # half were informative
    assert refill_draw_size(needed=2, drawn=4, informative=0, limit=16) == 8  # a quarter at least is assumed
    assert refill_draw_size(needed=3, drawn=14, informative=1, limit=16) == 2  # the limit caps the draw


def test_token_logprobs_match_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    tokens = torch.randint(0, 11, (2, 5), generator=g)
    for temp in (1.0, 0.7):
        expected = torch.log_softmax(logits / temp, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(token_logprobs(logits, tokens, temp), expected)


def test_k3_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    expected = [math.exp(-0.5) + 0.5 - 1, 0.0]
    assert k3_kl(logp, ref).tolist() == pytest.approx(expected)
    assert (k3_kl(torch.randn(50), torch.randn(50)) >= 0).all()


# one micro-batch: completion 0 has 2 tokens, completion 1 has 3
LOGP = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -1.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
ADV = torch.tensor([1.0, -2.0])
REF = torch.tensor([[-1.5, -2.0, 0.0], [-0.5, -1.0, -1.0]])


def test_on_policy_loss_value_seq_mean_token_mean_by_hand():
    s = LossSettings(kl_beta=0.01)
    loss, m = policy_loss(LOGP.clone().requires_grad_(), LOGP, ADV, MASK, BatchTotals(2, 5), s, REF)
    k = k3_kl(LOGP, REF)
    seq0 = (-1.0 + 0.01 * k[0, 0] + -1.0 + 0.01 * k[0, 1]) / 2  # ratio 1 -> -A per token
    seq1 = sum(2.0 + 0.01 * k[1, t] for t in range(3)) / 3
    assert loss.item() == pytest.approx(((seq0 + seq1) / 2).item(), rel=1e-6)
    assert m["kl_sum"].item() == pytest.approx((k * MASK).sum().item())


def test_token_mean_by_hand_and_gradient():
    s = LossSettings(kl_beta=0.0, loss_agg=LossAggregation.TOKEN_MEAN)
    logp = LOGP.clone().requires_grad_()
    loss, _ = policy_loss(logp, logp.detach(), ADV, MASK, BatchTotals(2, 5), s)
    assert loss.item() == pytest.approx((2 * -1.0 + 3 * 2.0) / 5)
    loss.backward()
    # d loss / d logp = -A / total tokens on real tokens, 0 on padding
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.2, -0.2, 0.0], [0.4, 0.4, 0.4]]))


def test_global_normalisers_make_micro_batch_split_irrelevant():
    """Sum of per-micro-batch losses = loss of the whole batch, for both aggregations."""
    for agg in LossAggregation:
        s = LossSettings(kl_beta=0.01, loss_agg=agg)
        totals = BatchTotals(2, 5)
        whole, _ = policy_loss(LOGP, LOGP, ADV, MASK, totals, s, REF)
        parts = sum(policy_loss(LOGP[i:i + 1], LOGP[i:i + 1], ADV[i:i + 1], MASK[i:i + 1], totals, s,
                                REF[i:i + 1])[0] for i in range(2))
        assert parts.item() == pytest.approx(whole.item(), rel=1e-6)


def test_fillers_contribute_nothing():
    s = LossSettings(kl_beta=0.01)
    loss, m = policy_loss(LOGP, LOGP, ADV, MASK, BatchTotals(1, 2), s, REF, weights=torch.tensor([1.0, 0.0]))
    alone, m1 = policy_loss(LOGP[:1], LOGP[:1], ADV[:1], MASK[:1], BatchTotals(1, 2), s, REF[:1])
    assert loss.item() == pytest.approx(alone.item()) and m["token_sum"] == m1["token_sum"] == 2


def test_clipping_by_hand():
    """A > 0: ratio 1.5 clipped to 1.2; A < 0: ratio 0.5 clipped to 0.8 (both pessimistic)."""
    s = LossSettings(kl_beta=0.0, clip_eps_low=0.2, clip_eps_high=0.2)
    logp = torch.log(torch.tensor([[1.5], [0.5]]))
    old = torch.zeros(2, 1)
    adv = torch.tensor([1.0, -1.0])
    loss, m = policy_loss(logp, old, adv, torch.ones(2, 1), BatchTotals(2, 2), s)
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert m["clipped_token_sum"].item() == 2
    # clipping only where it is pessimistic: A > 0 with ratio 0.5 is not clipped
    loss, _ = policy_loss(logp, old, torch.tensor([-1.0, 1.0]), torch.ones(2, 1), BatchTotals(2, 2), s)
    assert loss.item() == pytest.approx((1.5 - 0.5) / 2)


def test_truncated_importance_sampling_and_gap_metrics():
    s = LossSettings(kl_beta=0.0, is_correction=True, is_cap=2.0)
    logp = torch.zeros(1, 2)
    rollout = torch.tensor([[math.log(0.25), math.log(2.0)]])  # weights 4 -> capped 2, and 0.5
    loss, m = policy_loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2), BatchTotals(1, 2), s,
                          rollout_logp=rollout)
    assert loss.item() == pytest.approx(-(2.0 + 0.5) / 2)
    assert m["is_weight_max"].item() == 2.0 and m["is_weight_sum"].item() == pytest.approx(2.5)
    assert m["logp_gap_sum"].item() == pytest.approx(-(math.log(0.25) + math.log(2.0)))
    with pytest.raises(ValueError, match="rollout"):
        policy_loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2), BatchTotals(1, 2), s)


def test_dual_clip_truncates_a_stale_ratio_for_negative_advantages():
    """One-step-off: the ratio is against the behaviour policy. A < 0 with ratio 5 counts at the
    cap 3 (no gradient); A < 0 with ratio 2 is below the cap and keeps its gradient; A > 0 is
    bounded by the ordinary clip."""
    s = LossSettings(kl_beta=0.0, clip_eps_low=0.2, clip_eps_high=0.2, ratio_cap=3.0)
    logp = torch.log(torch.tensor([[5.0], [2.0], [5.0]])).requires_grad_(True)
    behaviour = torch.zeros(3, 1)
    adv = torch.tensor([-1.0, -1.0, 1.0])
    loss, m = policy_loss(logp, behaviour, adv, torch.ones(3, 1), BatchTotals(3, 3), s)
    assert loss.item() == pytest.approx((3.0 + 2.0 - 1.2) / 3)
    assert m["capped_token_sum"].item() == 1
    loss.backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[2, 0].item() == 0.0  # capped, and clipped
    assert logp.grad[1, 0].item() == pytest.approx(2.0 / 3)  # d(-A * ratio)/dlogp = ratio / 3
    uncapped, _ = policy_loss(logp, behaviour, adv, torch.ones(3, 1), BatchTotals(3, 3),
                              LossSettings(kl_beta=0.0, clip_eps_low=0.2, clip_eps_high=0.2))
    assert uncapped.item() == pytest.approx((5.0 + 2.0 - 1.2) / 3)


def test_kl_needs_reference():
    with pytest.raises(ValueError, match="reference"):
        policy_loss(LOGP, LOGP, ADV, MASK, BatchTotals(2, 5), LossSettings(kl_beta=0.1))


def test_shards_are_equal_and_fillers_keep_totals():
    samples = _samples(n_groups=2, g=3)  # 6 samples over 2 ranks x micro 2 -> padded to 8
    shards = shard_samples(samples, ranks=2, micro_batch_size=2)
    assert [len(s) for s in shards] == [4, 4]
    flat = [x for s in shards for x in s]
    assert flat[:6] == samples and all(x.weight == 0.0 for x in flat[6:])
    assert totals_of(flat) == totals_of(samples) == BatchTotals(6, sum(range(1, 7)))


def test_rank_metric_reduction():
    ranks = []
    for loss_metrics, loss, train_s in (({"kl_sum": 1.0, "token_sum": 10, "clipped_token_sum": 1, "is_weight_max": 2.0}, 0.25, 1.0),
                                        ({"kl_sum": 3.0, "token_sum": 30, "clipped_token_sum": 3, "is_weight_max": 2.5}, 0.5, 1.5)):
        rank = LearnerStats(loss=loss, grad_norm=3.0, lr=1e-5, micro_batches=2, train_s=train_s)
        rank.accumulate(loss_metrics)
        ranks.append(rank)
    m = LearnerStats.reduce(ranks)
    assert m.loss == 0.75 and m.kl_mean == 0.1 and m.clip_fraction == 0.1
    assert m.is_weight_max == 2.5 and m.train_s == 1.5 and m.tokens == 40 and m.grad_norm == 3.0
    # the driver's names come from the same table; what was not measured is not logged
    logged = m.metrics()
    assert logged["train/kl"] == 0.1 and logged["train/tokens"] == 40 and "train/is_weight_mean" not in logged


def test_lr_schedule():
    assert [lr_multiplier(s, 2, 10, "cosine") for s in (0, 1)] == [0.5, 1.0]
    assert lr_multiplier(2, 2, 10, "cosine") == 1.0
    assert lr_multiplier(6, 2, 10, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(10, 2, 10, "cosine") == pytest.approx(0.0)
    assert lr_multiplier(7, 0, 10, "constant") == 1.0


def test_token_entropy_by_hand():
    from grit_ray.algo.grpo import token_entropy

    uniform = torch.zeros(1, 1, 4)
    assert token_entropy(uniform).item() == pytest.approx(math.log(4))
    assert token_entropy(uniform, suppressed=torch.tensor([0, 1])).item() == pytest.approx(math.log(2))
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert token_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_one_pass_gives_the_same_logprobs_and_entropy_as_the_separate_functions():
    from grit_ray.algo.grpo import token_entropy, token_logprobs_and_entropy

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 9, generator=g, requires_grad=True)
    tokens = torch.randint(2, 9, (2, 4), generator=g)
    suppressed = torch.tensor([0, 1])
    logp, ent = token_logprobs_and_entropy(logits, tokens, 0.9, suppressed)
    torch.testing.assert_close(logp, token_logprobs(logits, tokens, 0.9, suppressed))
    torch.testing.assert_close(ent, token_entropy(logits, 0.9, suppressed))
    assert logp.requires_grad and not ent.requires_grad
