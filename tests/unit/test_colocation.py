"""The colocation plan: what ``rollout.sleep`` and ``learner.offload_states`` resolve to on each
device and placement, and the combinations the config check refuses (docs/cluster.md, "Colocation")."""

from pathlib import Path

import pytest

from grit_ray.config import ConfigError, EngineSleep, load_config

PAPER = Path(__file__).resolve().parents[2] / "configs" / "grit-qwen2.5vl-3b.yaml"


def test_colocated_cuda_runs_take_turns_by_default():
    plan = load_config(PAPER).colocation()
    assert plan.sleep is EngineSleep.DISCARD_WEIGHTS and plan.engines_first
    assert plan.offload_ranks == tuple(range(8))  # every learner shares its GPU with an engine
    assert plan.on_cuda and not any("on CPU" in line for line in plan.lines())


def test_only_ranks_beside_an_engine_offload():
    plan = load_config(PAPER, ["rollout.num_workers=2"]).colocation()
    assert plan.offload_ranks == (0, 1)


def test_a_frozen_vision_tower_keeps_the_engine_weights_in_host_memory():
    # the sync sends trainable weights only: a discarded tower would never come back
    plan = load_config(PAPER, ["learner.freeze_vision_tower=true"]).colocation()
    assert plan.sleep is EngineSleep.OFFLOAD_WEIGHTS
    with pytest.raises(ConfigError, match="rollout.sleep: discard-weights with learner.freeze_vision_tower"):
        load_config(PAPER, ["learner.freeze_vision_tower=true", "rollout.sleep=discard-weights"])


def test_one_step_off_keeps_everything_resident():
    plan = load_config(PAPER, ["algorithm.max_staleness=1"]).colocation()
    assert plan.sleep is EngineSleep.OFF and plan.offload_ranks == () and not plan.engines_first
    with pytest.raises(ConfigError, match=r"rollout.sleep: offload-weights with algorithm.max_staleness: 1(.|\n)*"
                                          r"rollout.sleep: off or algorithm.max_staleness: 0"):
        load_config(PAPER, ["algorithm.max_staleness=1", "rollout.sleep=offload-weights"])


@pytest.mark.parametrize("overrides", [[], ["resources.colocate=false", "resources.gpus_per_learner=1",
                                            "resources.gpus_per_rollout_worker=1"]])
def test_nothing_sleeps_on_cpu_or_on_separate_gpus_unless_asked(overrides):
    cfg = load_config(None if not overrides else PAPER, overrides)
    plan = cfg.colocation()
    assert plan.sleep is EngineSleep.OFF and plan.offload_ranks == ()
    assert plan.lines()[0].startswith("rollout.sleep: off")


def test_asked_for_on_cpu_it_runs_and_says_it_frees_nothing():
    plan = load_config(None, ["rollout.sleep=discard-weights", "learner.offload_states=true"]).colocation()
    assert plan.sleep.vllm_level == 2 and plan.offload_ranks == (0,) and not plan.on_cuda
    assert any("on CPU this frees no device memory" in line for line in plan.lines())


def test_a_bare_yaml_off_means_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(PAPER.read_text().replace("sleep: auto", "sleep: off"))  # YAML reads a bare off as false
    assert load_config(path).colocation().sleep is EngineSleep.OFF
