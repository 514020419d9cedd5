"""What an LLM judge cost: requests, HTTP attempts, retries and failures by cause, tokens in and out,
latency percentiles, and a cost estimate from configured prices. Each judge counts its own; the
reward pool merges its actors' counts into one report per run or evaluation (docs/reward_service.md)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grit_ray.config import JudgeConfig

LATENCIES_KEPT = 50_000  # per judge; past it every other one is dropped (the percentiles stay representative)


@dataclass
class JudgeUsage:
    requests: int = 0  # judgements asked (one per distinct completion, retries not counted)
    attempts: int = 0  # HTTP calls, retries included
    retried: Counter = field(default_factory=Counter)  # reason -> attempts that failed and were tried again
    failed: Counter = field(default_factory=Counter)  # reason -> judgements that failed for good
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of the calls that answered

    def answered(self, latency_s: float, prompt_tokens: int, completion_tokens: int) -> None:
        self.attempts += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.latencies_s.append(latency_s)
        if len(self.latencies_s) > LATENCIES_KEPT:
            self.latencies_s = self.latencies_s[::2]

    def errored(self, reason: str, retrying: bool) -> None:
        """An attempt that failed (an unparsable reply has been counted as answered first: it cost tokens)."""
        self.attempts += 0 if reason.startswith("unparsable") else 1
        (self.retried if retrying else self.failed)[reason.split(":")[0]] += 1

    def merge(self, other: JudgeUsage) -> JudgeUsage:
        return JudgeUsage(self.requests + other.requests, self.attempts + other.attempts,
                          self.retried + other.retried, self.failed + other.failed,
                          self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                          self.latencies_s + other.latencies_s)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "attempts": self.attempts, "retried": dict(self.retried),
                "failed": dict(self.failed), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "latencies_s": self.latencies_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JudgeUsage:
        return cls(d["requests"], d["attempts"], Counter(d["retried"]), Counter(d["failed"]), d["prompt_tokens"],
                   d["completion_tokens"], list(d["latencies_s"]))


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(1, min(99, round(q))) - 1]


def judge_report(cfg: JudgeConfig, usage: JudgeUsage | None, cache_hits: int = 0) -> dict[str, Any]:
    """The report of one run or evaluation (``judge_report.json``). The rule judge makes no calls."""
    out: dict[str, Any] = {"judge": cfg.kind.value, "model": cfg.model if cfg.kind.is_llm else None}
    if usage is None:
        return {**out, "requests": 0, "attempts": 0}
    cost = None
    if cfg.usd_per_million_input_tokens is not None and cfg.usd_per_million_output_tokens is not None:
        cost = (usage.prompt_tokens * cfg.usd_per_million_input_tokens
                + usage.completion_tokens * cfg.usd_per_million_output_tokens) / 1e6
    lat = usage.latencies_s
    return {**out, "requests": usage.requests, "attempts": usage.attempts, "cache_hits": cache_hits,
            "retries": sum(usage.retried.values()), "retried_by_cause": dict(usage.retried),
            "failed": sum(usage.failed.values()), "failed_by_cause": dict(usage.failed),
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "latency_s": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                          "max": max(lat) if lat else None},
            "estimated_cost_usd": cost}


def report_line(report: dict[str, Any]) -> str:
    """One line for the console: 'judge openai (gpt-4o): 512 requests, 530 calls (18 retries), ...'."""
    if not report["attempts"]:
        return f"judge {report['judge']}: no calls"
    lat = report["latency_s"]
    cost = report["estimated_cost_usd"]
    latency = f"latency p50 {lat['p50']:.2f}s p99 {lat['p99']:.2f}s" if lat["p50"] is not None else "no call answered"
    return (f"judge {report['judge']} ({report['model']}): {report['requests']} requests, {report['attempts']} calls "
            f"({report['retries']} retries, {report['failed']} failed"
            + (f": {', '.join(f'{k} {v}' for k, v in report['failed_by_cause'].items())}" if report['failed'] else "")
            + f"), {report['cache_hits']} cache hits, tokens {report['prompt_tokens']} in / "
            f"{report['completion_tokens']} out, {latency}"
            + (f", about ${cost:.4f}" if cost is not None else ""))


def write_judge_report(report: dict[str, Any], out_dir: Path) -> str:
    """``OUT/judge_report.json``; returns the console line."""
    (out_dir / "judge_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report_line(report)
