"""The tiny InternVL3: transformers' native InternVL classes, built offline, loadable by the Auto
classes (vLLM serving is tested in tests/integration/test_rollout.py)."""

import json

import pytest
import torch
from PIL import Image

from grit_ray.cli import main
from grit_ray.config import ModelConfig, ModelFamily
from grit_ray.grit.prompts import chat_messages
from grit_ray.models import adapter_for
from grit_ray.models.internvl3 import IMAGE_CONTEXT, IMAGE_END, IMAGE_START, PLACEHOLDER_TOKENS
from grit_ray.models.tiny import directory_digest

ADAPTER = adapter_for(ModelFamily.INTERNVL3)


@pytest.fixture(scope="module")
def hf(tiny_internvl_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return (AutoProcessor.from_pretrained(tiny_internvl_dir),
            AutoModelForImageTextToText.from_pretrained(tiny_internvl_dir).eval())


def test_cli_builds_the_same_bytes_and_the_families_differ(tmp_path, tiny_internvl_dir, tiny_model_dir):
    assert main(["model", "tiny", "--family", "internvl3", "--out", str(tmp_path / "again"), "--random"]) == 0
    assert directory_digest(tmp_path / "again") == directory_digest(tiny_internvl_dir)
    assert directory_digest(tiny_internvl_dir) != directory_digest(tiny_model_dir)
    meta = json.loads((tiny_internvl_dir / "grit_ray_tiny.json").read_text())
    assert meta["family"] == "internvl3" and len(meta["vision_placeholder_ids"]) == len(PLACEHOLDER_TOKENS)


def test_native_internvl_classes_with_a_qwen2_text_model(hf):
    proc, model = hf
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    assert type(proc).__name__ == "InternVLProcessor" and model.config.text_config.model_type == "qwen2"
    assert model.config.image_token_id == proc.tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT)
    assert not model.config.tie_word_embeddings
    assert ADAPTER.vision_tower(model) is model.model.vision_tower


def test_every_norm1000_coordinate_is_one_token(hf):
    tok = hf[0].tokenizer
    assert all(len(tok.encode(str(n), add_special_tokens=False)) == 1 for n in range(1001))


def test_chat_template_and_image_expansion(hf):
    proc, model = hf
    text = proc.apply_chat_template(chat_messages("How many?"), add_generation_prompt=True, tokenize=False)
    # the tiny checkpoint puts the question before the image (docs/base_model.md), the image on its own line
    assert "<|im_start|>user\n\nQuestion: How many? First, think" in text
    assert text.endswith(f"after <answer>.\n{IMAGE_CONTEXT}\n<|im_end|>\n<|im_start|>assistant\n")
    inputs = proc(text=[text], images=[Image.new("RGB", (140, 168), (255, 0, 0))], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    # one 168-px tile: 12x12 patches, pixel-shuffled 2x2 -> 36 features between <img> and </img>
    assert inputs["pixel_values"].shape == (1, 3, 168, 168)
    start, end, ctx = proc.tokenizer.convert_tokens_to_ids([IMAGE_START, IMAGE_END, IMAGE_CONTEXT])
    assert ids.count(ctx) == 36 == model.config.image_seq_length
    assert ids[ids.index(start) + 37] == end
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > len(ids)


def test_tiles_from_max_tiles_agree_with_the_token_count(hf):
    """model.max_tiles: a wide image is cut into tiles plus a thumbnail, each 36 features."""
    proc, _ = hf
    text = proc.apply_chat_template(chat_messages("Where?"), add_generation_prompt=True, tokenize=False)
    wide = Image.new("RGB", (672, 168), (0, 0, 255))
    kwargs = ADAPTER.processor_kwargs(ModelConfig(family=ModelFamily.INTERNVL3, max_tiles=4))
    inputs = proc(text=[text], images=[wide], return_tensors="pt", **kwargs)
    tiles = inputs["pixel_values"].shape[0]
    assert tiles == 5  # four 168-px tiles across and the thumbnail
    assert (inputs["input_ids"] == proc.tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT)).sum() == 36 * tiles
    single = proc(text=[text], images=[wide], return_tensors="pt",
                  **ADAPTER.processor_kwargs(ModelConfig(family=ModelFamily.INTERNVL3, max_tiles=1)))
    assert single["pixel_values"].shape[0] == 1


def test_generation_never_emits_image_placeholders(hf):
    proc, model = hf
    ids = set(ADAPTER.forbidden_token_ids(proc.tokenizer))
    assert set(model.generation_config.suppress_tokens) == ids and len(ids) == len(PLACEHOLDER_TOKENS)
    text = proc.apply_chat_template(chat_messages("Count."), add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text] * 4, images=[Image.new("RGB", (168, 168), (0, 0, 255))] * 4, return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits[0, -1].softmax(-1)
    assert probs[sorted(ids)].sum() > 1e-4  # the random model does put mass on them ...
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=64, do_sample=True, temperature=1.5)
    assert not (set(out[:, inputs["input_ids"].shape[1]:].flatten().tolist()) & ids)  # ... and never samples them


def test_image_token_features_cover_the_tile_row_by_row(hf):
    """Pretraining supervises image token i as the cell (i // 6, i % 6) of the tile: the pixel
    shuffle must keep the patches' row-by-row order, and every image gives 6x6 features."""
    proc, model = hf
    rows = torch.arange(12.0)[:, None].expand(12, 12)
    cols = torch.arange(12.0)[None, :].expand(12, 12)
    shuffled = model.model.pixel_shuffle(torch.stack([rows, cols], dim=-1)[None], scale_factor=0.5)  # (1, 6, 6, 8)
    tokens = shuffled.reshape(36, 4, 2)  # each token: its four patches' (row, column)
    for i in range(36):
        assert set(tokens[i, :, 0].tolist()) == {2 * (i // 6), 2 * (i // 6) + 1}
        assert set(tokens[i, :, 1].tolist()) == {2 * (i % 6), 2 * (i % 6) + 1}
    module, features_of = ADAPTER.image_token_features(model)
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(features_of(out)))
    images = [Image.new("RGB", (168, 140)), Image.new("RGB", (140, 140))]
    inputs = proc(text=[IMAGE_CONTEXT, IMAGE_CONTEXT], images=images, return_tensors="pt")
    try:
        with torch.no_grad():
            model.model.get_image_features(pixel_values=inputs["pixel_values"])
    finally:
        handle.remove()
    assert ADAPTER.image_token_grids(inputs) == [(6, 6), (6, 6)]
    assert seen[0].shape == (72, model.config.text_config.hidden_size)
