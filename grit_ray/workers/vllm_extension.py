"""The rollout side of weight sync inside vLLM's own worker processes (``rollout.engine_process:
separate``, and every tensor-parallel rank). vLLM mixes this class into its Worker
(``worker_extension_cls``); the rollout actor calls its methods by name with ``collective_rpc``,
passing bucket handles (``weight_sync.SharedBucket``: shared memory on CPU, CUDA IPC handles on a
GPU), never a pickled generator of tensors: a worker process cannot reach the actor's memory."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import torch

from grit_ray.workers.rollout import retie_lm_head
from grit_ray.workers.weight_sync import SharedBucket, open_shared


class WeightLoadExtension:
    """Methods vLLM adds to each of its workers (``self`` is the worker: ``self.model_runner``)."""

    def grit_load_shared(self, pickled_handles: bytes) -> int:
        """Load the buckets' (possibly partial) HF-named weights in place; returns how many tensors.
        The handles come pickled: vLLM's RPC encoding would turn the dataclasses into dicts."""
        handles: list[SharedBucket] = pickle.loads(pickled_handles)
        count = 0

        def named() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal count
            for h in handles:
                for item in open_shared(h):
                    count += 1
                    yield item

        runner = self.model_runner  # type: ignore[attr-defined]
        runner.reload_weights(weights_iterator=named(), is_checkpoint_format=True)
        retie_lm_head(runner.get_model(), runner.model_config.hf_config)
        return count
