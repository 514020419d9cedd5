"""A model's size and widths, for the memory planner (``grit_ray/trainer/memory_plan.py``).

Parameter counts are exact: the transformers class of the family is built from the checkpoint's
config on the meta device (no memory, no weights), so a tied ``lm_head`` counts once, as it is
stored. The config comes from, in order: ``model.path``'s config.json (a folder, or a hub id already
in the local hub cache), the family adapter's table of published checkpoints, or, for the tiny
model, its spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grit_ray.config import ModelConfig
from grit_ray.models.family import ModelAdapter


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on. Widths are the language model's; ``vision_*`` the vision tower's."""

    source: str  # where the config came from, for the planner's report
    params: int  # every stored parameter (a tied lm_head once)
    vision_params: int  # the vision tower's (frozen with learner.freeze_vision_tower)
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    kv_dim: int  # key/value heads x head size: one token's K (or V) per layer
    tied_embeddings: bool
    vision_hidden: int
    vision_layers: int
    vision_intermediate: int
    tile_patches: int = 0  # patches of one fixed-size tile (InternVL); 0: the pixel limits set them (Qwen)
    patch_size: int = 14

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers, per byte of the cache dtype."""
        return 2 * self.layers * self.kv_dim


def ties_word_embeddings(config) -> bool:
    """Whether a transformers config ties the LM head to the input embeddings (a multimodal config
    may say so at its top level or in its text config)."""
    return bool(getattr(config, "tie_word_embeddings", False)
                or getattr(config.get_text_config(), "tie_word_embeddings", False))


def shape_from_config(config, adapter: ModelAdapter, source: str) -> ModelShape:
    """A transformers config of ``adapter``'s family -> its ModelShape (the model built on meta)."""
    import torch

    with torch.device("meta"):
        model = adapter.tiny_model_class()(config)
    params = sum(p.numel() for p in model.parameters())
    tower = adapter.vision_tower(model)
    vision_params = sum(p.numel() for p in tower.parameters()) if tower is not None else 0
    text, vision = config.get_text_config(), config.vision_config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return ModelShape(
        source=source, params=params, vision_params=vision_params, hidden=text.hidden_size,
        layers=text.num_hidden_layers, intermediate=text.intermediate_size, vocab=text.vocab_size,
        kv_dim=kv_heads * head_dim, tied_embeddings=ties_word_embeddings(config),
        vision_hidden=vision.hidden_size,
        vision_layers=getattr(vision, "depth", None) or vision.num_hidden_layers,
        vision_intermediate=vision.intermediate_size,
        tile_patches=_tile_patches(vision),
        patch_size=_first(getattr(vision, "patch_size", 14)),
    )


def _first(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _tile_patches(vision) -> int:
    size = getattr(vision, "image_size", None)
    return (_first(size) // _first(vision.patch_size)) ** 2 if size else 0


def vision_patches(model: ModelConfig, shape: ModelShape) -> int:
    """Patches the vision tower sees for the largest image ``model``'s limits allow."""
    if shape.tile_patches:
        tiles = model.max_tiles or 1
        return (tiles + (1 if tiles > 1 else 0)) * shape.tile_patches  # a thumbnail beside several tiles
    return model.max_pixels // (shape.patch_size**2)


def config_from_dict(data: dict[str, Any]):
    """A config.json's contents -> the transformers config object."""
    from transformers import AutoConfig

    data = dict(data)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def local_config_json(path: str) -> Path | None:
    """config.json of a folder, or of a hub id already in the hub cache (never downloads)."""
    folder = Path(path).expanduser()
    if (folder / "config.json").is_file():
        return folder / "config.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(path, "config.json")
    except Exception:  # not a repo id (e.g. a missing local folder)
        return None
    return Path(found) if isinstance(found, str) else None


def model_shape(model: ModelConfig, adapter: ModelAdapter) -> ModelShape:
    """``model``'s shape from the first source that knows it (module docstring); a ValueError naming
    model.path when none does."""
    if model.path is None:
        from grit_ray.models.tiny.build import tiny_config_for_spec, tiny_model_dir

        cached = tiny_model_dir(model.tiny, adapter.family) / "config.json"
        if cached.is_file():
            return shape_from_config(config_from_dict(json.loads(cached.read_text())), adapter, f"{cached}")
        return shape_from_config(tiny_config_for_spec(model.tiny, adapter), adapter, "the tiny model's spec")
    found = local_config_json(model.path)
    if found is not None:
        return shape_from_config(config_from_dict(json.loads(found.read_text())), adapter, str(found))
    if model.path in adapter.published_configs:
        return shape_from_config(config_from_dict(adapter.published_configs[model.path]), adapter,
                                 f"grit-ray's table of published {adapter.family.value} checkpoints")
    known = ", ".join(adapter.published_configs) or "none"
    raise ValueError(f"model.path: {model.path}: no config.json there or in the hub cache, and not a published "
                     f"checkpoint grit-ray knows ({known}); download it first (docs/install.md) or give a folder")
