"""The model-family seam."""

import pytest

from grit_ray.config import CoordFrame, ModelFamily
from grit_ray.models import adapter_for


class _Tok:
    vocab = {"<|image_pad|>": 7, "<|vision_start|>": 5, "a": 1}

    def get_vocab(self):
        return self.vocab

    def convert_tokens_to_ids(self, t):
        return self.vocab[t]


def test_qwen_adapter_facts():
    a = adapter_for(ModelFamily.QWEN2_5_VL)
    assert a.box_frame is CoordFrame.QWEN_RESIZED
    assert a.processor_kwargs(3136, 12544) == {"size": {"shortest_edge": 3136, "longest_edge": 12544}}
    assert a.engine_mm_kwargs(3136, 12544) == {"min_pixels": 3136, "max_pixels": 12544}
    assert a.forbidden_tokens(_Tok()) == ["<|vision_start|>", "<|image_pad|>"]  # only those the vocabulary has
    assert a.engine_prompt_ids([1, 5, 7, 7, 7, 2], _Tok()) == [1, 5, 7, 2]  # vLLM expands the pad itself


def test_a_family_without_an_adapter_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="model.family=internvl3"):
        adapter_for(ModelFamily.INTERNVL3)
