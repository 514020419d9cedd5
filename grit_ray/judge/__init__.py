"""Answer-accuracy judges (rule, and an LLM over any OpenAI-compatible endpoint), their rate limits
and secrets, and the one path that scores a completion (``scoring``)."""

from __future__ import annotations

from grit_ray.config import JudgeConfig
from grit_ray.judge.protocol import Judge
from grit_ray.judge.secrets import Secret


def make_judge(cfg: JudgeConfig, api_key: Secret | None = None) -> Judge:
    from grit_ray.judge.llm import OpenAIJudge
    from grit_ray.judge.rule import RuleJudge

    return OpenAIJudge(cfg, api_key=api_key) if cfg.kind.is_llm else RuleJudge(cfg.rule_match)
