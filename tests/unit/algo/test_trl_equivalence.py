"""Our GRPO-GR loss against TRL's GRPOTrainer loss (trl is a test dependency), on identical VLM
inputs: the tiny Qwen2.5-VL, two images of different sizes (so prompts are left-padded and
completions right-padded), loss values and every parameter gradient.

TRL computes its log-probs with its own fused LM head; ours go through ``completion_logprobs``,
so the log-prob path is checked too. Tolerance: 1e-5 relative on values and gradients (float32,
different chunking of the same arithmetic)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from grit_ray.algo.experience import TrainSample, collate, completion_logprobs
from grit_ray.algo.grpo import BatchTotals, LossSettings, policy_loss
from grit_ray.config import LossAggregation, ModelConfig, ModelFamily
from grit_ray.grit.prompts import chat_messages
from grit_ray.models import adapter_for

TEMPERATURE = 0.9
RTOL, ATOL = 1e-5, 1e-7


def _png(colour: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    proc = AutoProcessor.from_pretrained(tiny_model_dir)

    def prompt(q):
        return proc.apply_chat_template(chat_messages(q), tokenize=False, add_generation_prompt=True)

    g = torch.Generator().manual_seed(0)
    images = [_png("red", (200, 120)), _png("blue", (60, 90))]
    questions = ["How many red squares are in the image?", "Is the circle left of the square?"]
    samples = []
    for i in range(4):
        n = int(torch.randint(3, 12, (1,), generator=g))
        samples.append(TrainSample(prompt(questions[i // 2]), images[i // 2],
                                   torch.randint(10, 400, (n,), generator=g).tolist(),
                                   advantage=float(torch.randn(1, generator=g)), group_id=i // 2))
    batch = collate(samples, adapter_for(ModelFamily.QWEN2_5_VL).prompt_encoder(proc, ModelConfig(min_pixels=3136, max_pixels=12544)), proc.tokenizer.pad_token_id)

    def trainer_for(loss_type: str, beta: float, eps_high: float = 0.2, kl_ratio_correction: bool = False):
        args = GRPOConfig(use_bias_correction_kl=kl_ratio_correction,output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=4,
                          num_generations=2, beta=beta, loss_type=loss_type, epsilon=0.2, epsilon_high=eps_high,
                          temperature=TEMPERATURE, report_to=[], use_cpu=True, bf16=False,
                          max_completion_length=16)
        trainer = GRPOTrainer(model=AutoModelForImageTextToText.from_pretrained(tiny_model_dir),
                              reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                              train_dataset=Dataset.from_dict({"prompt": ["x"] * 4}), processing_class=proc)
        trainer.current_gradient_accumulation_steps = 1
        trainer.model.train()
        return trainer

    ref = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():  # a reference that differs from the policy, so the KL term is not zero
        for p in ref.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        ref_logp = completion_logprobs(ref, batch, TEMPERATURE)
    return {"dir": tiny_model_dir, "batch": batch, "samples": samples, "ref_logp": ref_logp, "trainer_for": trainer_for,
            "g": g}


def _trl_inputs(batch, ref_logp, **extra):
    B, T = batch.completion_ids.shape
    mm = torch.cat([batch.prompt_token_inputs["mm_token_type_ids"], torch.zeros(B, T, dtype=torch.long)], dim=1)
    inputs = {
        "prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask,
        "completion_ids": batch.completion_ids, "completion_mask": batch.completion_mask.long(),
        "advantages": batch.advantages, "pixel_values": batch.image_inputs["pixel_values"],
        "image_grid_thw": batch.image_inputs["image_grid_thw"], "num_images": [1] * B, "mm_token_type_ids": mm,
        "num_items_in_batch": batch.completion_mask.sum(),
    }
    if ref_logp is not None:
        inputs["ref_per_token_logps"] = ref_logp
    inputs.update(extra)
    return inputs


def _ours(setup, settings: LossSettings, old_logp=None, rollout_logp=None):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(setup["dir"]).train()
    batch = setup["batch"]
    logp = completion_logprobs(model, batch, TEMPERATURE)
    totals = BatchTotals(sequences=float(len(setup["samples"])), tokens=float(batch.completion_mask.sum()))
    loss, _ = policy_loss(logp, logp.detach() if old_logp is None else old_logp, batch.advantages,
                          batch.completion_mask, totals, settings,
                          setup["ref_logp"] if settings.kl_beta > 0 else None, rollout_logp)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}, logp.detach()


def _theirs(trainer, inputs):
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in trainer.model.named_parameters()}


def _assert_same(ours, theirs):
    loss_a, grads_a = ours[:2]
    loss_b, grads_b = theirs
    torch.testing.assert_close(loss_a, loss_b, rtol=RTOL, atol=ATOL)
    assert grads_a.keys() == grads_b.keys()
    nonzero = 0
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=RTOL, atol=ATOL, msg=name)
        nonzero += int(grads_a[name].abs().sum() > 0)
    assert nonzero > len(grads_a) // 2  # the comparison is not between two sets of zeros


@pytest.mark.parametrize("loss_type,agg", [("grpo", LossAggregation.SEQ_MEAN_TOKEN_MEAN),
                                           ("dapo", LossAggregation.TOKEN_MEAN)])
@pytest.mark.parametrize("beta", [0.0, 0.01])
def test_on_policy_loss_and_gradients_match_trl(setup, loss_type, agg, beta):
    trainer = setup["trainer_for"](loss_type, beta)
    ours = _ours(setup, LossSettings(kl_beta=beta, loss_agg=agg))
    theirs = _theirs(trainer, _trl_inputs(setup["batch"], setup["ref_logp"] if beta else None))
    _assert_same(ours, theirs)


def test_kl_ratio_correction_matches_trl_default(setup):
    """TRL 1.16 multiplies the k3 term by the (differentiable) ratio by default; GRIT did not.
    Both are supported, and they differ in gradient, not in value."""
    trainer = setup["trainer_for"]("grpo", 0.01, kl_ratio_correction=True)
    ours = _ours(setup, LossSettings(kl_beta=0.01, kl_ratio_correction=True))
    _assert_same(ours, _theirs(trainer, _trl_inputs(setup["batch"], setup["ref_logp"])))
    plain = _ours(setup, LossSettings(kl_beta=0.01))
    torch.testing.assert_close(plain[0], ours[0])
    assert not torch.allclose(plain[1]["lm_head.weight"], ours[1]["lm_head.weight"], rtol=1e-4, atol=0)


def test_log_probs_match_trl(setup):
    trainer = setup["trainer_for"]("grpo", 0.0)
    batch = setup["batch"]
    inputs = _trl_inputs(batch, None)
    with torch.no_grad():
        theirs, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([batch.prompt_ids, batch.completion_ids], 1),
            torch.cat([batch.prompt_mask, batch.completion_mask.long()], 1), batch.completion_ids.shape[1],
            pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
            num_images=inputs["num_images"], mm_token_type_ids=inputs["mm_token_type_ids"])
    ours = _ours(setup, LossSettings(kl_beta=0.0))[2]
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(ours[mask], theirs[mask], rtol=RTOL, atol=1e-6)


def test_asymmetric_clipping_off_policy_matches_trl(setup):
    """Stale sampling log-probs push ratios outside [1 - 0.2, 1 + 0.28]: clipping is active."""
    trainer = setup["trainer_for"]("grpo", 0.01, eps_high=0.28)
    batch = setup["batch"]
    current = _ours(setup, LossSettings(kl_beta=0.0))[2]
    old = current + 0.4 * torch.randn(current.shape, generator=setup["g"])
    ratio = torch.exp(current - old)[batch.completion_mask.bool()]
    assert ((ratio < 0.8) | (ratio > 1.28)).any() and ((ratio > 0.8) & (ratio < 1.28)).any()
    ours = _ours(setup, LossSettings(kl_beta=0.01, clip_eps_high=0.28), old_logp=old)
    theirs = _theirs(trainer, _trl_inputs(batch, setup["ref_logp"], old_per_token_logps=old))
    _assert_same(ours, theirs)


def test_truncated_importance_sampling_matches_trl(setup):
    """TRL's token_truncate correction: per-token weight min(exp(old - rollout), cap)."""
    trainer = setup["trainer_for"]("grpo", 0.01)
    trainer.use_vllm = True  # the correction is applied only on TRL's vLLM path; the math is what we compare
    trainer.vllm_importance_sampling_correction = True
    batch = setup["batch"]
    current = _ours(setup, LossSettings(kl_beta=0.0))[2]
    rollout = current + 0.7 * torch.randn(current.shape, generator=setup["g"])
    weight = torch.exp(current - rollout).clamp(max=3.0)
    assert (weight[batch.completion_mask.bool()] == 3.0).any()  # the cap bites somewhere
    ours = _ours(setup, LossSettings(kl_beta=0.01, is_correction=True, is_cap=3.0), rollout_logp=rollout)
    theirs = _theirs(trainer, _trl_inputs(batch, setup["ref_logp"], importance_sampling_ratio=weight))
    _assert_same(ours, theirs)

