"""The tiny model served by a real vLLM engine inside a real Ray actor (one engine for the module)."""

import itertools

import pytest
import ray

from grit_ray.config import DataSource, load_config
from grit_ray.data import RowStream
from grit_ray.hardware import vllm_env
from grit_ray.rollout import RolloutWorker
from grit_ray.tiny_model import VISION_PLACEHOLDER_TOKENS

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

GROUP = 4


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=["rollout.max_new_tokens=48", f"algorithm.group_size={GROUP}"])


@pytest.fixture(scope="module")
def worker(cfg, tiny_model_dir):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="grit-ray-tests")
    actor = ray.remote(RolloutWorker).options(
        num_cpus=0.5, runtime_env={"env_vars": vllm_env("cpu", cfg.rollout.cpu_kv_cache_gib)}
    ).remote(str(tiny_model_dir), cfg.model, cfg.rollout, GROUP)
    ray.get(actor.startup_seconds.remote())
    yield actor
    ray.shutdown()


@pytest.fixture(scope="module")
def rows(synth_jsonl):
    return list(itertools.islice(RowStream([DataSource(path=str(synth_jsonl), images=str(synth_jsonl.parent / "images"))]), 4))


def test_image_prompts_generate_groups(worker, rows, cfg, tiny_model_dir):
    from transformers import AutoTokenizer

    groups = ray.get(worker.generate.remote(rows))
    assert [g.row.question for g in groups] == [r.question for r in rows]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    forbidden = set(tok.convert_tokens_to_ids(VISION_PLACEHOLDER_TOKENS))
    for g in groups:
        assert g.prompt.count("<|image_pad|>") == 1 and g.row.question in g.prompt
        assert len(g.completions) == GROUP
        for c in g.completions:
            assert 0 < len(c.token_ids) <= cfg.rollout.max_new_tokens
            assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
            assert c.finish_reason in {"stop", "length"}
            assert not forbidden & set(c.token_ids)
    # sampling at temperature 0.9: a group is not four copies of one completion
    assert any(len({tuple(c.token_ids) for c in g.completions}) > 1 for g in groups)
