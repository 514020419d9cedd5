"""Rollout: generate groups of completions for image prompts with a vLLM engine.

``VLLMGenerator`` is a plain class (usable in tests and notebooks); ``RolloutWorker`` is the thin
Ray actor around it. Images are opened inside the worker from the row (path or bytes), so the
driver never ships pixels, and the image processor's pixel limits come from ``model`` config,
the same limits the learner uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from grit_ray.config import ModelConfig, PromptTemplate, RolloutConfig
from grit_ray.data import Row
from grit_ray.hardware import apply_env, resolve_device, resolve_dtype, vllm_env
from grit_ray.prompts import chat_messages
from grit_ray.tiny_model import VISION_PLACEHOLDER_TOKENS


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float] | None  # sampled-token log-probs under the rollout engine
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@dataclass
class GroupResult:
    row: Row
    prompt: str
    completions: list[Completion]


class VLLMGenerator:
    """One vLLM engine generating ``group_size`` completions per image prompt."""

    def __init__(self, model_path: str, model: ModelConfig, rollout: RolloutConfig, group_size: int):
        device = resolve_device(model.device)
        apply_env(vllm_env(device, rollout.cpu_kv_cache_gib))
        from vllm import LLM, SamplingParams

        kwargs = {}
        if device == "cuda":
            kwargs["gpu_memory_utilization"] = rollout.gpu_memory_utilization
        self.llm = LLM(
            model=model_path,
            dtype=resolve_dtype(model.dtype, device),
            enforce_eager=rollout.enforce_eager,
            max_model_len=rollout.max_model_len,
            limit_mm_per_prompt={"image": 1},
            mm_processor_kwargs={"min_pixels": model.min_pixels, "max_pixels": model.max_pixels},
            seed=rollout.seed,
            trust_remote_code=model.trust_remote_code,
            **kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.sampling = SamplingParams(
            n=group_size,
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            top_k=rollout.top_k,
            max_tokens=rollout.max_new_tokens,
            stop=list(rollout.stop),
            include_stop_str_in_output=True,  # GRIT's rewards read '</answer>' when it was generated
            bad_words=list(VISION_PLACEHOLDER_TOKENS),
            logprobs=0,  # log-prob of each sampled token, for the importance-sampling correction
        )

    def prompt_text(self, question: str, template: PromptTemplate) -> str:
        return self.tokenizer.apply_chat_template(chat_messages(question, template), tokenize=False,
                                                  add_generation_prompt=True)

    def generate(self, rows: list[Row], template: PromptTemplate = PromptTemplate.GRIT) -> list[GroupResult]:
        prompts = [self.prompt_text(r.question, template) for r in rows]
        requests = [{"prompt": p, "multi_modal_data": {"image": r.open_image()}} for p, r in zip(prompts, rows)]
        outputs = self.llm.generate(requests, self.sampling, use_tqdm=False)
        results = []
        for row, prompt, out in zip(rows, prompts, outputs):
            comps = []
            for c in out.outputs:
                lps = [next(iter(step.values())).logprob for step in c.logprobs] if c.logprobs else None
                comps.append(Completion(c.text, list(c.token_ids), lps, c.finish_reason or "length"))
            results.append(GroupResult(row, prompt, comps))
        return results


class RolloutWorker:
    """Ray actor: hosts one VLLMGenerator. Created with ``ray.remote(RolloutWorker).options(...)``."""

    def __init__(self, model_path: str, model: ModelConfig, rollout: RolloutConfig, group_size: int):
        started = time.perf_counter()
        self.generator = VLLMGenerator(model_path, model, rollout, group_size)
        self.startup_s = time.perf_counter() - started

    def startup_seconds(self) -> float:
        return self.startup_s

    def generate(self, rows: list[Row], template: PromptTemplate = PromptTemplate.GRIT) -> list[GroupResult]:
        return self.generator.generate(rows, template)
