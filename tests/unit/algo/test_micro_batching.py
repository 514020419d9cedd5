"""The learner's micro-batch plans (algo.micro_batching): pure, no Ray or DeepSpeed."""

from __future__ import annotations

import random

import pytest

from grit_ray.algo.experience import TrainSample, totals_of
from grit_ray.algo.micro_batching import (
    SampleLength,
    computed_tokens,
    deal_to_ranks,
    padding_report,
    plan_micro_batches,
    token_budget_cuts,
)
from grit_ray.config import ConfigError, load_config


def _sample(prompt: int, completion: int, group: int = 0) -> TrainSample:
    return TrainSample(prompt="p", image="i.png", completion_ids=[5] * completion, advantage=1.0, group_id=group,
                       prompt_tokens=prompt)


def test_computed_tokens_pad_prompts_and_completions_to_the_longest():
    assert computed_tokens([SampleLength(40, 10), SampleLength(30, 50)]) == 2 * (40 + 50)
    assert computed_tokens([]) == 0


def test_cuts_keep_every_row_once_and_stay_within_the_budget():
    rng = random.Random(0)
    lengths = [SampleLength(rng.randint(30, 60), rng.randint(1, 300)) for _ in range(97)]
    cuts = token_budget_cuts(lengths, 1024)
    assert sorted(i for cut in cuts for i in cut) == list(range(97))
    assert all(computed_tokens([lengths[i] for i in cut]) <= 1024 for cut in cuts)
    # longest first, like with like: less padding than the same rows cut in their own order by count
    rows = max(len(c) for c in cuts)
    by_count = [list(range(i, min(i + rows, 97))) for i in range(0, 97, rows)]
    assert sum(computed_tokens([lengths[i] for i in c]) for c in cuts) < \
        sum(computed_tokens([lengths[i] for i in c]) for c in by_count)


def test_a_row_longer_than_the_budget_is_a_micro_batch_of_its_own():
    cuts = token_budget_cuts([SampleLength(50, 2000), SampleLength(50, 10), SampleLength(50, 12)], 256)
    assert cuts == [[0], [2, 1]]  # longest first


def test_dealing_gives_every_rank_its_share_and_balances_the_tokens():
    costs = [900, 100, 800, 200, 700, 300, 50]
    dealt = deal_to_ranks(costs, 2)
    assert sorted(k for d in dealt for k in d) == list(range(7))
    assert sorted(len(d) for d in dealt) == [3, 4]
    loads = [sum(costs[k] for k in d) for d in dealt]
    assert abs(loads[0] - loads[1]) <= 100


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_budget_plans_run_the_same_micro_batches_on_every_rank_and_keep_the_totals(ranks):
    rng = random.Random(ranks)
    samples = [_sample(rng.randint(30, 40), rng.randint(1, 120), group=i // 4) for i in range(22)]
    plan = plan_micro_batches(samples, ranks, micro_batch_size=1, max_tokens=600)
    assert len({len(rank) for rank in plan}) == 1  # lock-step under ZeRO-3
    flat = [s for rank in plan for mb in rank for s in mb]
    real = [s for s in flat if s.weight > 0]
    assert sorted(map(id, real)) == sorted(map(id, samples))  # every completion exactly once
    assert totals_of(flat) == totals_of(samples)  # fillers weigh nothing
    for rank in plan:
        for mb in rank:
            lengths = [SampleLength(s.prompt_tokens, len(s.completion_ids)) for s in mb]
            assert len(mb) == 1 or computed_tokens(lengths) <= 600


def test_row_plans_are_the_contiguous_shards_cut_by_rows():
    samples = [_sample(30, n + 1) for n in range(6)]
    plan = plan_micro_batches(samples, 2, micro_batch_size=2)
    assert [[len(mb) for mb in rank] for rank in plan] == [[2, 2], [2, 2]]
    assert [s for mb in plan[0] for s in mb][:4] == samples[:4]
    assert all(s.weight == 0.0 for s in plan[1][1])  # 6 rows filled up to 8


def test_a_budget_computes_less_padding_on_a_mixed_length_batch():
    rng = random.Random(3)
    samples = [_sample(rng.choice((120, 260)), rng.randint(200, 1000), group=i // 8) for i in range(64)]
    rows = padding_report(plan_micro_batches(samples, 2, micro_batch_size=4))
    budget = padding_report(plan_micro_batches(samples, 2, micro_batch_size=4, max_tokens=4096))
    assert rows["real_tokens"] == budget["real_tokens"]
    assert budget["computed_per_real"] < 1.1 < rows["computed_per_real"]


def test_the_budget_needs_no_row_divisibility_and_must_be_positive():
    cfg = load_config(overrides=["learner.max_tokens_per_micro_batch=2048", "learner.micro_batch_size=3"])
    assert cfg.learner.max_tokens_per_micro_batch == 2048
    with pytest.raises(ConfigError, match="max_tokens_per_micro_batch"):
        load_config(overrides=["learner.max_tokens_per_micro_batch=0"])
