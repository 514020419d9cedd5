"""GRPO-GR math as small pure torch functions: no Ray, no DeepSpeed, no model.

Shapes: N = completions in the global batch, B = completions in one micro-batch, T = completion
tokens (right-padded), V = vocabulary. ``mask`` is 1.0 on real completion tokens, 0.0 on padding.

The released GRIT update (docs/grit.md §4) is one on-policy step per batch:
    loss_t = -(ratio_t * A - beta * KL_t),  ratio_t = exp(logp_t - logp_t.detach()),
    KL_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1                          (k3 estimator)
averaged over each completion's tokens, then over completions. Peers' variants are options:
token-mean over the global batch, clipping (a no-op at ratio 1), dropping the std, truncated
importance sampling against the rollout engine's log-probs. One-step-off training
(``algorithm.max_staleness=1``) passes the engine's log-probs as ``old_logp``: the ratio is then
against the behaviour policy, clipped, and truncated at ``ratio_cap`` for negative advantages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from grit_ray.config import AlgorithmConfig, LossAggregation


def group_advantages(
    rewards: torch.Tensor,  # (N,) float
    group_ids: torch.Tensor,  # (N,) int64; members of one group may sit anywhere in the batch
    eps: float = 1e-4,
    std_normalize: bool = True,
) -> torch.Tensor:  # (N,)
    """(r - mean_g) / (std_g + eps) with the unbiased std of each whole group (released GRIT), or
    r - mean_g when ``std_normalize`` is false (Dr. GRPO). Group statistics come from ``group_ids``,
    not from positions, so a group split across shards or shuffled gets the same advantages. A group
    with one member (the rest lost to judge failures) has no baseline: its advantage is 0."""
    rewards = rewards.to(torch.float64)  # group stats in float64: a 1e-4 eps meets tiny stds
    _, inverse = torch.unique(group_ids, return_inverse=True)  # (N,) dense group index
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(rewards))
    total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, rewards)
    mean = total / count  # (G,)
    centred = rewards - mean[inverse]  # (N,)
    if not std_normalize:
        adv = centred
    else:
        sq = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, centred**2)
        std = (sq / (count - 1).clamp(min=1)).sqrt()  # (G,) unbiased, as torch.std
        adv = centred / (std[inverse] + eps)
    adv = torch.where(count[inverse] > 1, adv, torch.zeros_like(adv))
    return adv.to(torch.float32)


def zero_signal_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:  # (N,) bool
    """True for every member of a group whose rewards are all equal: its advantages are all zero, so
    it moves the policy only through the KL term (GRIT users saw 'loss stuck at 0' from this)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    hi = torch.full((num_groups,), -torch.inf, dtype=rewards.dtype).scatter_reduce(0, inverse, rewards, "amax")
    lo = torch.full((num_groups,), torch.inf, dtype=rewards.dtype).scatter_reduce(0, inverse, rewards, "amin")
    return (hi == lo)[inverse]


def refill_draw_size(needed: int, drawn: int, informative: int, limit: int) -> int:
    """Dynamic sampling: prompts to draw next so that ``needed`` more groups with signal are likely,
    judged by the share of informative groups among the ``drawn`` ones so far (a quarter at least,
    so one unlucky round does not ask for everything), never past ``limit`` prompts in the step."""
    if needed <= 0:
        return 0
    share = max(informative / drawn, 0.25) if drawn else 1.0
    return max(0, min(limit - drawn, math.ceil(needed / share)))


def _sampling_logits(
    row_logits: torch.Tensor,  # (T, V)
    temperature: float,
    suppressed: torch.Tensor | None,  # (S,)
) -> torch.Tensor:  # (T, V) float32
    """Logits of the distribution the rollout engine sampled: tempered, suppressed tokens at -inf."""
    row_logits = row_logits.float()
    if temperature != 1.0:
        row_logits = row_logits / temperature
    if suppressed is not None and suppressed.numel():
        row_logits = row_logits.index_fill(-1, suppressed.to(row_logits.device), float("-inf"))
    return row_logits


def _entropy(row_logits: torch.Tensor) -> torch.Tensor:  # (T, V) sampling logits -> (T,)
    logp = torch.log_softmax(row_logits, dim=-1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)


def token_logprobs_and_entropy(
    logits: torch.Tensor,  # (B, T, V) logits that predict ``tokens`` (already shifted by one)
    tokens: torch.Tensor,  # (B, T) int64
    temperature: float = 1.0,
    suppressed: torch.Tensor | None = None,  # (S,) int64 token ids the sampler can never emit
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (B, T) log-probs with grad, (B, T) entropy without
    """One pass over the rows for both: log softmax(logits / temperature)[token], and (a metric, no
    gradient) the entropy of the same next-token distribution. One row at a time so the (B, T, V)
    float32 log-softmax is never materialised whole (V is 150k for Qwen). ``suppressed`` tokens
    get probability 0, as in the rollout engine, so both score the distribution that was sampled."""
    logps, entropies = [], []
    for row_logits, row_tokens in zip(logits, tokens):  # (T, V), (T,)
        row_logits = _sampling_logits(row_logits, temperature, suppressed)
        picked = row_logits.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1)  # (T,)
        logps.append(picked - torch.logsumexp(row_logits, dim=-1))
        if with_entropy:
            with torch.no_grad():
                entropies.append(_entropy(row_logits))
    return torch.stack(logps), torch.stack(entropies) if with_entropy else None


def token_logprobs(
    logits: torch.Tensor,  # (B, T, V)
    tokens: torch.Tensor,  # (B, T) int64
    temperature: float = 1.0,
    suppressed: torch.Tensor | None = None,  # (S,)
) -> torch.Tensor:  # (B, T)
    """log softmax(logits / temperature)[token]; see ``token_logprobs_and_entropy``."""
    return token_logprobs_and_entropy(logits, tokens, temperature, suppressed, with_entropy=False)[0]


@torch.no_grad()
def token_entropy(
    logits: torch.Tensor,  # (B, T, V)
    temperature: float = 1.0,
    suppressed: torch.Tensor | None = None,  # (S,)
) -> torch.Tensor:  # (B, T)
    """Entropy of the (tempered, suppressed) next-token distribution at each position; a metric,
    so no gradient. One row at a time, like ``token_logprobs``."""
    return torch.stack([_entropy(_sampling_logits(row, temperature, suppressed)) for row in logits])


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:  # (B, T)
    """Schulman's k3 estimator of KL(policy || reference): non-negative, unbiased, low variance."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1


@dataclass(frozen=True)
class LossSettings:
    """The subset of AlgorithmConfig the loss needs, as plain numbers (tests build it directly)."""

    kl_beta: float = 0.01
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    loss_agg: LossAggregation = LossAggregation.SEQ_MEAN_TOKEN_MEAN
    is_correction: bool = False
    is_cap: float = 3.0
    kl_ratio_correction: bool = False  # KL term x ratio: the unbiased reverse-KL gradient (TRL's default)
    ratio_cap: float | None = None  # dual clip: a negative-advantage token's ratio counts at most this much


def loss_settings(alg: AlgorithmConfig) -> LossSettings:
    """The loss's settings from the config. One-step-off (``max_staleness`` > 0) caps the ratio of a
    negative-advantage token at ``is_cap`` (dual clip against stale samples; docs/training.md)."""
    return LossSettings(kl_beta=alg.kl_beta, clip_eps_low=alg.clip_eps_low, clip_eps_high=alg.clip_eps_high,
                        loss_agg=alg.loss_agg, is_correction=alg.is_correction, is_cap=alg.is_cap,
                        kl_ratio_correction=alg.kl_ratio_correction,
                        ratio_cap=alg.is_cap if alg.max_staleness else None)


@dataclass(frozen=True)
class BatchTotals:
    """Global normalisers of the loss: counted over the whole optimizer batch (every micro-batch on
    every data-parallel rank), so the sum of micro-batch losses is the loss of the whole batch."""

    sequences: float  # completions with weight > 0
    tokens: float  # their real completion tokens


def policy_loss(
    logp: torch.Tensor,  # (B, T) learner log-probs, with grad
    old_logp: torch.Tensor,  # (B, T) log-probs of the policy that sampled (= logp.detach() on-policy)
    advantages: torch.Tensor,  # (B,)
    mask: torch.Tensor,  # (B, T) float
    totals: BatchTotals,
    settings: LossSettings,
    ref_logp: torch.Tensor | None = None,  # (B, T); None when kl_beta == 0
    rollout_logp: torch.Tensor | None = None,  # (B, T) rollout-engine log-probs; for is_correction
    weights: torch.Tensor | None = None,  # (B,) 1.0, or 0.0 for padding samples that fill a micro-batch
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's share of the global-batch loss, and per-micro-batch metric sums.

    Summing the returned loss over all micro-batches and ranks gives the batch loss, whatever the
    micro-batch size or rank count, because normalisers are global (``totals``)."""
    if weights is not None:
        mask = mask * weights.unsqueeze(1)
    log_ratio = logp - old_logp  # (B, T)
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(1)  # (B, 1)
    clipped = torch.clamp(ratio, 1 - settings.clip_eps_low, 1 + settings.clip_eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (B, T)
    metrics: dict[str, torch.Tensor] = {}
    if settings.ratio_cap is not None:
        # Against an older behaviour policy the clip bounds the ratio only where the advantage is
        # positive; for A < 0 the term -A * ratio is unbounded, so it is truncated at -A * cap (dual clip).
        capped = (adv < 0) & (per_token > -settings.ratio_cap * adv)  # (B, T)
        per_token = torch.where(capped, -settings.ratio_cap * adv, per_token)
        metrics["capped_token_sum"] = (capped.float() * mask).sum().detach()
    if settings.is_correction:
        if rollout_logp is None:
            raise ValueError("is_correction needs the rollout engine's log-probs")
        is_weight = torch.exp(old_logp - rollout_logp).clamp(max=settings.is_cap).detach()  # (B, T) truncated IS
        per_token = per_token * is_weight
        metrics["is_weight_sum"] = (is_weight * mask).sum()
        metrics["is_weight_max"] = (is_weight * mask).max() if mask.any() else torch.zeros(())
    if rollout_logp is not None:
        gap = (logp.detach() - rollout_logp) * mask
        metrics["logp_gap_sum"] = gap.sum()  # learner minus rollout; its mean drifts when the engines disagree
        metrics["logp_abs_gap_sum"] = gap.abs().sum()
    if settings.kl_beta > 0:
        if ref_logp is None:
            raise ValueError("kl_beta > 0 needs the reference log-probs")
        kl = k3_kl(logp, ref_logp)  # (B, T)
        metrics["kl_sum"] = (kl.detach() * mask).sum()
        if settings.kl_ratio_correction:
            kl = kl * ratio  # value unchanged on-policy (ratio = 1), gradient gains kl * grad(logp)
        per_token = per_token + settings.kl_beta * kl

    tokens_per_seq = mask.sum(-1).clamp(min=1)  # (B,)
    if settings.loss_agg is LossAggregation.SEQ_MEAN_TOKEN_MEAN:
        loss = ((per_token * mask).sum(-1) / tokens_per_seq).sum() / max(totals.sequences, 1.0)
    else:  # token-mean over the global batch
        loss = (per_token * mask).sum() / max(totals.tokens, 1.0)
    clipped_tokens = ((ratio < 1 - settings.clip_eps_low) | (ratio > 1 + settings.clip_eps_high)).float()
    metrics["clipped_token_sum"] = (clipped_tokens * mask).sum().detach()
    metrics["token_sum"] = mask.sum()
    return loss, metrics
