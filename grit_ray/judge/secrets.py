"""API keys: read from the environment only, and never shown (repr, str and logs print a mask)."""

from __future__ import annotations

import os

from grit_ray.config import JudgeConfig


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
