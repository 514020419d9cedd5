"""Model families (one adapter each) and the tiny offline model builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from grit_ray.config import ModelFamily
from grit_ray.grit.grounding import FrameSpec
from grit_ray.models.family import ModelAdapter
from grit_ray.models.files import model_path_problem
from grit_ray.models.internvl3 import InternVL3Adapter
from grit_ray.models.qwen2_5_vl import Qwen25VLAdapter

if TYPE_CHECKING:
    from grit_ray.config import GritConfig

_ADAPTERS: dict[ModelFamily, type[ModelAdapter]] = {
    ModelFamily.QWEN2_5_VL: Qwen25VLAdapter,
    ModelFamily.INTERNVL3: InternVL3Adapter,
}


def adapter_for(family: ModelFamily) -> ModelAdapter:
    """The adapter of ``model.family``; a family without one is a clear error, not a Qwen guess."""
    if family not in _ADAPTERS:
        known = ", ".join(f.value for f in _ADAPTERS)
        raise NotImplementedError(f"model.family={family.value}: grit_ray/models has no adapter for it yet "
                                  f"(supported: {known})")
    return _ADAPTERS[family]()


def box_frame_spec(cfg: GritConfig) -> FrameSpec:
    """How the policy's boxes are read: ``reward.coord_frame``, or the family's frame when null."""
    frame = cfg.reward.coord_frame or adapter_for(cfg.model.family).box_frame
    return FrameSpec(frame, cfg.model.min_pixels, cfg.model.max_pixels)


def max_prompt_tokens(cfg: GritConfig) -> int:
    """``prompt.max_prompt_tokens``, or the family's GRIT limit when null."""
    return cfg.prompt.max_prompt_tokens or adapter_for(cfg.model.family).max_prompt_tokens


def _model_type(path: str) -> str | None:
    """``model_type`` of a local checkpoint's config.json; None for a hub id or a directory without one."""
    config = Path(path).expanduser() / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def _family_of(model_type: str | None) -> ModelFamily | None:
    return next((f for f, a in _ADAPTERS.items() if model_type in a.model_types), None)


def checkpoint_family(path: str) -> ModelFamily | None:
    """The family of a local checkpoint, read from its config.json; None for a hub id, a directory
    without config.json, or a model type no adapter claims."""
    return _family_of(_model_type(path))


def checkpoint_problem(path: str, family: ModelFamily) -> str | None:
    """Why the policy at ``path`` cannot run as ``family``, or None: no such directory, not a model
    directory, a format grit-ray cannot load, or another family's checkpoint. A hub id is left to
    the loader (a cluster node may fetch it)."""
    if (problem := model_path_problem(path)) is not None:
        return problem
    model_type = _model_type(path)
    for adapter in _ADAPTERS.values():
        if model_type in adapter.unsupported_model_types:
            return f"model_type {model_type!r} is {adapter.unsupported_model_types[model_type]}"
    found = _family_of(model_type)
    if found is not None and found is not family:
        return (f"the checkpoint is {found.value} (config.json model_type {model_type!r}), but model.family is "
                f"{family.value}: set model.family={found.value}")
    return None
