"""Number tokens of the tiny models: every coordinate one token, embedded as sinusoids of its value."""

from __future__ import annotations

import math

from grit_ray.models.family import PIXEL_NUMBER_TOKENS


def number_sinusoids(values, dim: int, n_numbers: int = PIXEL_NUMBER_TOKENS):
    """(..., dim) sinusoids of numbers (...): periods 2 to 2K for K number tokens, sines then
    cosines. The number tokens' initial embeddings, and what pretraining asks image tokens to carry
    of their object's box."""
    import torch

    half = dim // 2
    k = torch.arange(half, dtype=torch.float32)  # (H/2,)
    period = 2.0 * float(n_numbers) ** (k / max(half - 1, 1))  # (H/2,): 2 .. 2K
    angle = 2 * math.pi * torch.as_tensor(values, dtype=torch.float32)[..., None] / period  # (..., H/2)
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def init_number_embeddings(model, tokenizer, n_numbers: int = PIXEL_NUMBER_TOKENS) -> None:
    """Rows of the input embedding and the LM head for the tokens "0" .. str(K - 1): sinusoids of
    the number (scaled to the random rows' spread), so that nearby coordinates start close together
    and a coordinate can be read out as a smooth function of a position feature."""
    import torch

    vocab = tokenizer.get_vocab()
    ids = [vocab[str(n)] for n in range(n_numbers)]
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[ids] = number_sinusoids(torch.arange(n_numbers), weight.shape[1], n_numbers) * weight.std()
