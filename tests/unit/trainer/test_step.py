"""The synchronous step's guard against stale weights."""

import pytest

from grit_ray.trainer.step import StaleWeightsError, check_weights_version
from grit_ray.workers.rollout import Completion, SampledCompletion


def _sample(version: int) -> SampledCompletion:
    return SampledCompletion(group_id=0, index=0, prompt="p", completion=Completion("t", [1], None, "stop"),
                             worker=3, weights_version=version)


def test_completions_from_the_last_sync_pass():
    check_weights_version(_sample(7), 7)


def test_a_completion_from_older_weights_stops_the_step():
    with pytest.raises(StaleWeightsError, match="rollout worker 3 generated with weights version 6.*version 7"):
        check_weights_version(_sample(6), 7)
