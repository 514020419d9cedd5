from pathlib import Path

import pytest
import yaml

from grit_ray.cli import main
from grit_ray.config import (
    REPO_CONFIGS,
    ConfigError,
    GritConfig,
    load_config,
    parse_override,
    save_resolved_config,
    validate_config,
)

SHIPPED = sorted(REPO_CONFIGS.glob("*.yaml"))


def test_all_shipped_configs_exist_and_validate():
    names = {p.name for p in SHIPPED}
    assert {"tiny-cpu.yaml", "grit-qwen2.5vl-3b.yaml", "grit-internvl3-2b.yaml", "scale-7k.yaml"} <= names
    for path in SHIPPED:
        assert isinstance(load_config(path), GritConfig), path


def test_paper_config_carries_the_published_numbers():
    cfg = load_config(REPO_CONFIGS / "grit-qwen2.5vl-3b.yaml")
    assert cfg.run.steps == 200
    assert (cfg.algorithm.prompts_per_step, cfg.algorithm.group_size) == (32, 4)
    assert cfg.learner.lr == 2e-6 and cfg.learner.lr_schedule == "cosine" and cfg.learner.warmup_steps == 0
    assert cfg.algorithm.kl_beta == 0.01 and cfg.algorithm.adv_eps == 1e-4
    assert cfg.rollout.temperature == 0.9 and cfg.rollout.max_new_tokens == 1000
    assert cfg.model.max_pixels == 256 * 28 * 28 and cfg.model.min_pixels == 3136
    assert cfg.learner.zero_stage == 2 and cfg.learner.grad_clip == 1.0 and cfg.learner.weight_decay == 0.0
    assert cfg.learner.num_actors == 8 and cfg.model.dtype.value == "bfloat16"


def test_internvl_config_uses_norm1000_boxes():
    cfg = load_config(REPO_CONFIGS / "grit-internvl3-2b.yaml")
    assert cfg.model.family.value == "internvl3" and cfg.reward.coord_frame.value == "norm1000"
    assert cfg.prompt.max_prompt_tokens == 1500


def test_unknown_key_names_dotted_path_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["rollout.temprature=1.0"])
    assert e.value.problems == ["rollout.temprature: unknown key; did you mean 'temperature'?"]


def test_bad_value_names_path_and_reason():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["algorithm.group_size=1", "learner.zero_stage=4", "rollout.top_p=abc"])
    text = "\n".join(e.value.problems)
    assert "algorithm.group_size: Input should be greater than or equal to 2 (got 1)" in text
    assert "learner.zero_stage:" in text and "(got 4)" in text
    assert "rollout.top_p:" in text and "'abc'" in text


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="not divisible by learner.num_actors"):
        load_config(overrides=["learner.num_actors=3"])
    with pytest.raises(ConfigError, match="min_pixels .* exceeds max_pixels"):
        load_config(overrides=["model.min_pixels=40000"])  # the default max_pixels is 28224
    with pytest.raises(ConfigError, match="InternVL3 writes norm1000"):
        load_config(overrides=["model.family=internvl3", "reward.coord_frame=qwen-resized"])
    with pytest.raises(ConfigError, match="model.dtype: float16 is not supported: the learner has no loss scaling"):
        load_config(overrides=["model.dtype=float16"])


def test_staleness_bound_and_its_loss():
    assert load_config().algorithm.max_staleness == 0  # synchronous unless asked
    assert load_config(overrides=["algorithm.max_staleness=1", "resources.threads_per_actor=null"]
                       ).algorithm.max_staleness == 1
    with pytest.raises(ConfigError, match="algorithm.max_staleness: Input should be less than or equal to 1"):
        load_config(overrides=["algorithm.max_staleness=2"])
    with pytest.raises(ConfigError, match="is_correction: with max_staleness=1 the ratio is already taken"):
        load_config(overrides=["algorithm.max_staleness=1", "algorithm.is_correction=true",
                               "resources.threads_per_actor=null"])
    # the default config runs synchronous steps on two threads per actor; overlapped, they would spin
    with pytest.raises(ConfigError, match="resources.threads_per_actor: 2 threads per actor with "
                                          "algorithm.max_staleness: 1 oversubscribes"):
        load_config(overrides=["algorithm.max_staleness=1"])
    assert load_config(overrides=["algorithm.max_staleness=1", "resources.cpus_per_actor=2"]).resources.actor_threads == 2


def test_actor_threads_follow_the_cpu_share():
    assert load_config().resources.actor_threads == 2  # the default config asks for two (synchronous steps)
    assert load_config(overrides=["resources.threads_per_actor=null"]).resources.actor_threads == 1  # 0.25 CPU: one
    assert load_config(overrides=["resources.cpus_per_actor=4", "resources.threads_per_actor=null"]
                       ).resources.actor_threads == 4
    assert load_config(overrides=["resources.cpus_per_actor=4", "resources.threads_per_actor=2"]
                       ).resources.actor_threads == 2


def test_colocated_gpus_need_a_transport_nccl_accepts():
    colocated = ["resources.colocate=true", "resources.gpus_per_learner=0.5", "resources.gpus_per_rollout_worker=0.5",
                 "learner.comm_backend=auto"]
    with pytest.raises(ConfigError, match="resources.colocate: true with weight_sync.transport: broadcast"):
        load_config(overrides=colocated)
    assert load_config(overrides=[*colocated, "weight_sync.transport=object_store"]).resources.colocate
    assert load_config(overrides=[*colocated, "learner.comm_backend=gloo"]).resources.colocate  # no NCCL involved
    assert load_config(overrides=["resources.colocate=true"]).resources.colocate  # CPU actors share no GPU


def test_cuda_actors_must_reserve_gpus():
    with pytest.raises(ConfigError, match=r"model.device: cuda, but resources.gpus_per_learner and "
                                          r"resources.gpus_per_rollout_worker is 0"):
        load_config(overrides=["model.device=cuda"])
    with pytest.raises(ConfigError, match=r"but resources.gpus_per_rollout_worker is 0"):
        load_config(overrides=["model.device=cuda", "resources.gpus_per_learner=1"])
    assert load_config(overrides=["model.device=cuda", "resources.gpus_per_learner=1",
                                  "resources.gpus_per_rollout_worker=1"]).model.device.value == "cuda"
    gpu_configs = [c for c in SHIPPED if "device: cuda" in c.read_text()]
    assert len(gpu_configs) == 3 and all(load_config(c).model.device.value == "cuda" for c in gpu_configs)


def test_missing_training_data_is_an_error():
    with pytest.raises(ConfigError, match=r"data: give data.train sources or data.synthetic"):
        load_config(overrides=["data.synthetic=null"])


def test_secrets_are_refused_with_guidance():
    with pytest.raises(ConfigError, match="secrets never go in configs"):
        load_config(overrides=["reward.judge.api_key=sk-test-123"])


@pytest.mark.parametrize(
    "item, path, value",
    [
        ("a.b=1", ["a", "b"], 1),
        ("a.b=1e-4", ["a", "b"], 1e-4),
        ("a.b=true", ["a", "b"], True),
        ("a.b=null", ["a", "b"], None),
        ("a.b=[1, 2]", ["a", "b"], [1, 2]),
        ("a.b=x=y", ["a", "b"], "x=y"),
        ("a.b=2.5E+3", ["a", "b"], 2500.0),
        ("a.b=gpt-4.1", ["a", "b"], "gpt-4.1"),
        ("a.b=run-e1", ["a", "b"], "run-e1"),
    ],
)
def test_parse_override(item, path, value):
    assert parse_override(item) == (path, value)


def test_override_errors():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("rollout.temperature")
    with pytest.raises(ConfigError, match="run.steps: is a value, not a section"):
        load_config(overrides=["run.steps.x=1"])


def test_override_applies_and_resolved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["rollout.temperature=0.5", "run.name=abc", "learner.adam_betas=[0.9, 0.95]"])
    assert cfg.rollout.temperature == 0.5 and cfg.learner.adam_betas == (0.9, 0.95)
    assert cfg.run_dir() == Path("runs/abc")
    saved = save_resolved_config(cfg, tmp_path)
    again = validate_config(yaml.safe_load(saved.read_text()))
    assert again == cfg


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_cli_config_error_is_one_message_without_traceback(capsys):
    assert main(["config", "show", "--set", "rollout.temprature=1"]) == 2
    err = capsys.readouterr().err
    assert "rollout.temprature: unknown key" in err and "Traceback" not in err


def test_cli_config_show_prints_resolved_yaml(capsys):
    assert main(["config", "show", "--set", "run.steps=7"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["steps"] == 7


def test_cli_set_takes_several_pairs_and_repeats(capsys):
    assert main(["config", "show", "--set", "run.steps=7", "learner.lr=1e-4", "--set", "run.seed=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["run"]["steps"], shown["learner"]["lr"], shown["run"]["seed"]) == (7, 1e-4, 3)


def test_refill_bound_below_the_batch_is_rejected_naming_the_field():
    with pytest.raises(ConfigError, match="algorithm: max_prompts_per_step .2. is below prompts_per_step .4."):
        load_config(overrides=["algorithm.prompts_per_step=4", "algorithm.max_prompts_per_step=2"])
    cfg = load_config(overrides=["algorithm.prompts_per_step=4", "algorithm.refill_zero_signal_groups=true"])
    assert cfg.algorithm.prompt_draw_limit == 16


def test_configuration_reference_is_current():
    from grit_ray.config import config_reference_markdown

    doc = (REPO_CONFIGS.parent / "docs" / "configuration.md").read_text()
    assert doc.strip() == config_reference_markdown().strip(), "run: grit-ray config docs > docs/configuration.md"
    # every leaf key of the schema is documented with a meaning
    rows = [ln for ln in doc.splitlines() if ln.startswith("| `")]
    assert rows and all(not ln.rstrip().endswith("|  |") for ln in rows)


def test_every_shipped_gpu_config_fits_one_node_of_the_deploy_manifests():
    from grit_ray.trainer.placement import bundles, gpus_requested

    node_gpus = 8  # deploy/cluster.yaml (p4de) and deploy/rayjob.yaml: 8-GPU workers
    for path in (c for c in SHIPPED if "device: cuda" in c.read_text()):
        cfg = load_config(path)
        assert 0 < gpus_requested(cfg) <= node_gpus, path.name
        assert all(b.get("GPU", 0) <= 1 for b in bundles(cfg)[0]), path.name  # no actor spans GPUs yet (no TP)
    assert gpus_requested(load_config(overrides=["learner.num_actors=1", "rollout.num_workers=1"])) == 0  # CPU
    two = load_config(overrides=["resources.gpus_per_learner=1", "resources.gpus_per_rollout_worker=0.5",
                                 "learner.num_actors=2", "rollout.num_workers=2", "learner.micro_batch_size=1"])
    assert gpus_requested(two) == 3 and gpus_requested(two.model_copy(
        update={"resources": two.resources.model_copy(update={"colocate": True})})) == 3
