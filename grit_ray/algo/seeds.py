"""Sampling seeds: one per completion, derived by hashing, so they never collide across steps,
groups or runs, and a completion re-issued after a rollout worker died is sampled again exactly."""

from __future__ import annotations

import hashlib


def completion_seed(run_seed: int, step: int, group: int, index: int) -> int:
    """A 62-bit seed for completion ``index`` of group ``group`` at ``step`` (fits every engine's
    generator, which takes a signed 64-bit integer)."""
    key = f"{run_seed}:{step}:{group}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 2


def group_seeds(run_seed: int, step: int, group: int, group_size: int) -> tuple[int, ...]:
    return tuple(completion_seed(run_seed, step, group, k) for k in range(group_size))
