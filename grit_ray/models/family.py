"""The model-family seam: every fact that differs between VLM families lives in one adapter.

An adapter says which tokens stand for image features (never to be sampled), how a prompt's image
placeholder is laid out for the rollout engine, how the Hugging Face processor and vLLM are told
the pixel limits, where the vision tower sits, and which box frame the family writes. Workers ask
``adapter_for(cfg.model.family)``; nothing outside ``grit_ray/models`` names a family's token.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any, ClassVar

from grit_ray.config import CoordFrame, ModelConfig, ModelFamily, TinyModelSpec

PIXEL_NUMBER_TOKENS = 400  # "0" .. "399": every pixel coordinate of the synthetic world's images (and more)
NORM1000_NUMBER_TOKENS = 1001  # "0" .. "1000"


class PromptEncoder:
    """Prompt text + image -> processor tensors, with the configured pixel limits, the same way on
    the rollout and the learner side. Caches per (prompt, image): a group's G completions share one
    prompt."""

    # processor outputs with one value per prompt token, padded with the prompt in a batch
    TOKEN_ALIGNED: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")

    def __init__(self, processor, processor_kwargs: dict[str, Any]):
        self.processor = processor
        self.processor_kwargs = processor_kwargs
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}

    def encode(self, prompt: str, image: str | bytes, where: str = "") -> dict[str, Any]:
        from grit_ray.data.rows import open_image

        key = (prompt, image if isinstance(image, str) else hashlib.sha1(image).hexdigest())
        if key not in self._cache:
            self._cache[key] = self.encode_image(prompt, open_image(image, where or "train sample"))
        return self._cache[key]

    def encode_image(self, prompt: str, image) -> dict[str, Any]:
        """Prompt text + an opened PIL image -> processor tensors (not cached)."""
        return dict(self.processor(text=[prompt], images=[image], return_tensors="pt", **self.processor_kwargs))

    def encode_batch(self, items: list[tuple[str, str | bytes, str]], pad_id: int) -> dict[str, Any]:
        """(prompt, image, where) rows -> one left-padded batch, the tensors the processor gives for
        the same lists with ``padding_side="left"``. Each row goes through ``encode`` (cached), so a
        prompt repeated for a group's completions is processed once and its image tensors repeated.
        Token-aligned tensors are left-padded (ids with ``pad_id``, mask and token types with 0);
        every other tensor (pixel values, image grid: one block per image) is concatenated along
        dim 0 in row order. A family whose processor batches its images otherwise overrides this."""
        import torch

        encoded = [self.encode(prompt, image, where) for prompt, image, where in items]
        lengths = [e["input_ids"].shape[1] for e in encoded]
        width = max(lengths)
        out: dict[str, Any] = {}
        for key in encoded[0]:
            parts = [e[key] for e in encoded]
            if key in self.TOKEN_ALIGNED:
                fill = pad_id if key == "input_ids" else 0
                padded = torch.full((len(parts), width), fill, dtype=parts[0].dtype)
                for i, (t, n) in enumerate(zip(parts, lengths)):
                    padded[i, width - n:] = t[0]
                out[key] = padded
            else:
                out[key] = torch.cat(parts, dim=0)
        return out

    def clear(self) -> None:
        self._cache.clear()


class ModelAdapter(abc.ABC):
    """What grit-ray must know about one model family."""

    family: ClassVar[ModelFamily]
    image_pad_token: ClassVar[str]  # the prompt's image placeholder, one per image feature once expanded
    placeholder_tokens: ClassVar[tuple[str, ...]]  # tokens that stand for image/video features
    vision_tower_names: ClassVar[tuple[str, ...]]  # attribute of the (inner) model holding the vision tower
    box_frame: ClassVar[CoordFrame]  # the frame the family writes boxes in (reward.coord_frame: null)
    max_prompt_tokens: ClassVar[int]  # GRIT's prompt limit, image tokens included (prompt.max_prompt_tokens: null)
    model_types: ClassVar[tuple[str, ...]]  # config.json "model_type" of the family's checkpoints
    # model types of the family's formats grit-ray cannot load -> what to use instead
    unsupported_model_types: ClassVar[dict[str, str]] = {}
    # hub id -> the architecture part of its config.json: the memory planner sizes these without
    # the hub (grit_ray/models/shape.py)
    published_configs: ClassVar[dict[str, dict[str, Any]]] = {}

    def forbidden_tokens(self, tokenizer) -> list[str]:
        """The placeholder tokens this tokenizer actually has. A policy that samples one produces
        inputs the model cannot consume ("image features and image tokens do not match"); unknown
        ones would map to UNK or split into ordinary pieces, and banning those would ban real text."""
        vocab = tokenizer.get_vocab()
        return [t for t in self.placeholder_tokens if t in vocab]

    def forbidden_token_ids(self, tokenizer) -> list[int]:
        vocab = tokenizer.get_vocab()
        return [vocab[t] for t in self.forbidden_tokens(tokenizer)]

    @abc.abstractmethod
    def processor_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        """Keyword arguments that give the Hugging Face processor ``model``'s image limits."""

    @abc.abstractmethod
    def engine_mm_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        """vLLM's ``mm_processor_kwargs`` for the same limits (image-token counts must agree)."""

    @abc.abstractmethod
    def engine_prompt_ids(self, token_ids: list[int], tokenizer) -> list[int]:
        """Processor-expanded prompt ids -> the ids the rollout engine expects with the image."""

    def share_image_features(self, model, inputs: dict[str, Any], image_of_row: list[int]) -> dict[str, Any]:
        """Forward kwargs in which the vision tower runs once per distinct image: ``image_of_row[i]``
        is the first row whose prompt and image row ``i`` shares. A family without that path keeps
        ``inputs`` (one vision pass per row)."""
        return inputs

    @staticmethod
    def with_image_features(inputs: dict[str, Any], features) -> dict[str, Any]:
        """``inputs`` with the vision tower's output ``features`` in place of the pixels, through
        transformers' ``mm_encoder_outputs`` (the form ``share_image_features`` returns)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        out = {k: v for k, v in inputs.items() if k != "pixel_values"}
        out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features)}
        return out

    def prompt_encoder(self, processor, model: ModelConfig) -> PromptEncoder:
        return PromptEncoder(processor, self.processor_kwargs(model))

    def vision_tower(self, model):
        """The vision tower module of a loaded model, or None."""
        import torch

        for owner in (getattr(model, "model", None), model):
            for name in self.vision_tower_names:
                if owner is not None and isinstance(getattr(owner, name, None), torch.nn.Module):
                    return getattr(owner, name)
        return None

    # -- the tiny offline model (grit_ray/models/tiny/): the family's parts of it -------------

    tiny_special_tokens: ClassVar[tuple[str, ...]]  # in id order, after the BPE vocabulary; the first pads
    tiny_named_tokens: ClassVar[dict[str, str]] = {}  # tokenizer attributes the family's processor reads
    tiny_image_part: ClassVar[str]  # what the chat template writes for an image

    @abc.abstractmethod
    def tiny_config(self, spec: TinyModelSpec, ids: dict[str, int], text: dict[str, Any]):
        """The transformers config: ``text`` holds the text model's settings, ``ids`` the special
        tokens' ids."""

    @abc.abstractmethod
    def tiny_processor(self, tokenizer, chat_template: str):
        """The processor: the family's image processor at the tiny model's image size."""

    @abc.abstractmethod
    def tiny_model_class(self):
        """The transformers class the tiny model is built with."""

    @abc.abstractmethod
    def image_token_features(self, model):
        """The module whose output holds the language model's input features of every image token,
        and a function from that output to a (image tokens of the batch, hidden) tensor in the
        images' order, each image's tokens row by row (the tiny model's pretraining supervises them)."""

    @abc.abstractmethod
    def image_token_grids(self, image_inputs: dict[str, Any]) -> list[tuple[int, int]]:
        """(rows, columns) of image tokens for each image of a processor output (the tiny models put
        an image in one tile), tokens covering the image evenly."""

    @property
    def tiny_number_tokens(self) -> int:
        """Whole numbers that are one token each: every coordinate the family writes for the
        synthetic world's images (up to 399 px; 0-1000 in the norm1000 frame)."""
        return NORM1000_NUMBER_TOKENS if self.box_frame is CoordFrame.NORM1000 else PIXEL_NUMBER_TOKENS
