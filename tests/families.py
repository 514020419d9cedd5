"""The model families a test runs on where behaviour differs between them (docs/models.md)."""

from __future__ import annotations

import pytest

from grit_ray.config import ModelFamily
from grit_ray.models.shape import ties_word_embeddings

# family -> the session fixture holding its small random model (tests/conftest.py)
MODEL_FIXTURE = {ModelFamily.QWEN2_5_VL: "tiny_model_dir", ModelFamily.INTERNVL3: "tiny_internvl_dir"}
FAMILIES = pytest.mark.parametrize("family", list(MODEL_FIXTURE), ids=lambda f: f.value)
# the small random Qwen2.5-VL with its LM head tied to the input embeddings, as Qwen2.5-VL-3B's is
TIED_FIXTURE = "tiny_tied_dir"
# (family, model fixture, test id): each family's model, and the tied one, for the sync, save and vLLM tests
MODEL_VARIANTS = [(family, fixture, family.value) for family, fixture in MODEL_FIXTURE.items()] + [
    (ModelFamily.QWEN2_5_VL, TIED_FIXTURE, "qwen2.5-vl-tied")]


def model_dir_of(request, family: ModelFamily):
    """The family's small random model (built once per session, on first use)."""
    return request.getfixturevalue(MODEL_FIXTURE[family])


def load_learner_weights(model, weights: dict) -> None:
    """The learner's full weights into a transformers model of the same shape. They are its named
    parameters, so a tied LM head comes once, as the input embeddings; everything else must match."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if ties_word_embeddings(model.config) else set()
    assert not unexpected and set(missing) == tied, (missing, unexpected)
    if tied:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
