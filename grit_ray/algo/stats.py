"""The learner's statistics of one optimizer step: what each rank measures, how ranks combine, and
the name each is logged under. One table (``LearnerStats``'s fields) instead of name suffixes
interpreted in several places.

A rank accumulates sums over its micro-batches (``accumulate``, from ``policy_loss``'s metric sums);
``LearnerStats.reduce`` combines the ranks and turns token sums into means over the batch's real
completion tokens; ``metrics`` gives the driver its ``train/...`` names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from typing import Any


class Reduce(enum.Enum):
    SUM = "sum"  # add the ranks' values
    MAX = "max"  # the largest rank value
    SAME = "same"  # identical on every rank after the step (take rank 0's)
    TOKEN_MEAN = "token_mean"  # add the ranks' sums, then divide by the batch's tokens


def _stat(reduce: Reduce, metric: str | None, source: str | None = None, default: float | None = None) -> Any:
    """A field: how it reduces, its metric name (None: not logged), and the ``policy_loss`` metric
    it is summed from."""
    return field(default=default, metadata={"reduce": reduce, "metric": metric, "source": source})


@dataclass
class LearnerStats:
    """On a rank, TOKEN_MEAN fields hold sums over its tokens; after ``reduce``, batch means."""

    loss: float = _stat(Reduce.SUM, "train/loss", default=0.0)  # micro-batch shares of the batch loss
    tokens: float = _stat(Reduce.SUM, "train/tokens", "token_sum", default=0.0)  # real completion tokens
    clip_fraction: float = _stat(Reduce.TOKEN_MEAN, "train/clip_fraction", "clipped_token_sum", default=0.0)
    capped_fraction: float | None = _stat(Reduce.TOKEN_MEAN, "train/capped_fraction", "capped_token_sum")  # dual clip
    entropy_mean: float | None = _stat(Reduce.TOKEN_MEAN, "train/entropy")
    kl_mean: float | None = _stat(Reduce.TOKEN_MEAN, "train/kl", "kl_sum")  # None: kl_beta = 0
    is_weight_mean: float | None = _stat(Reduce.TOKEN_MEAN, "train/is_weight_mean", "is_weight_sum")
    is_weight_max: float | None = _stat(Reduce.MAX, "train/is_weight_max", "is_weight_max")
    logp_gap_mean: float | None = _stat(Reduce.TOKEN_MEAN, "train/logp_gap", "logp_gap_sum")
    logp_abs_gap_mean: float | None = _stat(Reduce.TOKEN_MEAN, "train/logp_abs_gap", "logp_abs_gap_sum")
    grad_norm: float | None = _stat(Reduce.SAME, "train/grad_norm")
    lr: float | None = _stat(Reduce.SAME, "train/lr")
    micro_batches: float | None = _stat(Reduce.SAME, "train/micro_batches")
    train_s: float | None = _stat(Reduce.MAX, None)

    def accumulate(self, loss_metrics: dict[str, Any]) -> None:
        """Add one micro-batch's ``policy_loss`` metric sums (tensors or floats) on this rank."""
        for f in fields(self):
            source = f.metadata["source"]
            if source is None or source not in loss_metrics:
                continue
            value, old = float(loss_metrics[source]), getattr(self, f.name)
            combine = max if f.metadata["reduce"] is Reduce.MAX else (lambda a, b: a + b)
            setattr(self, f.name, value if old is None else combine(old, value))

    @classmethod
    def reduce(cls, per_rank: list[LearnerStats]) -> LearnerStats:
        """The batch's statistics from every rank's sums: token sums become means over all ranks'
        real completion tokens."""
        out = cls()
        for f in fields(cls):
            values = [getattr(r, f.name) for r in per_rank if getattr(r, f.name) is not None]
            how = f.metadata["reduce"]
            if not values:
                setattr(out, f.name, None if f.default is None else f.default)
            elif how is Reduce.MAX:
                setattr(out, f.name, max(values))
            elif how is Reduce.SAME:
                setattr(out, f.name, values[0])
            else:
                setattr(out, f.name, sum(values))
        tokens = max(out.tokens, 1.0)
        means = {f.name: getattr(out, f.name) / tokens for f in fields(cls)
                 if f.metadata["reduce"] is Reduce.TOKEN_MEAN and getattr(out, f.name) is not None}
        return replace(out, tokens=tokens, **means)

    def __getitem__(self, name: str) -> float:
        """``stats["kl_mean"]``: a measured statistic by field name (KeyError when not measured)."""
        value = getattr(self, name, None)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: str) -> bool:
        return getattr(self, name, None) is not None

    def metrics(self) -> dict[str, float]:
        """The driver's ``train/...`` metrics (unmeasured statistics are left out)."""
        return {f.metadata["metric"]: float(getattr(self, f.name)) for f in fields(self)
                if f.metadata["metric"] is not None and getattr(self, f.name) is not None}
