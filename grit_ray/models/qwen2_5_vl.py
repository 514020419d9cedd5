"""Qwen2.5-VL (and the tiny offline model, which is one): the family's facts for grit-ray."""

from __future__ import annotations

from typing import Any

import torch

from grit_ray.config import CoordFrame, ModelConfig, ModelFamily, TinyModelSpec
from grit_ray.models.family import ModelAdapter

IMAGE_PAD = "<|image_pad|>"
VISION_PLACEHOLDER_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", IMAGE_PAD, "<|video_pad|>")

# the tiny model: Qwen2-VL's special tokens, in Qwen's id order
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                       "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                       "<|vision_end|>", "<|vision_pad|>", IMAGE_PAD, "<|video_pad|>")
TINY_MIN_PIXELS = 28 * 28 * 4
TINY_MAX_PIXELS = 28 * 28 * 36  # 168x168: the synthetic world's largest image, unchanged


def collapse_image_pads(token_ids: list[int], pad_id: int) -> list[int]:
    """Runs of the image-pad token -> one pad each. The HF processor expands the placeholder to one
    token per merged patch; vLLM expands it itself, so an expanded prompt would be expanded twice
    ("image features and image tokens do not match")."""
    out: list[int] = []
    for t in token_ids:
        if t == pad_id and out and out[-1] == pad_id:
            continue
        out.append(t)
    return out


def _qwen_vl(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
             tied: bool) -> dict[str, Any]:
    """The architecture keys of a published Qwen2.5-VL config.json (one vision tower for all sizes)."""
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab, tie_word_embeddings=tied)
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=hidden,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31])
    return {"model_type": "qwen2_5_vl", "text_config": text, "vision_config": vision, "tie_word_embeddings": tied}


class Qwen25VLAdapter(ModelAdapter):
    family = ModelFamily.QWEN2_5_VL
    image_pad_token = IMAGE_PAD
    placeholder_tokens = VISION_PLACEHOLDER_TOKENS
    vision_tower_names = ("visual",)
    box_frame = CoordFrame.QWEN_RESIZED  # absolute pixels of the image the processor resized
    max_prompt_tokens = 750
    model_types = ("qwen2_5_vl",)
    published_configs = {
        "Qwen/Qwen2.5-VL-3B-Instruct": _qwen_vl(2048, 11008, 36, 16, 2, 151936, tied=True),
        "Qwen/Qwen2.5-VL-7B-Instruct": _qwen_vl(3584, 18944, 28, 28, 4, 152064, tied=False),
    }

    def processor_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        return {"size": {"shortest_edge": model.min_pixels, "longest_edge": model.max_pixels}}

    def engine_mm_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        return {"min_pixels": model.min_pixels, "max_pixels": model.max_pixels}

    def engine_prompt_ids(self, token_ids: list[int], tokenizer) -> list[int]:
        return collapse_image_pads(token_ids, tokenizer.convert_tokens_to_ids(IMAGE_PAD))

    def share_image_features(self, model, inputs: dict[str, Any], image_of_row: list[int]) -> dict[str, Any]:
        """The vision tower over each distinct image's patches once; every row then gets its image's
        features through transformers' ``mm_encoder_outputs`` (gradients add up over the rows that
        share them). ``image_grid_thw`` stays per row: the 3-D rope positions are built from it."""
        grid = inputs["image_grid_thw"]  # (B, 3): one image per row
        patches = torch.split(inputs["pixel_values"], grid.prod(-1).tolist())  # per row
        distinct = sorted(set(image_of_row))
        module = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
        features = module.get_image_features(torch.cat([patches[r] for r in distinct]), grid[distinct],
                                             return_dict=True).pooler_output  # one tensor per distinct image
        by_row = dict(zip(distinct, features))
        return self.with_image_features(inputs, [by_row[r] for r in image_of_row])

    # -- the tiny offline model (grit_ray/models/tiny/) ---------------------------------------

    tiny_special_tokens = TINY_SPECIAL_TOKENS
    tiny_image_part = "<|vision_start|><|image_pad|><|vision_end|>"

    def tiny_config(self, spec: TinyModelSpec, ids: dict[str, int], text: dict[str, Any]):
        from transformers import Qwen2_5_VLConfig

        hidden = spec.hidden_size
        text = {**text, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}}
        vision = dict(
            depth=spec.vision_depth,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_heads=text["num_attention_heads"],
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[spec.vision_depth - 1],
        )
        return Qwen2_5_VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=ids[IMAGE_PAD],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=spec.tie_embeddings,
            architectures=["Qwen2_5_VLForConditionalGeneration"],
        )

    def tiny_processor(self, tokenizer, chat_template: str):
        """Images of the synthetic world keep their size (up to 168x168 = 36 image tokens)."""
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        size = {"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS}
        image_processor = Qwen2VLImageProcessor(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS, size=size,
                                                patch_size=14, merge_size=2, temporal_patch_size=2)
        video_processor = Qwen2VLVideoProcessor(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS, size=size)
        return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   video_processor=video_processor, chat_template=chat_template)

    def tiny_model_class(self):
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def image_token_features(self, model):
        return model.model.visual, lambda out: out.pooler_output  # merged, back in raster order

    def image_token_grids(self, image_inputs: dict[str, Any]) -> list[tuple[int, int]]:
        merge = 2  # the tiny model's spatial_merge_size: 2x2 patches -> one image token
        return [(int(h) // merge, int(w) // merge) for _, h, w in image_inputs["image_grid_thw"].tolist()]
