"""Model families (one adapter each) and the tiny offline model builder."""

from __future__ import annotations

from grit_ray.config import ModelFamily
from grit_ray.models.family import ModelAdapter
from grit_ray.models.qwen2_5_vl import Qwen25VLAdapter

_ADAPTERS: dict[ModelFamily, type[ModelAdapter]] = {ModelFamily.QWEN2_5_VL: Qwen25VLAdapter}


def adapter_for(family: ModelFamily) -> ModelAdapter:
    """The adapter of ``model.family``; a family without one is a clear error, not a Qwen guess."""
    if family not in _ADAPTERS:
        known = ", ".join(f.value for f in _ADAPTERS)
        raise NotImplementedError(f"model.family={family.value}: grit_ray/models has no adapter for it yet "
                                  f"(supported: {known})")
    return _ADAPTERS[family]()
