"""DeepSpeed learner ranks in real Ray actors over gloo, on the tiny Qwen2.5-VL (CPU, float32).

The shared-memory allreduce kernel is off (config default on CPU), so no test pays its JIT compile."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import ray
import torch

from grit_ray.algo.experience import TrainSample, assign_advantages, collate, completion_logprobs, totals_of
from grit_ray.algo.grpo import LossSettings, policy_loss
from grit_ray.algo.micro_batching import plan_micro_batches
from grit_ray.config import DataSource, ModelConfig, ModelFamily, SynthSpec, load_config
from grit_ray.data.rows import RowStream
from grit_ray.data.synth import write_synth
from grit_ray.grit.prompts import chat_messages
from grit_ray.models import adapter_for
from grit_ray.testing.hooks import InspectableLearnerGroup
from tests.families import FAMILIES, TIED_FIXTURE, model_dir_of

pytestmark = pytest.mark.ray

# One actor on the whole batch vs two actors on halves: same math, different float32 summation
# order. Adam's first update is lr * g / (|g| + eps): with eps 1e-8 a gradient entry near zero turns
# that order noise into a visible step (measured: 2 of 397,248 weights differ by 2.1e-6 at lr 1e-3).
# With eps 1e-3 the update is smooth in g and the largest difference measured is 7.5e-9.
PARAM_ATOL = 1e-7


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="grit-ray-learner-tests")
    yield
    ray.shutdown()


def _cfg(**overrides):
    base = {"algorithm.prompts_per_step": 4, "algorithm.group_size": 4, "learner.micro_batch_size": 2,
            "learner.lr": 1e-3, "run.steps": 10, "model.device": "cpu", "model.dtype": "float32",
            "learner.comm_backend": "gloo", "learner.adam_eps": 1e-3}
    base.update(overrides)
    return load_config(overrides=[f"{k}={v}" for k, v in base.items()])


def _batch(model_dir, data_dir, seed: int, cfg) -> list[TrainSample]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = list(RowStream([DataSource(path=str(data_dir), images=str(data_dir.parent / "images"))]))[:4]
    g = torch.Generator().manual_seed(seed)
    samples = []
    for gi, row in enumerate(rows):
        prompt = tok.apply_chat_template(chat_messages(row.question), tokenize=False, add_generation_prompt=True)
        for _ in range(4):
            n = int(torch.randint(3, 12, (1,), generator=g))
            samples.append(TrainSample(prompt, row.image, torch.randint(10, 400, (n,), generator=g).tolist(), 0.0,
                                       group_id=gi, where=row.where))
    rewards = torch.rand(len(samples), generator=g).tolist()
    return assign_advantages(samples, rewards, cfg.algorithm)[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synth(tmp_path_factory.mktemp("learner-data"), SynthSpec(n=4, seed=5))


def _surrogate(model_dir, weights, samples, old_logp):
    """The GRPO surrogate on a fixed batch with the sampling policy held fixed (lower is better)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    model.load_state_dict(weights)
    proc = AutoProcessor.from_pretrained(model_dir)
    batch = collate(samples, adapter_for(ModelFamily.QWEN2_5_VL).prompt_encoder(proc, ModelConfig(min_pixels=3136, max_pixels=12544)), proc.tokenizer.pad_token_id)
    with torch.no_grad():
        logp = completion_logprobs(model, batch, 0.9)
    old = logp if old_logp is None else old_logp
    loss, _ = policy_loss(logp, old, batch.advantages, batch.completion_mask, totals_of(samples),
                          LossSettings(kl_beta=0.0, clip_eps_low=10.0, clip_eps_high=10.0))
    return loss.item(), logp


def test_loss_decreases_on_a_fixed_batch_zero2_without_reference(tiny_model_dir, data_dir):
    cfg = _cfg(**{"learner.zero_stage": 2, "learner.num_actors": 1, "algorithm.kl_beta": 0.0})
    samples = _batch(tiny_model_dir, data_dir, 0, cfg)
    group = InspectableLearnerGroup(cfg, str(tiny_model_dir))
    try:
        before, old = _surrogate(tiny_model_dir, group.full_weights(), samples, None)
        losses, metrics = [before], []
        for _ in range(4):
            metrics.append(group.train_step(samples))
            losses.append(_surrogate(tiny_model_dir, group.full_weights(), samples, old)[0])
    finally:
        group.shutdown()
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.05
    assert "kl_mean" not in metrics[0]  # beta = 0: no reference model, no KL
    assert metrics[0]["micro_batches"] == 8 and metrics[0]["tokens"] == sum(len(s.completion_ids) for s in samples)
    assert all(m["grad_norm"] > 0 for m in metrics)


@FAMILIES
@pytest.mark.parametrize("stage", [2, 3])
def test_two_actors_equal_one_actor_with_the_whole_batch(request, family, data_dir, stage):
    tiny_model_dir = model_dir_of(request, family)
    cfg1 = _cfg(**{"learner.zero_stage": stage, "learner.num_actors": 1, "model.family": family.value})
    cfg2 = _cfg(**{"learner.zero_stage": stage, "learner.num_actors": 2, "model.family": family.value})
    samples = _batch(tiny_model_dir, data_dir, 1, cfg1)  # 4 groups of 4, group by group
    # rank 0's micro-batches hold two rows of one group (one shared vision pass), rank 1's a row of
    # group 2 beside one of group 3 (distinct images): under ZeRO-3 both must run the same modules
    # in the same order, or the ranks wait on each other's parameter gathers for ever
    samples = samples[:8] + [s for pair in zip(samples[8:12], samples[12:], strict=True) for s in pair]
    assert [s.group_id for s in samples[8:10]] == [2, 3] and samples[0].group_id == samples[1].group_id
    metrics = _one_step_each(tiny_model_dir, samples, (cfg1, cfg2))
    for key in ("loss", "kl_mean", "tokens", "grad_norm"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-5), key
    assert metrics[0]["kl_mean"] == 0.0  # policy == reference before the first update


@FAMILIES
def test_token_budget_micro_batches_equal_row_micro_batches(request, family, data_dir):
    """Two ZeRO-3 ranks on micro-batches cut by a token budget (rows of different groups and image
    sizes side by side, fillers where a rank has fewer) take the same step as one rank on 2-row
    micro-batches: the plan changes the padding computed, not the loss."""
    from PIL import Image
    from transformers import AutoProcessor

    tiny_model_dir = model_dir_of(request, family)
    rows_cfg = _cfg(**{"learner.zero_stage": 3, "learner.num_actors": 1, "model.family": family.value})
    encoder = adapter_for(family).prompt_encoder(AutoProcessor.from_pretrained(tiny_model_dir), rows_cfg.model)
    samples = [replace(s, prompt_tokens=encoder.encode_image(s.prompt, Image.open(s.image))["input_ids"].shape[1])
               for s in _batch(tiny_model_dir, data_dir, 2, rows_cfg)]
    # room for at least 6 of the 16 rows: cuts cross group boundaries, and 3 micro-batches leave one rank a filler
    budget = 6 * (max(s.prompt_tokens for s in samples) + max(len(s.completion_ids) for s in samples))
    budget_cfg = _cfg(**{"learner.zero_stage": 3, "learner.num_actors": 2, "model.family": family.value,
                         "learner.max_tokens_per_micro_batch": budget})
    plan = plan_micro_batches(samples, 2, 1, budget)
    assert any(len({s.group_id for s in mb}) > 1 for rank in plan for mb in rank)  # groups side by side
    assert len({len(rank) for rank in plan}) == 1  # lock-step counts
    assert any(s.weight == 0 for rank in plan for mb in rank for s in mb)  # a rank topped up with a filler
    metrics = _one_step_each(tiny_model_dir, samples, (rows_cfg, budget_cfg))
    assert metrics[0]["tokens"] == metrics[1]["tokens"]
    assert metrics[0]["loss"] == pytest.approx(metrics[1]["loss"], abs=1e-6)
    assert metrics[1]["micro_batches"] == len(plan[0])


def _one_step_each(model_dir, samples, cfgs) -> list:
    """One learner step on ``samples`` under each of two configs; their weights after it agree to
    PARAM_ATOL, and the step moved most tensors (equality is not trivial). Returns the steps' metrics."""
    weights, metrics = [], []
    for cfg in cfgs:
        group = InspectableLearnerGroup(cfg, str(model_dir))
        try:
            metrics.append(group.train_step(samples))
            weights.append(group.full_weights())
        finally:
            group.shutdown()
    initial = _initial(model_dir)
    moved = 0
    for name, w1 in weights[0].items():
        torch.testing.assert_close(weights[1][name], w1, rtol=0, atol=PARAM_ATOL, msg=name)
        moved += int(not torch.equal(w1, initial[name]))
    assert moved > len(initial) // 2
    return metrics


def _initial(model_dir):
    from transformers import AutoModelForImageTextToText

    return dict(AutoModelForImageTextToText.from_pretrained(model_dir).named_parameters())


def test_checkpoint_resume_gives_the_identical_next_step(tiny_model_dir, data_dir, tmp_path):
    cfg = _cfg(**{"learner.zero_stage": 3, "learner.num_actors": 2, "learner.warmup_steps": 2})
    first, second = _batch(tiny_model_dir, data_dir, 2, cfg), _batch(tiny_model_dir, data_dir, 3, cfg)
    group = InspectableLearnerGroup(cfg, str(tiny_model_dir))
    try:
        first_metrics = group.train_step(first)
        group.save_checkpoint(tmp_path / "ckpt")
        expected_metrics = group.train_step(second)
        expected = group.full_weights()
    finally:
        group.shutdown()
    resumed = InspectableLearnerGroup(cfg, str(tiny_model_dir))
    try:
        assert resumed.load_checkpoint(tmp_path / "ckpt") == 1
        got_metrics = resumed.train_step(second)
        got = resumed.full_weights()
    finally:
        resumed.shutdown()
    for name, w in expected.items():
        assert torch.equal(got[name], w), name  # exact: same partitions, optimizer moments and schedule
    # warm-up of 2 steps: step 1 ran at half the rate, step 2 (the resumed one) at the full rate
    assert first_metrics["lr"] == pytest.approx(5e-4) and got_metrics["lr"] == expected_metrics["lr"] == 1e-3
    assert got_metrics["loss"] == expected_metrics["loss"]


@pytest.fixture(scope="module", params=["tiny_model_dir", TIED_FIXTURE], ids=["untied", "tied"])
def saved_zero3(request, data_dir, tmp_path_factory):
    """Two ZeRO-3 ranks after one step (large lr, so the weights visibly move): the bucket sizes
    rank 0 and rank 1 see, the gathered weights, the saved HF-format directory and the model it
    started from (the small random Qwen2.5-VL, and the same with its LM head tied)."""
    tiny_model_dir = request.getfixturevalue(request.param)
    cfg = _cfg(**{"learner.zero_stage": 3, "learner.num_actors": 2, "weight_sync.bucket_mb": 0.25,
                  "learner.lr": 0.05})
    group = InspectableLearnerGroup(cfg, str(tiny_model_dir))
    try:
        group.train_step(_batch(tiny_model_dir, data_dir, 4, cfg))
        sizes = [ray.get(a.bucket_sizes.remote(0.25)) for a in group.actors]
        weights = group.full_weights()
        out = group.save_hf_model(tmp_path_factory.mktemp("saved") / "hf")
    finally:
        group.shutdown()
    return sizes, weights, out, tiny_model_dir


def test_zero3_weights_gathered_in_buckets_and_saved_as_hf_model(saved_zero3):
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    (sizes, rank1_sizes), weights, out, tiny_model_dir = saved_zero3
    assert rank1_sizes == []  # rank 1 takes part in every gather but keeps nothing
    limit = 0.25 * 2**20
    largest_param = max(t.numel() * t.element_size() for t in weights.values())
    assert len(sizes) > 2 and all(s <= max(limit, largest_param) for s in sizes)
    assert sum(sizes) == sum(t.numel() * t.element_size() for t in weights.values())

    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(weights) and len(set(index["weight_map"].values())) == len(sizes)
    for shard in set(index["weight_map"].values()):
        with safe_open(str(out / shard), "pt") as f:
            assert set(f.keys()) == {n for n, s in index["weight_map"].items() if s == shard}
    loaded = AutoModelForImageTextToText.from_pretrained(out)
    for name, p in loaded.named_parameters():
        assert torch.equal(p.detach(), weights[name]), name
    if loaded.config.tie_word_embeddings:  # one tensor saved for both; the loaded head is the trained embeddings
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
        assert not any(name.endswith("lm_head.weight") for name in index["weight_map"])
    assert AutoProcessor.from_pretrained(out).tokenizer.get_vocab() == AutoProcessor.from_pretrained(
        tiny_model_dir).tokenizer.get_vocab()
    assert not out.with_name("hf.partial").exists()


@pytest.mark.vllm
def test_saved_model_loads_in_vllm_and_decodes_like_transformers(saved_zero3):
    """vLLM reads the saved directory; its greedy tokens and their log-probs equal transformers' on
    the same weights and differ from the untrained model's (so the trained weights, not the
    originals, were served; the random tied model repeats one token, so there the log-probs tell)."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from vllm import LLM, SamplingParams

    out, tiny_model_dir = saved_zero3[2:]
    prompt = "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
    llm = LLM(model=str(out), enforce_eager=True, max_model_len=512, dtype="float32", seed=0)
    completion = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, logprobs=0),
                              use_tqdm=False)[0].outputs[0]
    served = list(completion.token_ids)
    served_logprobs = [step[t].logprob for step, t in zip(completion.logprobs, served, strict=True)]
    del llm
    ids = AutoTokenizer.from_pretrained(out)(prompt, return_tensors="pt").input_ids

    def greedy(path):  # tokens, and their log-probs under the raw logits (what vLLM reports)
        model = AutoModelForImageTextToText.from_pretrained(path)
        gen = model.generate(ids, max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True)
        tokens = gen.sequences[0, ids.shape[1]:].tolist()
        return tokens, [torch.log_softmax(x[0].float(), -1)[t].item() for x, t in zip(gen.logits, tokens, strict=True)]

    tokens, logprobs = greedy(out)
    assert served == tokens and served_logprobs == pytest.approx(logprobs, abs=1e-3)
    untrained_tokens, untrained_logprobs = greedy(tiny_model_dir)
    assert served != untrained_tokens or served_logprobs != pytest.approx(untrained_logprobs, abs=1e-2)


@FAMILIES
def test_frozen_vision_tower_stays_put_and_is_left_out_of_the_sync_plan(request, family, data_dir):
    """The family's vision tower is frozen and never re-sent; the rest trains (InternVL's projector
    sits beside its tower and trains too)."""
    tiny_model_dir = model_dir_of(request, family)
    cfg = _cfg(**{"learner.zero_stage": 3, "learner.num_actors": 1, "learner.freeze_vision_tower": True,
                  "algorithm.kl_beta": 0.0, "model.family": family.value})
    group = InspectableLearnerGroup(cfg, str(tiny_model_dir))
    try:
        every = ray.get(group.actors[0].weight_plan.remote(0.25, False))
        trainable = ray.get(group.actors[0].weight_plan.remote(0.25, True))
        group.train_step(_batch(tiny_model_dir, data_dir, 6, cfg))
        after = group.full_weights()
    finally:
        group.shutdown()

    def names(plan):
        return {m.name for b in plan for m in b.tensors}

    tower = {n for n in names(every) if n.startswith(f"model.{adapter_for(family).vision_tower_names[0]}.")}
    assert tower and names(every) - names(trainable) == tower
    initial = _initial(tiny_model_dir)
    assert all(torch.equal(after[n], initial[n]) for n in tower)
    assert not all(torch.equal(after[n], initial[n]) for n in names(trainable))
    projector = {n for n in names(trainable) if "multi_modal_projector" in n}
    assert (family is ModelFamily.INTERNVL3) == bool(projector)
    assert all(not torch.equal(after[n], initial[n]) for n in projector if n.endswith("weight"))


@FAMILIES
def test_a_group_shares_one_vision_pass_with_the_same_logprobs_and_gradients(request, family, data_dir):
    """The adapter runs the vision tower once per distinct image of a micro-batch (a group's
    completions share theirs); log-probs and gradients equal one vision pass per row."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    tiny_model_dir = model_dir_of(request, family)
    cfg = _cfg(**{"model.family": family.value})
    samples = _batch(tiny_model_dir, data_dir, 0, cfg)[:8]  # two groups of four
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    adapter = adapter_for(family)
    batch = collate(samples, adapter.prompt_encoder(proc, cfg.model), proc.tokenizer.pad_token_id)
    assert batch.image_of_row == [0, 0, 0, 0, 4, 4, 4, 4]
    calls = []  # patches (Qwen) or tiles (InternVL) through the vision tower, per call

    def count(module, args, kwargs, out):
        calls.append((args[0] if args else kwargs["pixel_values"]).shape[0])

    adapter.vision_tower(model).register_forward_hook(count, with_kwargs=True)
    results = []
    for shared in (None, adapter):
        model.zero_grad()
        logp = completion_logprobs(model, batch, 0.9, adapter=shared)
        (logp * batch.completion_mask).sum().backward()
        results.append((logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (per_row, grads_rows), (once, grads_once) = results
    patches = batch.image_inputs["pixel_values"].shape[0]
    assert calls == [patches, patches // 4]  # eight images' patches, then the two distinct ones
    torch.testing.assert_close(once, per_row, rtol=0, atol=1e-6)
    assert grads_once.keys() == grads_rows.keys() and any(adapter.vision_tower_names[0] in n for n in grads_once)
    for name, g in grads_rows.items():
        torch.testing.assert_close(grads_once[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("stage", [2, 3])
def test_offloaded_states_give_the_identical_steps(tiny_model_dir, data_dir, tmp_path, stage):
    """learner.offload_states between updates (what a colocated GPU run does; on CPU the bytes stay
    in host memory, DeepSpeed's bookkeeping runs all the same): the same weights as a learner that
    never offloads, across a checkpoint saved while offloaded."""
    cfg = _cfg(**{"learner.zero_stage": stage, "learner.num_actors": 2, "algorithm.kl_beta": 0.04})
    batches = [_batch(tiny_model_dir, data_dir, seed, cfg) for seed in (4, 5, 6)]
    weights, losses = [], []
    for offload in (True, False):
        group = InspectableLearnerGroup(cfg, str(tiny_model_dir))
        try:
            steps = []
            for i, batch in enumerate(batches):
                if offload and i == 1:  # the handoff reloads before the update ...
                    assert group.on_ranks((0, 1), "reload_states", "reload")[0] > 0  # 0.0: nothing to reload
                steps.append(group.train_step(batch).loss)  # ... and train_step reloads whatever it finds
                if offload:
                    done = group.on_ranks((0, 1), "offload_states", "offload")
                    assert all(d["offload_s"] > 0 for d in done)
                    held = group.on_ranks((0, 1), "offloaded_states", "inspect")
                    # ZeRO-3: DeepSpeed moves the gradients, grit-ray the fp32 partitions and Adam's moments
                    expected = {"lp_grads"} if stage == 3 else {"optim_states", "hp_params", "lp_grads"}
                    assert all(expected <= set(h) for h in held), held
                if i == 1:
                    group.save_checkpoint(tmp_path / f"ckpt-{offload}")  # reloaded for the save, offloaded after
            if offload:
                assert group.on_ranks((0, 1), "offloaded_states", "inspect")[0]  # still offloaded after the save
            weights.append(group.full_weights())
            losses.append(steps)
        finally:
            group.shutdown()
    assert losses[0] == losses[1]
    for name, w in weights[1].items():
        assert torch.equal(weights[0][name], w), name
