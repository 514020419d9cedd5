"""The LLM judge over any OpenAI-compatible endpoint, and the one place an OpenAI client is made.

Per-call timeout, retries with exponential backoff and jitter for what is worth retrying (timeouts,
429, 5xx, unparsable replies), a concurrency cap and client-side rate limits. The reply is parsed
the way the released code parses it (docs/grit.md §3); a failure comes back as ``FAILED`` with
its reason.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import time
from collections.abc import Sequence
from typing import Any

from grit_ray.config import JudgeConfig, JudgeKind
from grit_ray.judge.protocol import JudgeRequest, JudgeResult, JudgeStatus
from grit_ray.judge.rate_limit import RateLimiter, estimate_tokens
from grit_ray.judge.secrets import MissingAPIKey, Secret, key_from_env
from grit_ray.judge.usage import JudgeUsage

# The published judge prompt (apostrophes are U+2019; the Question and Standard answer lines end
# with a space).
GRIT_JUDGE_TEMPLATE = (
    "You are responsible for proofreading the answers, you need to give a score to the model\u2019s answer by "
    "referring to the standard answer, based on the given question. The full score is 1 point and the minimum "
    "score is 0 points. Please output the score in the json form \"{score: <score>}\". The evaluation criteria "
    "require that the closer the model\u2019s answer is to the standard answer, the higher the score.\n"
    "Question: {question} \n"
    "Standard answer: {answer} \n"
    "Model\u2019s answer: {prediction}"
)



class JudgeReplyError(ValueError):
    """The judge replied, but no score could be read from the reply."""


def parse_judge_score(reply: str) -> float:
    """The published parsing: lower-case; keep letters, digits, '_', whitespace and '.'; take the text
    after the last 'score', keep its first 5 characters, keep digits and dots, float(). A score
    outside [0, 1] is refused (the prompt says the full score is 1)."""
    text = re.sub(r"[^\w\s.]", "", (reply or "").lower())
    i = text.rfind("score")
    if i < 0:
        raise JudgeReplyError(f"no 'score' in reply {reply[:80]!r}")
    digits = re.sub(r"[^0-9.]", "", text[i + len("score"):][:5])
    try:
        value = float(digits)
    except ValueError:
        raise JudgeReplyError(f"unparsable score in reply {reply[:80]!r}") from None
    if not 0.0 <= value <= 1.0:
        raise JudgeReplyError(f"score {value} outside [0, 1] in reply {reply[:80]!r}")
    return value


def _error_reason(e: BaseException) -> tuple[str, bool]:
    """(short reason, worth retrying)."""
    import openai

    if isinstance(e, asyncio.TimeoutError | openai.APITimeoutError):
        return "timeout", True
    if isinstance(e, JudgeReplyError):
        return f"unparsable reply: {e}", True
    if isinstance(e, openai.RateLimitError):
        return "rate limited (429)", True
    if isinstance(e, openai.APIStatusError):
        retry = e.status_code >= 500 or e.status_code in (408, 409)
        return f"HTTP {e.status_code}", retry
    if isinstance(e, openai.APIConnectionError):
        return "connection error", True
    return f"{type(e).__name__}: {e}", False


def needs_key(cfg: JudgeConfig) -> bool:
    """An Azure deployment or api.openai.com always needs a key; a local endpoint (``base_url`` set) may not."""
    return cfg.kind is JudgeKind.AZURE_OPENAI or (cfg.kind is JudgeKind.OPENAI and cfg.base_url is None)


def missing_key_error(cfg: JudgeConfig) -> MissingAPIKey:
    return MissingAPIKey(f"the {cfg.kind.value} judge needs an API key: export {cfg.api_key_env}=... "
                         f"(reward.judge.api_key_env names the variable)")


def openai_client(cfg: JudgeConfig, api_key: Secret | None = None, max_retries: int = 0):
    """An async client for ``cfg``'s endpoint: OpenAI-compatible, or an Azure OpenAI deployment. The
    key comes from ``api_key`` or the variable named by ``cfg.api_key_env``."""
    import openai

    key = api_key or key_from_env(cfg)
    if key is None and needs_key(cfg):
        raise missing_key_error(cfg)
    if cfg.kind is JudgeKind.AZURE_OPENAI:
        assert key is not None and cfg.azure_endpoint is not None  # needs_key; JudgeConfig checks the endpoint
        return openai.AsyncAzureOpenAI(api_key=key.reveal(), azure_endpoint=cfg.azure_endpoint,
                                       azure_deployment=cfg.azure_deployment, api_version=cfg.api_version,
                                       max_retries=max_retries, timeout=cfg.timeout_s)
    return openai.AsyncOpenAI(api_key=key.reveal() if key else "not-needed", base_url=cfg.base_url,
                              max_retries=max_retries, timeout=cfg.timeout_s)


def image_part(image: bytes) -> dict[str, Any]:
    mime = "image/jpeg" if image[:2] == b"\xff\xd8" else "image/png"
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(image).decode()}"}}


def user_message(text: str, images: Sequence[bytes] = ()) -> list[dict[str, Any]]:
    """One user turn: the text alone, or the images then the text (OpenAI chat format)."""
    if not images:
        return [{"role": "user", "content": text}]
    return [{"role": "user", "content": [*(image_part(i) for i in images), {"type": "text", "text": text}]}]


class OpenAIJudge:
    """Async LLM judge: per-call timeout, retries with exponential backoff and jitter, a concurrency cap.

    The key is read from the environment variable named by ``cfg.api_key_env`` and kept only inside
    the client; it is never logged or returned.
    """

    def __init__(self, cfg: JudgeConfig, template: str = GRIT_JUDGE_TEMPLATE, backoff_base_s: float = 0.25,
                 backoff_max_s: float = 8.0, seed: int | None = None, api_key: Secret | None = None):
        self.cfg = cfg
        self.template = template
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._client = openai_client(cfg, api_key)  # retries are ours (classified, with jitter)
        self._semaphore = asyncio.Semaphore(cfg.concurrency)
        self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute)
        self.usage = JudgeUsage()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIJudge(model={self.cfg.model!r}, base_url={self.cfg.base_url!r})"

    def _messages(self, req: JudgeRequest) -> list[dict[str, Any]]:
        text = self.template.replace("{question}", req.question).replace("{answer}", req.reference).replace(
            "{prediction}", req.prediction)
        return user_message(text, [req.image] if req.image is not None and self.cfg.send_image else [])

    async def _call_once(self, req: JudgeRequest) -> float:
        messages = self._messages(req)
        await self.limiter.acquire(estimate_tokens(str(messages)))
        started = time.perf_counter()
        resp = await asyncio.wait_for(
            self._client.chat.completions.create(model=self.cfg.model, messages=messages,
                                                 **({"max_tokens": self.cfg.max_reply_tokens}
                                                    if self.cfg.max_reply_tokens else {})),
            timeout=self.cfg.timeout_s,
        )
        tokens = resp.usage
        self.usage.answered(time.perf_counter() - started, tokens.prompt_tokens if tokens else 0,
                            tokens.completion_tokens if tokens else 0)
        content = resp.choices[0].message.content if resp.choices else None
        return parse_judge_score(content or "")

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return delay / 2 + self._rng.uniform(0, delay / 2)  # jitter spreads retries of a burst

    async def judge(self, req: JudgeRequest) -> JudgeResult:
        reasons = []
        attempts = self.cfg.max_retries + 1
        self.usage.requests += 1
        async with self._semaphore:
            for attempt in range(attempts):
                try:
                    score = await self._call_once(req)
                    return JudgeResult(JudgeStatus.OK, score=score, attempts=attempt + 1)
                except Exception as e:  # classified below; anything unknown fails the call, not the run
                    reason, retry = _error_reason(e)
                    if reason in ("HTTP 401", "HTTP 403"):  # the endpoint refused the key: say which variable held it
                        reason = f"{reason} (the key in {self.cfg.api_key_env} was refused)"
                    reasons.append(reason)
                    self.usage.errored(reason, retrying=retry and attempt < attempts - 1)
                    if not retry or attempt == attempts - 1:
                        break
                    await asyncio.sleep(self._backoff(attempt))
        return JudgeResult(JudgeStatus.FAILED, error=f"{reasons[-1]} after {len(reasons)} attempt(s)", attempts=len(reasons))

    async def judge_many(self, reqs: list[JudgeRequest]) -> list[JudgeResult]:
        return list(await asyncio.gather(*(self.judge(r) for r in reqs)))

    async def aclose(self) -> None:
        await self._client.close()
