"""Qwen2.5-VL (and the tiny offline model, which is one): the family's facts for grit-ray."""

from __future__ import annotations

from typing import Any

import torch

from grit_ray.config import CoordFrame, ModelFamily
from grit_ray.models.family import ModelAdapter

IMAGE_PAD = "<|image_pad|>"
VISION_PLACEHOLDER_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", IMAGE_PAD, "<|video_pad|>")


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


class Qwen25VLAdapter(ModelAdapter):
    family = ModelFamily.QWEN2_5_VL
    image_pad_token = IMAGE_PAD
    placeholder_tokens = VISION_PLACEHOLDER_TOKENS
    vision_tower_names = ("visual",)
    box_frame = CoordFrame.QWEN_RESIZED  # absolute pixels of the image the processor resized

    def processor_kwargs(self, min_pixels: int, max_pixels: int) -> dict[str, Any]:
        return {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}

    def engine_mm_kwargs(self, min_pixels: int, max_pixels: int) -> dict[str, Any]:
        return {"min_pixels": min_pixels, "max_pixels": max_pixels}

    def engine_prompt_ids(self, token_ids: list[int], tokenizer) -> list[int]:
        return collapse_image_pads(token_ids, tokenizer.convert_tokens_to_ids(IMAGE_PAD))

    def share_image_features(self, model, inputs: dict[str, Any], image_of_row: list[int]) -> dict[str, Any]:
        """The vision tower over each distinct image's patches once; every row then gets its image's
        features through transformers' ``mm_encoder_outputs`` (gradients add up over the rows that
        share them). ``image_grid_thw`` stays per row: the 3-D rope positions are built from it."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        grid = inputs["image_grid_thw"]  # (B, 3): one image per row
        patches = torch.split(inputs["pixel_values"], grid.prod(-1).tolist())  # per row
        distinct = sorted(set(image_of_row))
        module = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
        features = module.get_image_features(torch.cat([patches[r] for r in distinct]), grid[distinct],
                                             return_dict=True).pooler_output  # one tensor per distinct image
        by_row = dict(zip(distinct, features))
        out = {k: v for k, v in inputs.items() if k != "pixel_values"}
        out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=[by_row[r] for r in image_of_row])}
        return out
