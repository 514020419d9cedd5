"""The step's guards against stale weights: the engines' version while collecting, and the
staleness bound (``algorithm.max_staleness``) before an update."""

import pytest

from grit_ray.trainer.step import StaleWeightsError, check_staleness, check_weights_version
from grit_ray.workers.rollout import Completion, SampledCompletion


def _sample(version: int) -> SampledCompletion:
    return SampledCompletion(group_id=0, index=0, prompt="p", completion=Completion("t", [1], None, "stop"),
                             worker=3, weights_version=version)


def test_completions_from_the_last_sync_pass():
    check_weights_version(_sample(7), 7)


def test_a_completion_from_older_weights_stops_the_step():
    with pytest.raises(StaleWeightsError, match="rollout worker 3 generated with weights version 6.*version 7"):
        check_weights_version(_sample(6), 7)


def test_staleness_is_counted_in_updates_and_bounded():
    assert check_staleness([4, 4, 3], learner_version=4, max_staleness=1) == [0, 0, 1]
    assert check_staleness([4], learner_version=4, max_staleness=0) == [0]
    with pytest.raises(StaleWeightsError, match="weights version 3 would train the learner at version 4: 1 updates "
                                                "apart, algorithm.max_staleness is 0"):
        check_staleness([4, 3], learner_version=4, max_staleness=0)
    with pytest.raises(StaleWeightsError, match="version 2 .* 2 updates apart"):
        check_staleness([2], learner_version=4, max_staleness=1)
    with pytest.raises(StaleWeightsError, match="-1 updates apart"):  # weights the learner never had
        check_staleness([5], learner_version=4, max_staleness=1)
