"""The tiny offline models (Qwen2.5-VL, InternVL3): built without a model hub, for the CPU default
run and the tests. What differs between the families comes from their adapters (grit_ray/models).

- The architecture: a byte-level BPE tokenizer with the family's special tokens, a ChatML chat
  template and every whole coordinate the family writes as one token (0-399 px for Qwen, 0-1000
  for InternVL's norm1000 frame: a box is then four tokens, not twelve digits), a 128-wide,
  4-layer Qwen2 text model and a 2-block vision tower in the family's transformers classes, and an
  image processor sized to the synthetic world's images (Qwen: kept at their size, up to 168x168
  = 36 image tokens; InternVL: one 168-px tile, 36 features). Number tokens start from sinusoidal
  embeddings of their value, so nearby coordinates start out similar.
- The base model: the same network pretrained briefly on a synthetic corpus (``data.corpus``,
  ``models.tiny.pretrain``), then probed (``models.tiny.probe``): it boxes the shape a question
  names, counts boxes given in the text and knows GRIT's format from other questions, but has never
  seen GRIT's VSR- and TallyQA-style questions nor GRIT's format for them (docs/base_model.md, which
  also says what it cannot do yet: compare two boxes).
  ``TinyModelSpec.plumbing()`` is the small random model of the tests.

The directory loads with the transformers Auto classes and with vLLM; the same spec and seed give
the same bytes. ``ensure_model`` builds the base model once into a cache keyed by its family and spec.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from grit_ray.config import ModelFamily, TinyModelSpec, TinyPretrainSpec
from grit_ray.models.family import PIXEL_NUMBER_TOKENS, ModelAdapter
from grit_ray.models.tiny.numbers import init_number_embeddings
from grit_ray.models.tiny.pretrain import pretrain
from grit_ray.models.tiny.probe import format_probe, probe, selection_gate

RECIPE_VERSION = 7  # bump when the builder or the corpus changes: cached base models are rebuilt

# A Qwen2-VL style chat template (default system prompt); IMAGE_PART is the family's image placeholder.
# A user turn's text comes before its images, whatever the order of its parts: the image tokens then
# see the question (causal attention), so a shape's own token can tell whether it is the one named,
# and picking it out is one step instead of two (docs/base_model.md, "Why this recipe", recipe 7).
_CHAT_TEMPLATE = r"""{%- for message in messages %}
{%- if loop.first and message['role'] != 'system' %}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}
{{- '<|im_start|>' + message['role'] + '\n' }}
{%- if message['content'] is string %}{{- message['content'] }}
{%- else %}{%- for part in message['content'] if part['type'] == 'text' %}{{- part['text'] }}{%- endfor %}
{%- for part in message['content'] if part['type'] == 'image' %}{{- 'IMAGE_PART' }}{%- endfor %}{%- endif %}
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


def chat_template(adapter: ModelAdapter) -> str:
    return _CHAT_TEMPLATE.replace("IMAGE_PART", adapter.tiny_image_part.replace("\n", "\\n"))


def _build_tokenizer(vocab_size: int, adapter: ModelAdapter):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from grit_ray.data.synth import COLOURS, SHAPES

    tok = Tokenizer(models.BPE())
    # Digit runs are pieces of their own (never glued to a space or a bracket), and the merges below
    # make every number the family writes one token; byte-level so every string is encodable.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=False), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    n_numbers = adapter.tiny_number_tokens  # every coordinate the family writes
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + max(0, n_numbers - PIXEL_NUMBER_TOKENS),  # room for numbers past 399
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    numbers = " ".join(str(i) for i in range(n_numbers))
    world = " ".join([*COLOURS, *SHAPES, *(s + "s" for s in SHAPES)])
    tok.train_from_iterator((_CORPUS + [world]) * 8 + [numbers] * 16, trainer=trainer)
    special = list(adapter.tiny_special_tokens)
    tok.add_special_tokens(special)
    named = {"extra_special_tokens": dict(adapter.tiny_named_tokens)} if adapter.tiny_named_tokens else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special[1:],
        chat_template=chat_template(adapter),
        **named,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def _build_config(spec: TinyModelSpec, tokenizer, adapter: ModelAdapter):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in adapter.tiny_special_tokens}
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
        tie_word_embeddings=spec.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return adapter.tiny_config(spec, ids, text)


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None, log=print,
                     family: ModelFamily = ModelFamily.QWEN2_5_VL) -> Path:
    """Write the tiny model of ``family`` (weights, tokenizer, processor) to ``out_dir``: random
    weights, then ``spec.pretrain.steps`` of corpus pretraining with boxes in the family's frame
    (docs/base_model.md). Deterministic per spec and family."""
    import torch
    from transformers import GenerationConfig

    from grit_ray.models import adapter_for

    spec = spec or TinyModelSpec()
    adapter = adapter_for(family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(spec.vocab_size, adapter)
    config = _build_config(spec, tokenizer, adapter)
    processor = adapter.tiny_processor(tokenizer, chat_template(adapter))
    report: dict = {}
    with torch.random.fork_rng(), _torch_threads(spec.pretrain.threads):  # the caller's RNG and threads stay
        torch.manual_seed(spec.seed)
        model = adapter.tiny_model_class()(config).to(torch.float32).eval()
        init_number_embeddings(model, tokenizer, adapter.tiny_number_tokens)
        if spec.pretrain.steps:
            started = time.perf_counter()
            losses = pretrain(model, processor, spec.pretrain, spec.seed, adapter, log=log)
            log(f"base model pretrained in {time.perf_counter() - started:.0f}s")
            probed = probe(model, processor, spec.seed, adapter, n=spec.pretrain.probe_scenes,
                           comparison_order=spec.pretrain.comparison_order)
            report = {"final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 4),
                      "probe": {k: round(v, 4) if isinstance(v, float) else v for k, v in probed.items()}}
            log("base model probe (held-out scenes): " + format_probe(report["probe"]))
            if (gate := selection_gate(report["probe"])) is not None:
                report["selection_gate"] = gate
                log(gate)
    placeholder_ids = adapter.forbidden_token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        suppress_tokens=placeholder_ids,  # HF generate honours this; vLLM gets bad_words from the rollout
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    meta = {"spec": spec.model_dump(), "recipe_version": RECIPE_VERSION, "vision_placeholder_ids": placeholder_ids}
    if family is not ModelFamily.QWEN2_5_VL:  # the Qwen marker predates families: its bytes stay the same
        meta["family"] = family.value
    (out / "grit_ray_tiny.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if report:  # what the base model can do (docs/base_model.md); deterministic like the rest
        (out / "pretrain_report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return out


def directory_digest(path: str | Path) -> str:
    """sha256 over every file's relative name and bytes: equal digests mean identical models."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_root() -> Path:
    """Where built base models are kept: $GRIT_RAY_CACHE, else ~/.cache/grit-ray."""
    return Path(os.environ.get("GRIT_RAY_CACHE") or Path.home() / ".cache" / "grit-ray")


def cache_key(spec: TinyModelSpec) -> str:
    dump = spec.model_dump(mode="json")
    # the keys of models built before these fields existed stay the same while they hold their defaults
    pretrain = spec.pretrain.model_dump()
    for key in ("probe_scenes", "comparison_order"):
        if pretrain[key] == TinyPretrainSpec.model_fields[key].default:
            del dump["pretrain"][key]
    if not dump["tie_embeddings"]:
        del dump["tie_embeddings"]
    text = json.dumps({"spec": dump, "recipe": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tiny_model_dir(spec: TinyModelSpec, family: ModelFamily) -> Path:
    """Where the cache keeps (or will keep) the tiny model of ``family`` for ``spec``."""
    return cache_root() / "models" / f"tiny-{family.value}-{cache_key(spec)}"


def tiny_config_for_spec(spec: TinyModelSpec, adapter: ModelAdapter):
    """The transformers config the tiny model of ``spec`` gets, without building it (its tokenizer,
    which sets the vocabulary, takes a second)."""
    return _build_config(spec, _build_tokenizer(spec.vocab_size, adapter), adapter)


def cached_tiny_model(spec: TinyModelSpec, log=print, family: ModelFamily = ModelFamily.QWEN2_5_VL) -> Path:
    """The tiny model of ``family`` for ``spec`` from the cache, built there first if absent.
    Concurrent callers wait on a lock instead of building twice; a half-built model is never
    visible (atomic rename)."""
    final = tiny_model_dir(spec, family)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    marker = final / "grit_ray_tiny.json"
    if marker.is_file():
        return final
    with open(root / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():  # another process built it while we waited
            return final
        what = "base model" if spec.pretrain.steps else "random model"
        log(f"building the tiny {family.value} {what} into {final} (once; later runs reuse it)")
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            build_tiny_model(tmp, spec, log=log, family=family)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_model(path: str | None, spec: TinyModelSpec, log=print, family: ModelFamily = ModelFamily.QWEN2_5_VL) -> str:
    """The policy's directory: ``path`` as given, or the tiny model of ``family`` for ``spec`` from the cache."""
    if path is not None:
        from grit_ray.models import checkpoint_problem

        if (problem := checkpoint_problem(path, family)) is not None:
            from grit_ray.config import ConfigError

            raise ConfigError([f"model.path: {path}: {problem}"])
        return path
    return str(cached_tiny_model(spec, log=log, family=family))
