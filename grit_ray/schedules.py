"""Learning-rate schedules, one function for the RL learner and the tiny model's pretraining (it sits
at the bottom of the layers so that both can use it)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, decay_from: int, floor: float = 0.0,
                  peak: float = 1.0, constant: bool = False) -> float:
    """The learning rate at ``step``: ``peak`` x a linear warm-up over ``warmup_steps`` x a cosine decay
    from 1 at step ``decay_from`` to ``floor`` at ``total_steps`` (flat at 1 with ``constant``).

    The RL learner decays after its warm-up (``decay_from=warmup_steps``); pretraining decays from step
    0, under the warm-up (``decay_from=0``), as the tiny base models were built. The products are taken
    in this order so that the pretraining's rates, hence its weights, stay those of the recorded builds.
    """
    warm = min(1.0, (step + 1) / max(warmup_steps, 1))
    if constant:
        return peak * warm
    span = max(total_steps - decay_from, 1)
    angle = math.pi * min(max(step - decay_from, 0), span) / span
    return peak * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(angle)))
