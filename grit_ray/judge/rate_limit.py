"""Client-side budgets for a judge endpoint: requests and tokens per minute."""

from __future__ import annotations

import asyncio
import time


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
