"""InternVL3 in the Hugging Face format (transformers' ``InternVLForConditionalGeneration``, the
``-hf`` checkpoints, and the tiny offline model, which is one): the family's facts for grit-ray.

- An image is cut into square tiles (448 px for InternVL3-2B; plus a thumbnail when there are
  several); each tile becomes ``image_seq_length`` features. The processor writes ``<img>``, one
  ``<IMG_CONTEXT>`` per feature, ``</img>``; vLLM wants one ``<IMG_CONTEXT>`` per image and writes
  the rest itself (``engine_prompt_ids``).
- Boxes are written in the 0-1000 frame of the original image (docs/grit.md).
- The vision tower is ``vision_tower``; the projector (``multi_modal_projector``) sits beside it,
  not inside it, so freezing the tower leaves the projector trained.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from grit_ray.config import CoordFrame, ModelConfig, ModelFamily, TinyModelSpec
from grit_ray.models.family import ModelAdapter

IMAGE_START, IMAGE_END, IMAGE_CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
PLACEHOLDER_TOKENS = (IMAGE_START, IMAGE_END, IMAGE_CONTEXT, VIDEO)

# the tiny model: InternVL's special tokens after the shared ones, its tokenizer's named image tokens
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_START, IMAGE_END, IMAGE_CONTEXT,
                       "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", VIDEO]
TINY_NAMED_TOKENS = {"start_image_token": IMAGE_START, "end_image_token": IMAGE_END,
                     "context_image_token": IMAGE_CONTEXT, "video_token": VIDEO}
TINY_TILE = 168  # px: the synthetic world's largest image in one tile; 12x12 patches of 14 -> 6x6 = 36 features
TINY_PATCH = 14
TINY_DOWNSAMPLE = 0.5  # pixel shuffle: 2x2 patches -> one feature
TINY_FEATURES = int((TINY_TILE // TINY_PATCH) ** 2 * TINY_DOWNSAMPLE ** 2)  # per tile: 36


def collapse_image_spans(token_ids: list[int], start_id: int, end_id: int, context_id: int) -> list[int]:
    """Every ``<img> <IMG_CONTEXT> x N </img>`` span -> one ``<IMG_CONTEXT>``: vLLM's InternVL
    processor takes the image's place from a single context token and writes the span itself, with
    its own tile count (an expanded prompt would be expanded twice)."""
    out: list[int] = []
    inside = False
    for t in token_ids:
        if t == start_id:
            inside = True
            out.append(context_id)
        elif t == end_id:
            inside = False
        elif not inside:
            out.append(t)
    return out


def _internvl3(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> dict[str, Any]:
    """The architecture keys of a published InternVL3 -hf config.json: InternViT-300M and a Qwen2.5
    language model (untied lm_head)."""
    text = dict(model_type="qwen2", hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=151674, tie_word_embeddings=False)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=[448, 448], patch_size=[14, 14], use_qk_norm=False, use_mean_pooling=True)
    return {"model_type": "internvl", "text_config": text, "vision_config": vision, "downsample_ratio": 0.5,
            "image_seq_length": 256, "tie_word_embeddings": False}


class InternVL3Adapter(ModelAdapter):
    family = ModelFamily.INTERNVL3
    image_pad_token = IMAGE_CONTEXT
    placeholder_tokens = PLACEHOLDER_TOKENS
    vision_tower_names = ("vision_tower",)
    box_frame = CoordFrame.NORM1000
    max_prompt_tokens = 1500  # GRIT's limit for InternVL3 (tiles make prompts long)
    model_types = ("internvl",)  # the Hugging Face (-hf) format
    published_configs = {
        "OpenGVLab/InternVL3-2B-hf": _internvl3(1536, 8960, 28, 12, 2),
        "OpenGVLab/InternVL3-8B-hf": _internvl3(3584, 18944, 28, 28, 4),
    }
    unsupported_model_types = {"internvl_chat": "InternVL's original remote-code format; use its Hugging Face format "
                                                "(the -hf checkpoint, e.g. OpenGVLab/InternVL3-2B-hf; docs/reproduce.md)"}

    def processor_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        """Tiling: ``model.max_tiles`` tiles at most (a thumbnail is added when there are several);
        null keeps the checkpoint processor's own setting. Pixel limits do not apply: every tile
        is resized to the tile size."""
        if model.max_tiles is None:
            return {}
        return {"crop_to_patches": model.max_tiles > 1, "min_patches": 1, "max_patches": model.max_tiles}

    def engine_mm_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        return self.processor_kwargs(model)  # vLLM runs the same HF processor with these overrides

    def engine_prompt_ids(self, token_ids: list[int], tokenizer) -> list[int]:
        start, end, context = tokenizer.convert_tokens_to_ids([IMAGE_START, IMAGE_END, IMAGE_CONTEXT])
        return collapse_image_spans(token_ids, start, end, context)

    def share_image_features(self, model, inputs: dict[str, Any], image_of_row: list[int]) -> dict[str, Any]:
        """The vision tower over each distinct image's tiles once; every row then gets its image's
        features through ``mm_encoder_outputs``. A row's tile count is its context tokens divided
        by the features per tile."""
        module = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
        config = module.config
        per_tile = config.image_seq_length
        tiles = ((inputs["input_ids"] == config.image_token_id).sum(1) // per_tile).tolist()  # (B,) tiles per row
        by_row_tiles = torch.split(inputs["pixel_values"], tiles)  # per row: (tiles_r, 3, T, T)
        distinct = sorted(set(image_of_row))
        features = module.get_image_features(torch.cat([by_row_tiles[r] for r in distinct]),
                                             return_dict=True).pooler_output  # (sum tiles, per_tile, D)
        by_image = dict(zip(distinct, torch.split(features, [tiles[r] for r in distinct])))
        return self.with_image_features(inputs, torch.cat([by_image[r] for r in image_of_row]))  # row order

    # -- the tiny offline model (grit_ray/models/tiny/) ---------------------------------------

    tiny_special_tokens = tuple(TINY_SPECIAL_TOKENS)
    tiny_named_tokens = TINY_NAMED_TOKENS
    tiny_image_part = IMAGE_CONTEXT + "\n"  # InternVL's chat template puts the image on its own line

    def tiny_config(self, spec: TinyModelSpec, ids: dict[str, int], text: dict[str, Any]):
        from transformers import InternVLConfig

        hidden = spec.hidden_size
        vision = dict(
            hidden_size=hidden, num_hidden_layers=spec.vision_depth, num_attention_heads=text["num_attention_heads"],
            intermediate_size=2 * hidden, image_size=[TINY_TILE, TINY_TILE], patch_size=[TINY_PATCH, TINY_PATCH],
            use_mean_pooling=True, use_qk_norm=False,
        )
        return InternVLConfig(
            vision_config=vision,
            text_config={"model_type": "qwen2", **text},
            image_token_id=ids[IMAGE_CONTEXT],
            image_seq_length=TINY_FEATURES,
            downsample_ratio=TINY_DOWNSAMPLE,
            tie_word_embeddings=spec.tie_embeddings,
            architectures=["InternVLForConditionalGeneration"],
        )

    def tiny_processor(self, tokenizer, chat_template: str):
        from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

        tile = {"height": TINY_TILE, "width": TINY_TILE}
        images = GotOcr2ImageProcessor(size=tile, crop_to_patches=False, min_patches=1, max_patches=1)
        return InternVLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=InternVLVideoProcessor(size=tile),
                                 image_seq_length=TINY_FEATURES, chat_template=chat_template)

    def tiny_model_class(self):
        from transformers import InternVLForConditionalGeneration

        return InternVLForConditionalGeneration

    def image_token_features(self, model):
        # (tiles, features, hidden): the pixel shuffle keeps the patches' row-by-row order
        return model.model.multi_modal_projector, lambda out: out.reshape(-1, out.shape[-1])

    def image_token_grids(self, image_inputs: dict[str, Any]) -> list[tuple[int, int]]:
        side = math.isqrt(TINY_FEATURES)  # the tiny processor puts each image in one tile
        return [(side, side)] * image_inputs["pixel_values"].shape[0]
