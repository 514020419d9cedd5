"""Answer-accuracy judges: a rule judge and an LLM judge over any OpenAI-compatible endpoint.

A judge returns a ``JudgeResult``: ``ok`` with a score, or ``failed`` with the reason. A failed
call is never turned into a score of 0 here; callers decide (GRIT's released code silently
scored failures as wrong answers, which poisons training signal).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from grit_ray.config import JudgeConfig, JudgeKind

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


@dataclass(frozen=True)
class JudgeResult:
    status: Literal["ok", "failed"]
    score: float | None = None
    error: str | None = None
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.status == "ok":
            out["score"] = self.score
        else:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class JudgeRequest:
    question: str  # what the judge sees as the question
    reference: str
    prediction: str
    image: bytes | None = None  # PNG/JPEG bytes for a multimodal judge


# ---------------------------------------------------------------------------------------------
# rule judge

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_YES = {"yes", "yeah", "yep", "true", "correct", "right", "y"}
_NO = {"no", "nope", "false", "incorrect", "wrong", "n", "not"}
_ARTICLES = {"a", "an", "the"}


def normalise_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, number words -> digits, yes/no variants -> yes/no."""
    words = re.sub(r"[^a-z0-9\s]", " ", text.lower()).split()
    words = [_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES]
    if len(words) == 1 and words[0] in _YES:
        return "yes"
    if len(words) == 1 and words[0] in _NO:
        return "no"
    return " ".join(words)


def rule_score(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return 1.0 if normalise_answer(prediction) == normalise_answer(reference) and normalise_answer(reference) else 0.0


# ---------------------------------------------------------------------------------------------
# LLM judge


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


class MissingAPIKey(RuntimeError):
    pass


class Secret:
    """A value that never shows itself: repr, str and logs print a mask."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def key_from_env(cfg: JudgeConfig) -> Secret | None:
    value = os.environ.get(cfg.api_key_env)
    return Secret(value) if value else None


class RateLimiter:
    """Requests-per-minute and tokens-per-minute budgets as token buckets refilled continuously.
    A bucket holds ``burst_s`` seconds of budget, so a step's burst of calls is smoothed to the
    rate instead of spending a whole minute's quota at once. ``acquire`` waits until both budgets
    allow the call; None disables a budget."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None, burst_s: float = 1.0):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.req_cap = max(1.0, (requests_per_minute or 0) / 60 * burst_s)
        self.tok_cap = max(1.0, (tokens_per_minute or 0) / 60 * burst_s)
        self._req, self._tok = self.req_cap, self.tok_cap
        self._at = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        dt, self._at = now - self._at, now
        if self.rpm:
            self._req = min(self.req_cap, self._req + dt * self.rpm / 60)
        if self.tpm:
            self._tok = min(self.tok_cap, self._tok + dt * self.tpm / 60)

    async def acquire(self, tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        if self.tpm:
            tokens = min(tokens, int(self.tok_cap))  # a call larger than the bucket waits for a full one
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                need_req = 0.0 if not self.rpm else max(0.0, 1 - self._req) * 60 / self.rpm
                need_tok = 0.0 if not self.tpm else max(0.0, tokens - self._tok) * 60 / self.tpm
                wait = max(need_req, need_tok)
                if wait <= 0:
                    if self.rpm:
                        self._req -= 1
                    if self.tpm:
                        self._tok -= tokens
                    return
                self.waited_s += wait
                await asyncio.sleep(wait)


def estimate_tokens(text: str, reply_tokens: int = 16) -> int:
    """A budget estimate (about 4 characters per token), not a tokenizer count."""
    return len(text) // 4 + reply_tokens


class OpenAIJudge:
    """Async LLM judge: per-call timeout, retries with exponential backoff and jitter, a concurrency cap.

    The key is read from the environment variable named by ``cfg.api_key_env`` and kept only inside
    the client; it is never logged or returned.
    """

    def __init__(self, cfg: JudgeConfig, template: str = GRIT_JUDGE_TEMPLATE, backoff_base_s: float = 0.25,
                 backoff_max_s: float = 8.0, seed: int | None = None, api_key: Secret | None = None):
        import openai

        key = api_key.reveal() if api_key else os.environ.get(cfg.api_key_env)
        if not key:
            if cfg.base_url is None:
                raise MissingAPIKey(
                    f"the openai judge needs an API key: export {cfg.api_key_env}=... "
                    f"(reward.judge.api_key_env names the variable)"
                )
            key = "not-needed"  # local OpenAI-compatible servers usually ignore it
        self.cfg = cfg
        self.template = template
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._client = openai.AsyncOpenAI(api_key=key, base_url=cfg.base_url, max_retries=0, timeout=cfg.timeout_s)
        self._semaphore = asyncio.Semaphore(cfg.concurrency)
        self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIJudge(model={self.cfg.model!r}, base_url={self.cfg.base_url!r})"

    def _messages(self, req: JudgeRequest) -> list[dict[str, Any]]:
        text = self.template.replace("{question}", req.question).replace("{answer}", req.reference).replace(
            "{prediction}", req.prediction)
        if req.image is None or not self.cfg.send_image:
            return [{"role": "user", "content": text}]
        data = base64.b64encode(req.image).decode()
        mime = "image/jpeg" if req.image[:2] == b"\xff\xd8" else "image/png"
        return [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}},
            {"type": "text", "text": text},
        ]}]

    async def _call_once(self, req: JudgeRequest) -> float:
        messages = self._messages(req)
        await self.limiter.acquire(estimate_tokens(str(messages)))
        resp = await asyncio.wait_for(
            self._client.chat.completions.create(model=self.cfg.model, messages=messages),
            timeout=self.cfg.timeout_s,
        )
        content = resp.choices[0].message.content if resp.choices else None
        return parse_judge_score(content or "")

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return delay / 2 + self._rng.uniform(0, delay / 2)  # jitter spreads retries of a burst

    async def judge(self, req: JudgeRequest) -> JudgeResult:
        reasons = []
        attempts = self.cfg.max_retries + 1
        async with self._semaphore:
            for attempt in range(attempts):
                try:
                    score = await self._call_once(req)
                    return JudgeResult("ok", score=score, attempts=attempt + 1)
                except Exception as e:  # classified below; anything unknown fails the call, not the run
                    reason, retry = _error_reason(e)
                    reasons.append(reason)
                    if not retry or attempt == attempts - 1:
                        break
                    await asyncio.sleep(self._backoff(attempt))
        return JudgeResult("failed", error=f"{reasons[-1]} after {len(reasons)} attempt(s)", attempts=len(reasons))

    async def judge_many(self, reqs: list[JudgeRequest]) -> list[JudgeResult]:
        return list(await asyncio.gather(*(self.judge(r) for r in reqs)))

    async def aclose(self) -> None:
        await self._client.close()


class RuleJudge:
    """Normalised exact match, behind the same async interface."""

    async def judge(self, req: JudgeRequest) -> JudgeResult:
        return JudgeResult("ok", score=rule_score(req.prediction, req.reference))

    async def judge_many(self, reqs: list[JudgeRequest]) -> list[JudgeResult]:
        return [await self.judge(r) for r in reqs]

    async def aclose(self) -> None:
        return None


def make_judge(cfg: JudgeConfig, api_key: Secret | None = None) -> OpenAIJudge | RuleJudge:
    return OpenAIJudge(cfg, api_key=api_key) if cfg.kind is JudgeKind.OPENAI else RuleJudge()
