"""The transformers rollout backend generates a request set in batched, left-padded ``generate``
calls: on the tiny Qwen2.5-VL (real processor, real model, no mocks) the batches give the tokens
and log-probs that one prompt at a time gives, whatever the padding and the chunking."""

from __future__ import annotations

import contextlib
import itertools
import math
import re

import pytest
import torch

from grit_ray.config import DataSource, load_config
from grit_ray.data.rows import DataError, RowStream
from grit_ray.models.qwen2_5_vl import VISION_PLACEHOLDER_TOKENS
from grit_ray.workers.rollout import HFGenerator, PromptRequest

GROUP = 4
LOGPROB_TOL = 1e-5  # batched vs alone; measured about 5e-7 (float32 on CPU)


@pytest.fixture(scope="module")
def rows(synth_jsonl):
    return list(itertools.islice(RowStream([DataSource(path=str(synth_jsonl),
                                                       images=str(synth_jsonl.parent / "images"))]), 8))


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    cfg = load_config(overrides=["rollout.max_new_tokens=24", "model.device=cpu", "model.dtype=float32"])
    return HFGenerator(cfg, str(tiny_model_dir))


@contextlib.contextmanager
def _settings(gen: HFGenerator, **rollout_or_prompt):
    """Temporarily change ``rollout.<key>`` or ``prompt.<key>`` on the generator's config."""
    before = gen.cfg
    updates: dict[str, dict] = {}
    for key, value in rollout_or_prompt.items():
        section = "prompt" if key == "max_prompt_tokens" else "rollout"
        updates.setdefault(section, {})[key] = value
    gen.cfg = gen.cfg.model_copy(update={s: getattr(gen.cfg, s).model_copy(update=u) for s, u in updates.items()})
    try:
        yield
    finally:
        gen.cfg = before


@contextlib.contextmanager
def _counting_generate(gen: HFGenerator):
    """Count the model's ``generate`` calls (the real method runs)."""
    calls: list[int] = []
    real = gen.model.generate

    def counted(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    gen.model.generate = counted
    try:
        yield calls
    finally:
        del gen.model.generate


def _prompt_lengths(gen, rows):
    return [gen.encoder.encode(gen.prompt_text(r.question), r.image, r.where)["input_ids"].shape[1] for r in rows]


def test_encode_batch_is_the_processors_left_padded_batch(hf, rows):
    """Cached single encodings, left-padded and concatenated, equal the processor's own batch."""
    prompts = [hf.prompt_text(r.question) for r in rows[:4]]
    items = [(p, r.image, r.where) for p, r in zip(prompts, rows)]
    ours = hf.encoder.encode_batch(items, hf.pad_id)
    theirs = hf.encoder.processor(text=prompts, images=[r.open_image() for r in rows[:4]], return_tensors="pt",
                                  padding=True, padding_side="left", **hf.encoder.processor_kwargs)
    hf.encoder.clear()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    # a prompt repeated for its completions: its rows and its image blocks repeat
    twice = hf.encoder.encode_batch([items[0], items[0]], hf.pad_id)
    one = hf.encoder.encode(*items[0])
    hf.encoder.clear()
    assert torch.equal(twice["input_ids"], one["input_ids"].repeat(2, 1))
    assert torch.equal(twice["pixel_values"], torch.cat([one["pixel_values"]] * 2))
    assert torch.equal(twice["image_grid_thw"], torch.cat([one["image_grid_thw"]] * 2))


def test_the_rows_differ_in_prompt_length(hf, rows):
    """Different images and questions: batches need left padding."""
    lengths = _prompt_lengths(hf, rows)
    hf.encoder.clear()
    assert len(set(lengths)) >= 3, lengths


@pytest.mark.parametrize("batch_size", [3, 32])
def test_batched_greedy_equals_one_prompt_at_a_time(hf, rows, batch_size):
    requests = [PromptRequest(r, i, 1) for i, r in enumerate(rows)]
    alone = [c for req in requests for _, _, _, c in hf.stream([req], greedy=True)]
    with _settings(hf, hf_batch_size=batch_size), _counting_generate(hf) as calls:
        batched = list(hf.stream(requests, greedy=True))
    assert calls == [min(batch_size, len(rows) - i) for i in range(0, len(rows), batch_size)]
    assert [(req.group_id, k) for req, k, _, _ in batched] == [(i, 0) for i in range(len(rows))]
    assert len({tuple(c.token_ids) for c in alone}) > 1  # the prompts matter: not one answer for all
    for (req, _, prompt, b), a in zip(batched, alone):
        assert prompt == hf.prompt_text(req.row.question)
        assert b.token_ids == a.token_ids and b.text == a.text and b.finish_reason == a.finish_reason
        assert len(b.logprobs) == len(b.token_ids)
        assert max(abs(x - y) for x, y in zip(b.logprobs, a.logprobs)) < LOGPROB_TOL


def test_the_comparison_would_see_wrong_positions_or_padding(hf, rows):
    """The tolerance above is far below what a rope position one off or a pad attended changes in
    this model's log-probs: the equality test checks the left-padded positions and mask."""
    e = hf.encoder.encode(hf.prompt_text(rows[0].question), rows[0].image, rows[0].where)
    hf.encoder.clear()
    model = hf.model
    pos, _ = model.model.get_rope_index(e["input_ids"], image_grid_thw=e["image_grid_thw"],
                                        attention_mask=e["attention_mask"], mm_token_type_ids=e["mm_token_type_ids"])
    with torch.no_grad():
        ref = model(**e, position_ids=pos).logits[0, -1].log_softmax(-1)
        shifted = pos.clone()
        shifted[..., -1] += 1
        off_by_one = model(**e, position_ids=shifted).logits[0, -1].log_softmax(-1)
        padded = {k: torch.cat([torch.full((1, 3), v, dtype=e[k].dtype), e[k]], dim=1)
                  for k, v in (("input_ids", hf.pad_id), ("attention_mask", 1), ("mm_token_type_ids", 0))}
        pads_attended = model(**{**e, **padded}).logits[0, -1].log_softmax(-1)
    assert (ref - off_by_one).abs().max() > 20 * LOGPROB_TOL
    assert (ref - pads_attended).abs().max() > 20 * LOGPROB_TOL


def test_sampled_groups_stream_per_chunk_with_their_log_probs(hf, rows, tiny_model_dir):
    from transformers import AutoTokenizer

    forbidden = set(hf.forbidden_ids)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert forbidden == set(tokenizer.convert_tokens_to_ids(list(VISION_PLACEHOLDER_TOKENS)))
    # a re-issued request asks for some indices only
    requests = [PromptRequest(r, i, GROUP) for i, r in enumerate(rows[:4])] + [
        PromptRequest(rows[4], 4, GROUP, indices=(1, 3))]
    wanted = {(req.group_id, k) for req in requests for k in req.wanted()}
    batch_size = 5
    with _settings(hf, hf_batch_size=batch_size), _counting_generate(hf) as calls:
        stream = hf.stream(requests)
        first = next(stream)
        assert calls == [batch_size]  # the first chunk streams back before the next one starts
        samples = [first, *stream]
    assert calls == [5, 5, 5, 3] and sum(calls) == len(wanted) == 18 == len(samples)
    assert {(req.group_id, k) for req, k, _, _ in samples} == wanted
    for g in range(4):
        assert sum(req.group_id == g for req, _, _, _ in samples) == GROUP
    for _, _, _, c in samples:
        assert 0 < len(c.token_ids) <= hf.cfg.rollout.max_new_tokens
        assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 and math.isfinite(lp) for lp in c.logprobs)
        assert c.finish_reason in {"stop", "length"}
        assert not forbidden & set(c.token_ids)
        assert c.text == hf.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    per_group = {g: {tuple(c.token_ids) for req, _, _, c in samples if req.group_id == g} for g in range(4)}
    assert any(len(v) > 1 for v in per_group.values())  # sampled, not copies of one row


def test_a_long_prompt_anywhere_in_the_set_is_an_error_naming_its_row(hf, rows):
    lengths = _prompt_lengths(hf, rows)
    hf.encoder.clear()
    longest = max(range(len(rows)), key=lambda i: lengths[i])
    assert lengths[longest] > lengths[0]
    requests = [PromptRequest(r, i, GROUP) for i, r in enumerate(rows)]
    with _settings(hf, max_prompt_tokens=lengths[longest] - 1), _counting_generate(hf) as calls:
        expected = re.escape(rows[longest].where) + rf": the prompt is {lengths[longest]} tokens"
        with pytest.raises(DataError, match=expected):
            list(hf.stream(requests))
    assert calls == []  # every prompt is checked before anything is generated
