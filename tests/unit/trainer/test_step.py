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


class _Sync:
    """The driver's view of weight sync: the version of the weights the engines and learners hold."""

    def __init__(self, version: int):
        self.version = version


class _Learners:
    def __init__(self):
        self.started = []

    def start_train_step(self, samples):
        self.started.append(samples)
        return ["ref"]


def test_after_a_step_with_nothing_to_train_the_next_one_is_still_on_policy():
    """Step 4 dropped every group: no update, no sync, so the weights are still version 3 and step 5's
    completions (version 3) are on-policy, not one update stale."""
    from grit_ray.config import load_config
    from grit_ray.trainer.step import Experience, TrainingStep

    learners = _Learners()
    step = TrainingStep(load_config(), rollout=None, rewards=None, learners=learners, sync=_Sync(3))
    skipped = step.finish_update(step.start_update(Experience(step=4, samples=[], versions=[], metrics={})))
    assert skipped == {"train/skipped_update": 1.0} and learners.started == []
    pending = step.start_update(Experience(step=5, samples=["s0", "s1"], versions=[3, 3], metrics={}))
    assert pending.refs == ["ref"] and learners.started == [["s0", "s1"]]
    assert pending.experience.metrics == {"staleness/mean": 0.0, "staleness/max": 0.0}
