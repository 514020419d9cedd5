"""The model families a test runs on where behaviour differs between them (docs/models.md)."""

from __future__ import annotations

import pytest

from grit_ray.config import ModelFamily

# family -> the session fixture holding its small random model (tests/conftest.py)
MODEL_FIXTURE = {ModelFamily.QWEN2_5_VL: "tiny_model_dir", ModelFamily.INTERNVL3: "tiny_internvl_dir"}
FAMILIES = pytest.mark.parametrize("family", list(MODEL_FIXTURE), ids=lambda f: f.value)


def model_dir_of(request, family: ModelFamily):
    """The family's small random model (built once per session, on first use)."""
    return request.getfixturevalue(MODEL_FIXTURE[family])
