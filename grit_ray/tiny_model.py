"""A tiny, randomly initialised Qwen2.5-VL built offline: for tests and the CPU demo.

Everything is made here without a model hub: a byte-level BPE tokenizer trained on a small GRIT
corpus with the Qwen2-VL special tokens and a Qwen-style chat template, a ``Qwen2_5_VLConfig``
with a 64-wide text model and a 2-block vision tower, and an image processor with small pixel
limits (a 112x112 image becomes 16 image tokens). The directory loads with the transformers Auto
classes and with vLLM. The same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from grit_ray.config import TinyModelSpec

# Qwen2-VL's special tokens, in Qwen's id order (placed right after the BPE vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Tokens that stand for image/video features: a policy that emits them produces inputs the model
# cannot consume ("Image features and image tokens do not match"), so generation forbids them.
VISION_PLACEHOLDER_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

TINY_MIN_PIXELS = 28 * 28 * 4
TINY_MAX_PIXELS = 28 * 28 * 16

# A Qwen2-VL style chat template (default system prompt, images as vision_start/pad/end).
CHAT_TEMPLATE = r"""{%- for message in messages %}
{%- if loop.first and message['role'] != 'system' %}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}
{{- '<|im_start|>' + message['role'] + '\n' }}
{%- if message['content'] is string %}{{- message['content'] }}
{%- else %}{%- for part in message['content'] %}
{%- if part['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}
{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}
{%- endfor %}{%- endif %}
{{- '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"""

# The text the BPE merges are learnt from: GRIT's prompt, tags, boxes and answer words.
_CORPUS = [
    "First, think between <think> and </think> while output necessary coordinates needed to answer "
    "the question in JSON with key 'bbox_2d'. Then, based on the thinking contents and coordinates, "
    "rethink between <rethink> </rethink> and then answer the question after <answer>.",
    "<think> The red square is at [12, 30, 44, 61] and the blue circle at {\"bbox_2d\": [70, 8, 99, 40]}. </think>",
    "<rethink> The square is left of the circle, so the answer is yes. </rethink> <answer> Yes </answer>",
    "Question: Is the green triangle left of the yellow circle? Is the motorcycle away from the bird?",
    "Question: How many purple shapes are there? What is left of the orange square? How many circles?",
    "<answer> No </answer> <answer> 3 </answer> <answer> the blue triangle </answer> zero one two three four",
    "above below right left of on top under near far away from the image shows a an there is are",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 , . : ; ! ? ' \" ( ) [ ] { } - _ / \\ + = * # @ % & < >",
]


def _build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Qwen splits digits one by one; byte-level so every string is encodable.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def _build_config(spec: TinyModelSpec, tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    vocab += -vocab % 64  # round up: a multiple of 64 keeps embedding shapes friendly to kernels
    hidden = spec.hidden_size
    head_dim = 32  # vLLM's CPU attention supports standard head sizes only
    heads = max(1, hidden // head_dim)
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=spec.vision_depth,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_heads=heads,
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
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        architectures=["Qwen2_5_VLForConditionalGeneration"],
    )


def vision_placeholder_ids(tokenizer) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in VISION_PLACEHOLDER_TOKENS]


# InternVL3 (HF format) marks images with these; other families are added here as they come.
_OTHER_PLACEHOLDER_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>")


def forbidden_tokens(tokenizer) -> list[str]:
    """The vision placeholder tokens this tokenizer actually has (unknown ones would map to UNK
    or split into ordinary pieces, and banning those would ban real text)."""
    vocab = tokenizer.get_vocab()
    return [t for t in (*VISION_PLACEHOLDER_TOKENS, *_OTHER_PLACEHOLDER_TOKENS) if t in vocab]


def forbidden_token_ids(tokenizer) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [vocab[t] for t in forbidden_tokens(tokenizer)]


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write a tiny Qwen2.5-VL (weights, tokenizer, processor) to ``out_dir``; deterministic per seed."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(spec.vocab_size)
    config = _build_config(spec, tokenizer)

    with torch.random.fork_rng():  # seeded init without disturbing the caller's RNG
        torch.manual_seed(spec.seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    placeholder_ids = vision_placeholder_ids(tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        suppress_tokens=placeholder_ids,  # HF generate honours this; vLLM gets bad_words from the rollout
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)

    image_processor = Qwen2VLImageProcessor(
        min_pixels=TINY_MIN_PIXELS,
        max_pixels=TINY_MAX_PIXELS,
        size={"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=TINY_MIN_PIXELS,
        max_pixels=TINY_MAX_PIXELS,
        size={"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS},
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    (out / "grit_ray_tiny.json").write_text(
        json.dumps({"spec": spec.model_dump(), "vision_placeholder_ids": placeholder_ids}, indent=2, sort_keys=True)
    )
    return out


def directory_digest(path: str | Path) -> str:
    """sha256 over every file's relative name and bytes: equal digests mean identical models."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def model_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a model, or None. Names that do not look like paths are hub model ids
    and are left to the loader (a cluster node may fetch them)."""
    local = Path(path).expanduser()
    if not local.exists():
        return "no such model directory" if path.startswith(("/", ".", "~")) else None
    if not (local / "config.json").exists():
        return "not an HF model directory (no config.json)"
    return None


def ensure_model(path: str | None, spec: TinyModelSpec, run_dir: Path) -> str:
    """The policy's directory: ``path`` as given, or the tiny model built under ``run_dir/tiny-model``."""
    if path is not None:
        if (problem := model_path_problem(path)) is not None:
            from grit_ray.config import ConfigError

            raise ConfigError([f"model.path: {path}: {problem}"])
        return path
    out = Path(run_dir) / "tiny-model"
    if not (out / "grit_ray_tiny.json").is_file():
        build_tiny_model(out, spec)
    return str(out)
