"""Training samples and the VLM micro-batches built from them.

A ``TrainSample`` is one scored completion: the chat-formatted prompt (one image placeholder), the
image reference, the completion's token ids as the rollout engine sampled them, its advantage
and, optionally, the engine's log-probs. The learner turns a list of them into a ``MicroBatch``:

    prompt part      left-padded  (B, P)   input ids expanded by the processor, image tensors
    completion part  right-padded (B, T)   sampled token ids, mask, rollout log-probs

so every completion starts at column P and the model is asked only for the last T + 1 logits.
The image goes through the family's ``PromptEncoder`` (grit_ray/models) with the same pixel limits
as on the rollout side (``model.min_pixels`` / ``max_pixels``), so image-token counts agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from grit_ray.algo.grpo import (
    BatchTotals,
    LossSettings,
    group_advantages,
    policy_loss,
    token_logprobs_and_entropy,
    zero_signal_groups,
)
from grit_ray.config import AlgorithmConfig
from grit_ray.models.family import PromptEncoder

if TYPE_CHECKING:
    from grit_ray.models.family import ModelAdapter


@dataclass
class TrainSample:
    prompt: str  # chat-templated prompt text with one image placeholder
    image: str | bytes  # path or encoded bytes; opened where tensors are built
    completion_ids: list[int]
    advantage: float
    rollout_logprobs: list[float] | None = None  # sampled-token log-probs under the rollout engine
    group_id: int = 0
    weight: float = 1.0  # 0.0: a filler that keeps data-parallel ranks in lock-step, contributes nothing
    where: str = ""  # data row (file:line) for error messages
    prompt_tokens: int = 0  # the prompt's tokens with its image's, as the rollout counted them (0: not known)

    def filler(self) -> TrainSample:
        """A zero-weight copy: same shapes, no contribution to loss or metrics."""
        return replace(self, advantage=0.0, weight=0.0)


@dataclass
class MicroBatch:
    prompt_ids: torch.Tensor  # (B, P) int64, left-padded
    prompt_mask: torch.Tensor  # (B, P) int64
    completion_ids: torch.Tensor  # (B, T) int64, right-padded
    completion_mask: torch.Tensor  # (B, T) float
    advantages: torch.Tensor  # (B,)
    weights: torch.Tensor  # (B,)
    rollout_logp: torch.Tensor | None  # (B, T) or None when any sample lacks engine log-probs
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # pixel_values, image_grid_thw, ...
    prompt_token_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, P) extras, e.g. mm_token_type_ids
    image_of_row: list[int] = field(default_factory=list)  # (B,) row -> first row with the same prompt and image

    def to(self, device: str) -> MicroBatch:
        def mv(t):
            return None if t is None else t.to(device)

        return MicroBatch(
            mv(self.prompt_ids), mv(self.prompt_mask), mv(self.completion_ids), mv(self.completion_mask),
            mv(self.advantages), mv(self.weights), mv(self.rollout_logp),
            {k: mv(v) for k, v in self.image_inputs.items()},
            {k: mv(v) for k, v in self.prompt_token_inputs.items()},
            self.image_of_row,
        )

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for the model's forward over prompt + completion."""
        B, T = self.completion_ids.shape
        extras = {
            k: torch.cat([v, torch.zeros(B, T, dtype=v.dtype, device=v.device)], dim=1)
            for k, v in self.prompt_token_inputs.items()
        }
        return {
            "input_ids": torch.cat([self.prompt_ids, self.completion_ids], dim=1),
            "attention_mask": torch.cat([self.prompt_mask, self.completion_mask.long()], dim=1),
            **self.image_inputs,
            **extras,
        }


def collate(samples: list[TrainSample], encoder: PromptEncoder, pad_id: int) -> MicroBatch:
    # the prompt part, left-padded, through the encoder's cache: a group's rows share one encoding
    prompts = encoder.encode_batch([(s.prompt, s.image, s.where) for s in samples], pad_id)
    first_row: dict[tuple[str, str | bytes], int] = {}
    image_of_row = [first_row.setdefault((s.prompt, s.image), i) for i, s in enumerate(samples)]
    B = len(samples)
    T = max(max(len(s.completion_ids) for s in samples), 1)
    completion_ids = torch.full((B, T), pad_id, dtype=torch.long)
    completion_mask = torch.zeros(B, T)
    have_rollout = all(s.rollout_logprobs is not None for s in samples)
    rollout_logp = torch.zeros(B, T) if have_rollout else None
    for i, s in enumerate(samples):
        c = len(s.completion_ids)
        completion_ids[i, :c] = torch.tensor(s.completion_ids, dtype=torch.long)
        completion_mask[i, :c] = 1.0
        if rollout_logp is not None:
            assert s.rollout_logprobs is not None  # have_rollout: every sample has them
            if len(s.rollout_logprobs) != c:
                raise ValueError(f"{s.where}: {len(s.rollout_logprobs)} rollout log-probs for {c} completion tokens")
            rollout_logp[i, :c] = torch.tensor(s.rollout_logprobs)
    token_aligned = PromptEncoder.TOKEN_ALIGNED
    return MicroBatch(
        prompt_ids=prompts["input_ids"],
        prompt_mask=prompts["attention_mask"],
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        weights=torch.tensor([s.weight for s in samples], dtype=torch.float32),
        rollout_logp=rollout_logp,
        image_inputs={k: v for k, v in prompts.items() if k not in token_aligned},  # patches / grids stacked
        prompt_token_inputs={k: v for k, v in prompts.items() if k in token_aligned[2:]},  # e.g. mm_token_type_ids
        image_of_row=image_of_row,
    )


def completion_logprobs(model, batch: MicroBatch, temperature: float = 1.0,
                        suppressed: torch.Tensor | None = None, entropy: list | None = None,
                        adapter: ModelAdapter | None = None) -> torch.Tensor:  # (B, T)
    """Per-token log-probs of the completion tokens under ``model``: one forward over prompt +
    completion, keeping only the T + 1 final logits (the last predicts nothing and is dropped).
    When ``entropy`` is a list, the (B, T) per-token entropies are appended to it (no grad).
    With the family's ``adapter``, the vision tower runs once per distinct image of the micro-batch
    (a group's completions share theirs) instead of once per row; the result is the same. Every
    micro-batch takes that path, shared images or not: under ZeRO-3 the ranks gather parameters
    module by module in the order they run, and a rank running the vision tower before the forward
    while another ran it inside would wait on each other for ever (measured: docs/learner.md)."""
    T = batch.completion_ids.shape[1]
    inputs = batch.model_inputs()
    if adapter is not None and batch.image_of_row and "pixel_values" in inputs:
        inputs = adapter.share_image_features(model, inputs, batch.image_of_row)
    logits = model(**inputs, logits_to_keep=T + 1, use_cache=False).logits  # (B, T + 1, V)
    logp, ent = token_logprobs_and_entropy(logits[:, :-1, :], batch.completion_ids, temperature, suppressed,
                                           with_entropy=entropy is not None)
    if entropy is not None:
        entropy.append(ent)
    return logp


@dataclass
class MicroBatchLoss:
    loss: torch.Tensor  # () this micro-batch's share of the global-batch loss, with grad
    metrics: dict[str, torch.Tensor]  # per-micro-batch metric sums (``policy_loss``)
    entropy_sum: float  # sum of per-token entropies over real completion tokens
    logp: torch.Tensor  # (B, T) the policy's completion log-probs, detached


def micro_batch_loss(policy, batch: MicroBatch, totals: BatchTotals, settings: LossSettings, *, reference=None,
                     temperature: float = 1.0, suppressed: torch.Tensor | None = None,
                     adapter: ModelAdapter | None = None, behaviour_ratio: bool = False,
                     where: str = "") -> MicroBatchLoss:
    """The GRPO-GR loss of one micro-batch: the reference's log-probs (no grad; ``reference`` None
    when kl_beta is 0), the policy's with entropy, and the clipped objective. ``behaviour_ratio``
    takes the ratio against the rollout engine's log-probs (one-step-off) instead of the policy's
    own detached ones. The learner ranks and bench/gpu_check.py both call it."""
    ref_logp = None
    if reference is not None:
        with torch.no_grad():
            ref_logp = completion_logprobs(reference, batch, temperature, suppressed, adapter=adapter)
    entropy: list[torch.Tensor] = []
    logp = completion_logprobs(policy, batch, temperature, suppressed, entropy, adapter=adapter)
    entropy_sum = float((entropy[0] * batch.completion_mask * batch.weights.unsqueeze(1)).sum())
    old_logp = logp.detach()
    if behaviour_ratio:
        if batch.rollout_logp is None:
            raise ValueError(f"{where}: algorithm.max_staleness=1 needs the rollout engine's log-probs of every "
                             "completion")
        old_logp = batch.rollout_logp
    loss, metrics = policy_loss(logp, old_logp, batch.advantages, batch.completion_mask, totals, settings, ref_logp,
                                batch.rollout_logp, batch.weights)
    return MicroBatchLoss(loss, metrics, entropy_sum, logp.detach())


def totals_of(samples: list[TrainSample]) -> BatchTotals:
    """Loss normalisers of a whole optimizer batch (fillers excluded)."""
    real = [s for s in samples if s.weight > 0]
    return BatchTotals(sequences=float(len(real)), tokens=float(sum(len(s.completion_ids) for s in real)))


def assign_advantages(samples: list[TrainSample], rewards: list[float],
                      algo: AlgorithmConfig) -> tuple[list[TrainSample], dict[str, float]]:
    """Group advantages over whole groups (``group_id``), wherever their members sit in the list.
    Groups whose rewards are all equal are counted, and dropped when the config says so."""
    if len(samples) != len(rewards):
        raise ValueError(f"{len(samples)} samples but {len(rewards)} rewards")
    r = torch.tensor(rewards, dtype=torch.float64)
    gid = torch.tensor([s.group_id for s in samples], dtype=torch.long)
    adv = group_advantages(r, gid, algo.adv_eps, algo.adv_std_normalize)
    flat = zero_signal_groups(r, gid)
    keep = [not (algo.drop_zero_signal_groups and bool(f)) for f in flat]
    out = [replace(s, advantage=float(a)) for s, a, k in zip(samples, adv, keep) if k]
    flat_groups = {g for g, f in zip(gid.tolist(), flat.tolist()) if f}
    stats = {
        "groups": float(len(set(gid.tolist()))),
        "zero_signal_groups": float(len(flat_groups)),
        "dropped_groups": float(len(flat_groups) if algo.drop_zero_signal_groups else 0),
        "dropped_samples": float(len(samples) - len(out)),
    }
    return out, stats
