"""The model-family seam."""

import pytest

from grit_ray.config import CoordFrame, ModelConfig, ModelFamily, load_config
from grit_ray.models import adapter_for, box_frame_spec, max_prompt_tokens
from grit_ray.models.internvl3 import collapse_image_spans


class _Tok:
    vocab = {"<|image_pad|>": 7, "<|vision_start|>": 5, "a": 1, "<img>": 20, "</img>": 21, "<IMG_CONTEXT>": 22}

    def get_vocab(self):
        return self.vocab

    def convert_tokens_to_ids(self, t):
        return [self.vocab[x] for x in t] if isinstance(t, list) else self.vocab[t]


def test_qwen_adapter_facts():
    a = adapter_for(ModelFamily.QWEN2_5_VL)
    assert a.box_frame is CoordFrame.QWEN_RESIZED and a.max_prompt_tokens == 750
    model = ModelConfig(min_pixels=3136, max_pixels=12544)
    assert a.processor_kwargs(model) == {"size": {"shortest_edge": 3136, "longest_edge": 12544}}
    assert a.engine_mm_kwargs(model) == {"min_pixels": 3136, "max_pixels": 12544}
    assert a.forbidden_tokens(_Tok()) == ["<|vision_start|>", "<|image_pad|>"]  # only those the vocabulary has
    assert a.engine_prompt_ids([1, 5, 7, 7, 7, 2], _Tok()) == [1, 5, 7, 2]  # vLLM expands the pad itself


def test_internvl_adapter_facts():
    a = adapter_for(ModelFamily.INTERNVL3)
    assert a.box_frame is CoordFrame.NORM1000 and a.max_prompt_tokens == 1500
    assert a.vision_tower_names == ("vision_tower",)
    assert a.forbidden_tokens(_Tok()) == ["<img>", "</img>", "<IMG_CONTEXT>"]
    # tiling: the checkpoint's own setting unless model.max_tiles says otherwise; vLLM gets the same
    assert a.processor_kwargs(ModelConfig(family=ModelFamily.INTERNVL3)) == {}
    tiled = ModelConfig(family=ModelFamily.INTERNVL3, max_tiles=2)
    assert a.processor_kwargs(tiled) == {"crop_to_patches": True, "min_patches": 1, "max_patches": 2}
    assert a.engine_mm_kwargs(tiled) == {"crop_to_patches": True, "min_patches": 1, "max_patches": 2}
    one = ModelConfig(family=ModelFamily.INTERNVL3, max_tiles=1)
    assert a.processor_kwargs(one)["crop_to_patches"] is False
    # <img> ctx x N </img> -> one ctx per image: vLLM writes the span itself
    assert a.engine_prompt_ids([1, 20, 22, 22, 22, 21, 1], _Tok()) == [1, 22, 1]


def test_collapse_image_spans():
    assert collapse_image_spans([1, 8, 9, 9, 7, 2, 8, 9, 7], 8, 7, 9) == [1, 9, 2, 9]
    assert collapse_image_spans([], 8, 7, 9) == [] and collapse_image_spans([1, 2], 8, 7, 9) == [1, 2]


def test_the_family_decides_the_box_frame_and_prompt_limit_unless_configured():
    qwen = load_config()
    assert box_frame_spec(qwen).frame is CoordFrame.QWEN_RESIZED and max_prompt_tokens(qwen) == 750
    internvl = load_config(overrides=["model.family=internvl3"])
    assert box_frame_spec(internvl).frame is CoordFrame.NORM1000 and max_prompt_tokens(internvl) == 1500
    set_ = load_config(overrides=["model.family=internvl3", "reward.coord_frame=original", "prompt.max_prompt_tokens=900"])
    assert box_frame_spec(set_).frame is CoordFrame.ORIGINAL and max_prompt_tokens(set_) == 900


def test_tiling_is_refused_for_a_family_that_does_not_tile():
    from grit_ray.config import ConfigError

    with pytest.raises(ConfigError, match="model: max_tiles: qwen2.5-vl does not tile images"):
        load_config(overrides=["model.max_tiles=2"])


def test_the_checkpoint_names_its_family_and_the_remote_code_format_is_refused(tmp_path):
    import json

    from grit_ray.models import checkpoint_family, checkpoint_problem

    def checkpoint(name: str, model_type: str):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": model_type}))
        return str(tmp_path / name)

    hf, qwen, remote = checkpoint("hf", "internvl"), checkpoint("qwen", "qwen2_5_vl"), checkpoint("rc", "internvl_chat")
    assert checkpoint_family(hf) is ModelFamily.INTERNVL3 and checkpoint_family(qwen) is ModelFamily.QWEN2_5_VL
    assert checkpoint_family("OpenGVLab/InternVL3-2B-hf") is None  # a hub id: not read here
    assert checkpoint_problem(hf, ModelFamily.INTERNVL3) is None
    assert "set model.family=internvl3" in checkpoint_problem(hf, ModelFamily.QWEN2_5_VL)
    assert "InternVL3-2B-hf" in checkpoint_problem(remote, ModelFamily.INTERNVL3)
    assert checkpoint_problem(str(tmp_path / "none"), ModelFamily.INTERNVL3) == "no such model directory"
