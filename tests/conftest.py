"""Shared fixtures: the tiny model and synthetic data are built once per session, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from grit_ray.config import ModelFamily, SynthSpec, TinyModelSpec, load_config
from grit_ray.data.synth import write_synth
from grit_ray.models.tiny import build_tiny_model, cached_tiny_model

# Timing deadlines make property tests flaky on a busy 2-core machine; correctness is what they check.
settings.register_profile("grit", deadline=None, max_examples=100)
settings.load_profile("grit")

# vLLM on CPU: small KV cache, engine core in-process (no spawned child per engine).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), TinyModelSpec.plumbing(seed=0))


@pytest.fixture(scope="session")
def tiny_tied_dir(tmp_path_factory) -> Path:
    """The small random Qwen2.5-VL with a tied LM head (docs/models.md, "Tied embeddings")."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-tied"), TinyModelSpec.plumbing(seed=0, tie_embeddings=True))


@pytest.fixture(scope="session")
def tiny_internvl_dir(tmp_path_factory) -> Path:
    """The small random InternVL3 (transformers' InternVL classes, a Qwen2 text model)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-internvl3"), TinyModelSpec.plumbing(seed=0),
                            family=ModelFamily.INTERNVL3)


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The default config's pretrained base model (docs/base_model.md), built once into the cache
    (~12 min when the cache is cold) before the tests that run the default config start their
    subprocesses and clocks."""
    return cached_tiny_model(load_config().model.tiny, log=print)


@pytest.fixture(scope="session")
def synth_jsonl(tmp_path_factory) -> Path:
    return write_synth(tmp_path_factory.mktemp("synth"), SynthSpec(n=24, seed=3))
