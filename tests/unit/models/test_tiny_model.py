import json

import pytest
import torch
from PIL import Image

from grit_ray.cli import main
from grit_ray.config import ModelFamily, TinyModelSpec
from grit_ray.grit.prompts import chat_messages
from grit_ray.models import adapter_for
from grit_ray.models.qwen2_5_vl import VISION_PLACEHOLDER_TOKENS
from grit_ray.models.tiny import build_tiny_model, directory_digest
from grit_ray.models.tiny.build import chat_template


def test_same_seed_same_bytes(tmp_path, tiny_model_dir):
    assert main(["model", "tiny", "--out", str(tmp_path / "again"), "--seed", "0", "--random"]) == 0
    assert directory_digest(tmp_path / "again") == directory_digest(tiny_model_dir)
    build_tiny_model(tmp_path / "other", TinyModelSpec.plumbing(seed=1))
    assert directory_digest(tmp_path / "other") != directory_digest(tiny_model_dir)


def test_chat_template_is_qwen_format(tiny_model_dir):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    text = proc.apply_chat_template(chat_messages("How many?"), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "\nQuestion: How many? First, think")
    # the tiny checkpoint reads the question before the image (docs/base_model.md), whatever the parts' order
    assert text.endswith("after <answer>.\n<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("family", list(ModelFamily))
def test_the_tiny_template_puts_a_turns_text_before_its_images_in_any_part_order(family):
    import jinja2

    adapter = adapter_for(family)
    template = jinja2.Environment().from_string(chat_template(adapter))
    render = lambda messages: template.render(messages=messages, add_generation_prompt=True)  # noqa: E731
    image, text = {"type": "image"}, {"type": "text", "text": "Where is it?"}
    expected = render([{"role": "user", "content": [text, image]}])
    assert render([{"role": "user", "content": [image, text]}]) == expected
    assert expected.index("Where is it?") < expected.index(adapter.tiny_image_part)
    # every image after all the text; string content and assistant turns pass through unchanged
    two = render([{"role": "user", "content": [image, text, image, {"type": "text", "text": " And here?"}]}])
    assert "Where is it? And here?" + adapter.tiny_image_part * 2 in two
    chat = render([{"role": "user", "content": "plain words"},
                   {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]}])
    assert "<|im_start|>user\nplain words<|im_end|>\n<|im_start|>assistant\nan answer<|im_end|>\n" in chat
    assert chat.endswith("<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir), AutoModelForImageTextToText.from_pretrained(tiny_model_dir)


def test_loads_with_auto_classes_and_generates_with_an_image(hf):
    proc, model = hf
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    text = proc.apply_chat_template(chat_messages("Is it red?"), add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=[Image.new("RGB", (112, 112), (255, 0, 0))], return_tensors="pt")
    # the processor's small pixel limits: 112x112 -> 8x8 patches -> 16 tokens after the 2x2 merge
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert (inputs["input_ids"] == proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum() == 16
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_generation_never_emits_vision_placeholders(hf):
    proc, model = hf
    ids = set(proc.tokenizer.convert_tokens_to_ids(list(VISION_PLACEHOLDER_TOKENS)))
    assert set(model.generation_config.suppress_tokens) == ids
    text = proc.apply_chat_template(chat_messages("Count."), add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text] * 8, images=[Image.new("RGB", (112, 112), (0, 0, 255))] * 8, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=128, do_sample=True, temperature=1.5)
    new = out[:, inputs["input_ids"].shape[1]:]
    assert not (set(new.flatten().tolist()) & ids)


def test_placeholders_would_be_sampled_without_suppression(hf):
    # Guards the test above: the random model does put mass on those tokens.
    proc, model = hf
    text = proc.apply_chat_template(chat_messages("Count."), add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=[Image.new("RGB", (112, 112), (0, 0, 255))], return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits[0, -1].softmax(-1)
    ids = proc.tokenizer.convert_tokens_to_ids(list(VISION_PLACEHOLDER_TOKENS))
    assert probs[ids].sum() > 1e-4


def test_tiny_metadata(tiny_model_dir):
    meta = json.loads((tiny_model_dir / "grit_ray_tiny.json").read_text())
    assert meta["spec"]["seed"] == 0 and len(meta["vision_placeholder_ids"]) == 5


def test_forbidden_tokens_are_the_placeholders_the_tokenizer_has(tiny_model_dir):
    from transformers import AutoTokenizer

    from grit_ray.config import ModelFamily
    from grit_ray.models import adapter_for

    adapter = adapter_for(ModelFamily.QWEN2_5_VL)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert adapter.forbidden_tokens(tok) == list(VISION_PLACEHOLDER_TOKENS)
    assert adapter.forbidden_token_ids(tok) == tok.convert_tokens_to_ids(list(VISION_PLACEHOLDER_TOKENS))


def test_image_token_features_cover_the_image_row_by_row(hf):
    """Pretraining supervises image token i as the 28-px cell (i // columns, i % columns): the
    processor's patches come in 2x2 merge groups row by row, and the hooked features come back in
    that order after the vision tower's window reordering (checked with the blocks taken out, so
    that only the painted cell's feature differs)."""
    from grit_ray.config import ModelFamily
    from grit_ray.models import adapter_for

    adapter = adapter_for(ModelFamily.QWEN2_5_VL)
    proc, model = hf
    image = Image.new("RGB", (168, 140), (255, 255, 255))
    image.paste((255, 0, 0), (4 * 28, 3 * 28, 5 * 28, 4 * 28))  # the cell in row 3, column 4
    inputs = proc(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image], return_tensors="pt")
    assert adapter.image_token_grids(inputs) == [(5, 6)]
    painted = 3 * 6 + 4
    patches = inputs["pixel_values"].reshape(30, 4, -1)  # (image tokens, merged patches, pixels)
    assert [i for i in range(30) if not torch.allclose(patches[i], patches[0])] == [painted]
    module, features_of = adapter.image_token_features(model)
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(features_of(out)))
    blocks = model.model.visual.blocks
    model.model.visual.blocks = torch.nn.ModuleList()  # patch embedding and merger only: no mixing
    try:
        with torch.no_grad():
            model.model.get_image_features(pixel_values=inputs["pixel_values"],
                                           image_grid_thw=inputs["image_grid_thw"])
    finally:
        model.model.visual.blocks = blocks
        handle.remove()
    features = seen[0]
    assert features.shape == (30, model.config.text_config.hidden_size)
    assert [i for i in range(30) if not torch.allclose(features[i], features[0])] == [painted]
