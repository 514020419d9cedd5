"""How one optimizer step's completions are cut into micro-batches and spread over learner ranks.

Every rank must run the same number of micro-batches: under ZeRO-3 the ranks gather parameters
module by module in lock-step, so a rank with one forward more would wait for ever. Two plans:

- **rows** (``learner.micro_batch_size``): contiguous equal shards, filled up with zero-weight
  copies to a multiple of ranks x rows, each shard cut into micro-batches of that many rows;
- **a token budget** (``learner.max_tokens_per_micro_batch``): the completions sorted by length and
  cut greedily so that a micro-batch's computed tokens, rows x (longest prompt + longest completion) as the
  learner pads them (docs/learner.md), stay within the budget; the micro-batches dealt to the ranks
  longest first, each to the rank with the fewest computed tokens so far, and ranks left with fewer
  micro-batches topped up with one-row zero-weight fillers.

A micro-batch's loss is its share of the whole batch's (``BatchTotals``), so the plan changes neither
the loss nor the gradient, only how much padding is computed (tests/integration/test_learner.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from grit_ray.algo.experience import TrainSample


@dataclass(frozen=True)
class SampleLength:
    prompt: int  # prompt tokens with the image's tokens, as the rollout counted them (0: not known)
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def length_of(sample: TrainSample) -> SampleLength:
    return SampleLength(sample.prompt_tokens, max(len(sample.completion_ids), 1))


def computed_tokens(lengths: list[SampleLength]) -> int:
    """Tokens a micro-batch of these rows computes: prompts left-padded to the longest, completions
    right-padded to the longest."""
    if not lengths:
        return 0
    return len(lengths) * (max(x.prompt for x in lengths) + max(x.completion for x in lengths))


def _greedy_cuts(lengths: list[SampleLength], order: list[int], max_tokens: int) -> list[list[int]]:
    """``order`` cut greedily: a row joins the current micro-batch while it stays within the budget."""
    cuts: list[list[int]] = []
    current: list[int] = []
    longest_prompt = longest_completion = 0
    for i in order:
        p = max(longest_prompt, lengths[i].prompt)
        c = max(longest_completion, lengths[i].completion)
        if current and (len(current) + 1) * (p + c) > max_tokens:
            cuts.append(current)
            current, p, c = [], lengths[i].prompt, lengths[i].completion
        current.append(i)
        longest_prompt, longest_completion = p, c
    if current:
        cuts.append(current)
    return cuts


def token_budget_cuts(lengths: list[SampleLength], max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` in micro-batches of at most ``max_tokens`` computed tokens each; a row
    longer than the budget on its own is a micro-batch of one. Two orders are cut, longest total
    first and longest prompt first (then completion), and the one computing fewer tokens is kept:
    with a few image sizes the second keeps like prompts together (measured on a GRIT-like mix,
    docs/learner.md)."""
    index = range(len(lengths))
    orders = (sorted(index, key=lambda i: (-lengths[i].total, -lengths[i].prompt, i)),
              sorted(index, key=lambda i: (-lengths[i].prompt, -lengths[i].completion, i)))
    plans = [_greedy_cuts(lengths, order, max_tokens) for order in orders]
    return min(plans, key=lambda cuts: sum(computed_tokens([lengths[i] for i in cut]) for cut in cuts))


def deal_to_ranks(costs: list[int], ranks: int) -> list[list[int]]:
    """Micro-batch indices per rank: the costliest first, each to the cheapest rank that has fewer
    than its share (ceil(len / ranks)) of micro-batches, so counts differ by at most one and costs
    stay close."""
    share = math.ceil(len(costs) / ranks)
    dealt: list[list[int]] = [[] for _ in range(ranks)]
    load = [0] * ranks
    for k in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        r = min((r for r in range(ranks) if len(dealt[r]) < share), key=lambda r: (load[r], r))
        dealt[r].append(k)
        load[r] += costs[k]
    return dealt


def shard_samples(samples: list[TrainSample], ranks: int, micro_batch_size: int) -> list[list[TrainSample]]:
    """Contiguous equal shards; the batch is filled up with zero-weight copies to a multiple of
    ranks x micro_batch_size. Fillers change neither the loss nor the metrics."""
    if not samples:
        raise ValueError("empty training batch")
    unit = ranks * micro_batch_size
    padded = list(samples) + [samples[-1].filler() for _ in range(-len(samples) % unit)]
    per_rank = len(padded) // ranks
    return [padded[r * per_rank:(r + 1) * per_rank] for r in range(ranks)]


def plan_micro_batches(samples: list[TrainSample], ranks: int, micro_batch_size: int,
                       max_tokens: int | None = None) -> list[list[list[TrainSample]]]:
    """Per rank, its micro-batches (lists of samples); the same number on every rank. ``max_tokens``
    None: ``micro_batch_size`` rows each; else the token budget (module docstring)."""
    if not samples:
        raise ValueError("empty training batch")
    if max_tokens is None:
        return [[shard[i:i + micro_batch_size] for i in range(0, len(shard), micro_batch_size)]
                for shard in shard_samples(samples, ranks, micro_batch_size)]
    lengths = [length_of(s) for s in samples]
    cuts = token_budget_cuts(lengths, max_tokens)
    dealt = deal_to_ranks([computed_tokens([lengths[i] for i in cut]) for cut in cuts], ranks)
    shortest = min(range(len(samples)), key=lambda i: (lengths[i].total, i))
    filler = [samples[shortest].filler()]  # one short zero-weight row: a rank's lock-step forward, nothing else
    count = max(len(d) for d in dealt)
    return [[[samples[i] for i in cuts[k]] for k in d] + [filler] * (count - len(d)) for d in dealt]


def padding_report(plan: list[list[list[TrainSample]]]) -> dict[str, float]:
    """Real and computed tokens of a plan (fillers' rows counted as computed, not real)."""
    real = sum(length_of(s).total for rank in plan for mb in rank for s in mb if s.weight > 0)
    computed = sum(computed_tokens([length_of(s) for s in mb]) for rank in plan for mb in rank)
    return {"real_tokens": float(real), "computed_tokens": float(computed),
            "computed_per_real": computed / real if real else float("nan")}
