"""The tiny offline models (docs/base_model.md): ``build`` (tokenizer, network, cache), ``pretrain``
(the corpus SFT and its auxiliary losses), ``probe`` (what a base model can do), ``numbers`` (the
number tokens' sinusoids). Imports run one way inside: numbers <- pretrain <- probe <- build."""

from grit_ray.models.tiny.build import (
    RECIPE_VERSION,
    build_tiny_model,
    cache_root,
    cached_tiny_model,
    directory_digest,
    ensure_model,
)
from grit_ray.models.tiny.numbers import init_number_embeddings, number_sinusoids

__all__ = ["RECIPE_VERSION", "build_tiny_model", "cache_root", "cached_tiny_model", "directory_digest", "ensure_model",
           "init_number_embeddings", "number_sinusoids"]
