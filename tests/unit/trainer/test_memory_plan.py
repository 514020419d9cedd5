"""The memory planner: exact parameter counts of the published checkpoints, and its verdicts on the
shipped configs for the hardware they name (docs/cluster.md, "Memory plan")."""

from pathlib import Path

import pytest

from grit_ray.config import ModelConfig, ModelFamily, load_config
from grit_ray.models import adapter_for
from grit_ray.models.shape import model_shape
from grit_ray.trainer.memory_plan import GIB, plan_for_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.mark.parametrize("family,path,params", [
    # the parameter counts their model cards publish
    (ModelFamily.QWEN2_5_VL, "Qwen/Qwen2.5-VL-3B-Instruct", 3_754_622_976),
    (ModelFamily.INTERNVL3, "OpenGVLab/InternVL3-2B-hf", 2_088_883_712),
])
def test_published_checkpoint_sizes(family, path, params):
    shape = model_shape(ModelConfig(path=path, family=family), adapter_for(family))
    assert shape.params == params
    assert shape.tied_embeddings is (family is ModelFamily.QWEN2_5_VL)  # the 3B ties lm_head


def test_unknown_checkpoint_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="model.path"):
        model_shape(ModelConfig(path=str(tmp_path / "missing")), adapter_for(ModelFamily.QWEN2_5_VL))


@pytest.mark.parametrize("name", ["grit-qwen2.5vl-3b.yaml", "grit-internvl3-2b.yaml", "scale-7k.yaml"])
def test_shipped_configs_fit_the_hardware_they_name(name):
    plan = plan_for_config(load_config(CONFIGS / name))
    assert plan.gpu_bytes == 80 * GIB and plan.gpus_available == 8
    assert plan.problems == []
    assert all(load.total < 0.95 * 80 * GIB for load in plan.loads)


def test_colocated_paper_config_on_40_gb_fits_only_when_engine_and_learner_take_turns():
    paper = CONFIGS / "grit-qwen2.5vl-3b.yaml"
    # both resident at once: the engine's 0.6 of 40 GiB beside a learner of about 26 GiB is refused
    resident = plan_for_config(load_config(paper, ["rollout.sleep=off", "learner.offload_states=false"]), gpu_gib=40)
    assert any("rollout.sleep and learner.offload_states" in p for p in resident.problems)
    shared = next(load for load in resident.loads if load.engines and load.learners)
    assert 20 * GIB < shared.learner.total < 35 * GIB and not shared.hands_over
    assert shared.total == shared.training == shared.generating > 40 * GIB
    # the shipped default (auto: they take turns): the peak is one phase, and it fits
    turns = plan_for_config(load_config(paper), gpu_gib=40)
    assert turns.problems == []
    shared = next(load for load in turns.loads if load.engines and load.learners)
    assert shared.hands_over and shared.total == max(shared.training, shared.generating) < 0.95 * 40 * GIB
    # training: the whole learner beside a sleeping engine; generating: the engine's claim beside
    # the learner's bf16 weights and buckets
    assert shared.training < shared.learner.total + 2 * GIB
    assert shared.generating < 0.6 * 40 * GIB + shared.learner.weights + shared.learner.buckets + 2 * GIB
    # only the sleep: the learner's whole state stays beside the engine's claim while it generates
    sleep_only = plan_for_config(load_config(paper, ["learner.offload_states=false"]), gpu_gib=40)
    assert any("gpu_memory_utilization" in p for p in sleep_only.problems)


def test_twelve_gpus_refused_on_an_8_gpu_cluster():
    plan = plan_for_config(load_config(CONFIGS / "scale-7k.yaml", ["learner.num_actors=8"]))
    assert plan.gpus_needed == 12
    assert any("resources.cluster_gpus" in p and "12 GPUs" in p for p in plan.problems)


def test_estimate_moves_with_the_settings_that_drive_it():
    base = load_config(CONFIGS / "scale-7k.yaml")
    learner = lambda cfg: plan_for_config(cfg).loads[0].learner  # noqa: E731
    ref = learner(base)
    no_ckpt = learner(load_config(CONFIGS / "scale-7k.yaml", ["learner.gradient_checkpointing=false"]))
    assert no_ckpt.activations > 3 * ref.activations
    more_ranks = learner(load_config(CONFIGS / "scale-7k.yaml", ["learner.num_actors=8", "rollout.num_workers=8",
                                                                  "resources.cluster_gpus=16"]))
    assert more_ranks.optimizer * 2 == ref.optimizer and more_ranks.weights == ref.weights
    no_ref = learner(load_config(CONFIGS / "scale-7k.yaml", ["algorithm.kl_beta=0"]))
    assert no_ref.reference == 0 and ref.reference == ref.weights


def test_a_cuda_run_that_does_not_fit_stops_before_anything_starts(capsys):
    from grit_ray.config import ConfigError
    from grit_ray.trainer.loop import check_memory_plan
    from grit_ray.trainer.memory_plan import start_problems

    paper = CONFIGS / "grit-qwen2.5vl-3b.yaml"
    assert start_problems(load_config(paper)) == []  # the 80 GB it names
    assert start_problems(load_config()) == []  # CPU: no GPU memory to plan
    small = load_config(paper, ["resources.gpu_memory_gib=40", "rollout.sleep=off"])
    with pytest.raises(ConfigError, match=r"resources.gpu_memory_gib(.|\n)*resources.refuse_over_plan: false"):
        check_memory_plan(small)
    # the plan is an estimate: a user who knows better starts anyway, with the problems printed
    check_memory_plan(load_config(paper, ["resources.gpu_memory_gib=40", "rollout.sleep=off",
                                          "resources.refuse_over_plan=false"]))
    assert "starting anyway" in capsys.readouterr().out
    # no hardware named: nothing to check against
    assert start_problems(load_config(paper, ["resources.gpu_memory_gib=null", "resources.cluster_gpus=null"])) == []


def test_a_cluster_short_of_gpus_is_named_with_the_fields():
    from grit_ray.trainer.placement import gpu_shortfall

    cfg = load_config(CONFIGS / "scale-7k.yaml")  # 4 learners + 4 engines, one GPU each
    assert gpu_shortfall(cfg, 8) is None and gpu_shortfall(cfg, 16) is None
    short = gpu_shortfall(cfg, 6)
    assert "reserve 8 GPUs" in short and "learner.num_actors 4" in short and "has 6" in short


def test_the_transformers_backend_counts_its_weights_and_kv_cache():
    paper = CONFIGS / "grit-qwen2.5vl-3b.yaml"
    hf = ["rollout.backend=hf", "rollout.sleep=off", "learner.offload_states=false"]
    small, large = (plan_for_config(load_config(paper, [*hf, f"rollout.hf_batch_size={n}"])) for n in (4, 8))
    engine = small.loads[0].engine
    assert engine is not None and engine.weights == small.shape.params * 2  # bf16
    # one generate call's KV cache at the longest sequence, in proportion to the batch
    assert large.loads[0].engine.kv_cache == 2 * engine.kv_cache > 0
    assert small.loads[0].total > small.loads[0].learner.total + engine.weights
