"""Typed run configuration: the single source of every parameter.

A run is described by one YAML file (see ``configs/``) plus ``--set section.key=value`` overrides.
Everything is validated here, before any actor starts; errors name the dotted path of the field.
Secrets never live in the config: the judge API key is read from the environment variable
named by ``reward.judge.api_key_env``.
"""

from __future__ import annotations

import difflib
import enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_CONFIGS = PACKAGE_ROOT.parent / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "tiny-cpu.yaml"
RESOLVED_CONFIG_NAME = "config.yaml"


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` are ``dotted.path: reason`` lines."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n" + "\n".join(f"  {p}" for p in problems))


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelFamily(str, enum.Enum):
    QWEN2_5_VL = "qwen2.5-vl"
    INTERNVL3 = "internvl3"


class Device(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class DType(str, enum.Enum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class TinyModelSpec(Section):
    """Shape of the offline tiny model built when ``model.path`` is null (tests, demo)."""

    seed: int = 0
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    vision_depth: int = Field(2, gt=0)
    vocab_size: int = Field(1024, ge=512, description="BPE vocabulary before special tokens")


class ModelConfig(Section):
    path: str | None = Field(
        None, description="HF directory or hub id of the policy; null builds the tiny offline model"
    )
    family: ModelFamily = ModelFamily.QWEN2_5_VL
    tiny: TinyModelSpec = TinyModelSpec()
    dtype: DType = Field(DType.BFLOAT16, description="bfloat16 on GPU; float32 on CPU")
    device: Device = Device.AUTO
    min_pixels: int = Field(3136, gt=0, description="image processor lower bound (pixels)")
    max_pixels: int = Field(256 * 28 * 28, gt=0, description="image processor upper bound (pixels)")
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _pixels_ordered(self) -> ModelConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) exceeds max_pixels ({self.max_pixels})")
        return self


class BadRowPolicy(str, enum.Enum):
    STRICT = "strict"  # stop at the first bad row with file:line and reason
    SKIP = "skip"  # go on; count and report every skipped row at the end


class DataFormat(str, enum.Enum):
    AUTO = "auto"
    JSONL = "jsonl"
    PARQUET = "parquet"


class DataSource(Section):
    path: str
    images: str | None = Field(None, description="folder that relative image names resolve against")
    format: DataFormat = DataFormat.AUTO


class SynthSpec(Section):
    """Synthetic grounded data generated into the run directory (see ``grit-ray data synth``)."""

    n: int = Field(64, gt=0)
    seed: int = 0
    counting_fraction: float = Field(0.5, ge=0.0, le=1.0)
    min_size: int = Field(96, ge=32)
    max_size: int = Field(160, ge=32)

    @model_validator(mode="after")
    def _sizes_ordered(self) -> SynthSpec:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) exceeds max_size ({self.max_size})")
        return self


class DataConfig(Section):
    train: list[DataSource] = Field(default_factory=list)
    eval: list[DataSource] = Field(default_factory=list)
    synthetic: SynthSpec | None = Field(None, description="generate synthetic train data instead of reading files")
    synthetic_eval: SynthSpec | None = None
    bad_rows: BadRowPolicy = BadRowPolicy.STRICT
    counting_datasets: list[str] = Field(default_factory=lambda: ["tallyqa"])
    box_tolerance_px: float = Field(1.0, ge=0.0, description="how far a box may stick out of the image")
    check_images: bool = Field(True, description="open every image while validating")
    shuffle: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _has_training_data(self) -> DataConfig:
        if not self.train and self.synthetic is None:
            raise ValueError("give data.train sources or data.synthetic")
        return self


class PromptTemplate(str, enum.Enum):
    GRIT = "grit"
    DIRECT = "direct"
    COT = "cot"


class PromptConfig(Section):
    template: PromptTemplate = PromptTemplate.GRIT
    max_prompt_tokens: int = Field(750, gt=0, description="750 for Qwen2.5-VL, 1500 for InternVL3 in GRIT")


class RolloutBackend(str, enum.Enum):
    VLLM = "vllm"
    HF = "hf"


class RolloutConfig(Section):
    backend: RolloutBackend = RolloutBackend.VLLM
    num_workers: int = Field(1, gt=0)
    temperature: float = Field(0.9, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, description="-1 disables top-k")
    max_new_tokens: int = Field(1000, gt=0)
    stop: list[str] = Field(default_factory=lambda: ["</answer>"])
    max_model_len: int = Field(4096, gt=0)
    enforce_eager: bool = Field(False, description="skip CUDA-graph/compile capture; true on CPU")
    gpu_memory_utilization: float = Field(0.6, gt=0.0, le=1.0)
    cpu_kv_cache_gib: int = Field(1, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU builds")
    seed: int = 0


class JudgeKind(str, enum.Enum):
    RULE = "rule"
    OPENAI = "openai"


class JudgeFailurePolicy(str, enum.Enum):
    RETRY_LATER = "retry_later"
    RULE_FALLBACK = "rule_fallback"
    DROP_GROUP = "drop_group"


class JudgeConfig(Section):
    kind: JudgeKind = JudgeKind.RULE
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; null = api.openai.com")
    model: str = "gpt-4o"
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="name of the environment variable holding the key (never the key)"
    )
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0)
    concurrency: int = Field(32, gt=0)
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    send_image: bool = False
    on_failure: JudgeFailurePolicy = JudgeFailurePolicy.RETRY_LATER


class RewardPreset(str, enum.Enum):
    GRIT_CODE = "grit-code"
    GRIT_PAPER = "grit-paper"


class CoordFrame(str, enum.Enum):
    ORIGINAL = "original"
    QWEN_RESIZED = "qwen-resized"
    NORM1000 = "norm1000"


class RewardConfig(Section):
    preset: RewardPreset = RewardPreset.GRIT_CODE
    weights: dict[str, float] = Field(default_factory=dict, description="per-component weight overrides")
    extra_components: list[str] = Field(
        default_factory=list, description="custom components as 'package.module:function'"
    )
    judge: JudgeConfig = JudgeConfig()
    coord_frame: CoordFrame = CoordFrame.QWEN_RESIZED
    num_actors: int = Field(1, gt=0)
    actor_class: str | None = Field(None, description="import path of a custom reward actor class")


class LossAggregation(str, enum.Enum):
    SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"  # released GRIT code
    TOKEN_MEAN = "token-mean"  # peers' default: mean over all tokens of the global batch


class AlgorithmConfig(Section):
    prompts_per_step: int = Field(32, gt=0)
    group_size: int = Field(4, ge=2, description="completions per prompt (G)")
    kl_beta: float = Field(0.01, ge=0.0, description="0 disables the reference model")
    adv_eps: float = Field(1e-4, gt=0.0)
    adv_std_normalize: bool = True
    clip_eps_low: float = Field(0.2, ge=0.0)
    clip_eps_high: float = Field(0.2, ge=0.0)
    loss_agg: LossAggregation = LossAggregation.SEQ_MEAN_TOKEN_MEAN
    is_correction: bool = False
    is_cap: float = Field(3.0, gt=0.0)
    drop_zero_signal_groups: bool = False

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.group_size


class ZeroStage(int, enum.Enum):
    ZERO2 = 2
    ZERO3 = 3


class CommBackend(str, enum.Enum):
    AUTO = "auto"  # nccl on CUDA, gloo on CPU
    GLOO = "gloo"
    NCCL = "nccl"


class LearnerConfig(Section):
    num_actors: int = Field(1, gt=0)
    zero_stage: ZeroStage = ZeroStage.ZERO2
    comm_backend: CommBackend = CommBackend.AUTO
    micro_batch_size: int = Field(1, gt=0, description="completions per forward/backward per actor")
    lr: float = Field(2e-6, gt=0.0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    gradient_checkpointing: bool = False
    freeze_vision_tower: bool = False


class SyncTransport(str, enum.Enum):
    BROADCAST = "broadcast"  # torch.distributed group of learner rank 0 + rollout workers
    OBJECT_STORE = "object_store"  # Ray object store


class WeightSyncConfig(Section):
    transport: SyncTransport = SyncTransport.BROADCAST
    bucket_mb: int = Field(512, gt=0)


class ResourcesConfig(Section):
    ray_address: str | None = Field(None, description="null starts a local Ray; 'auto' joins a running cluster")
    gpus_per_rollout_worker: float = Field(0.0, ge=0.0)
    gpus_per_learner: float = Field(0.0, ge=0.0)
    cpus_per_actor: float = Field(0.25, gt=0.0)
    colocate: bool = False
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class LoggingConfig(Section):
    run_dir: str = "runs/{name}"
    progress: bool = True
    tensorboard: bool = True
    wandb_project: str | None = None


class CheckpointConfig(Section):
    every_n_steps: int = Field(50, gt=0)
    keep_last: int = Field(2, gt=0)
    save_final: bool = True


class EvalConfig(Section):
    every_n_steps: int | None = Field(None, gt=0)
    max_rows: int | None = Field(None, gt=0)


class RunConfig(Section):
    name: str = Field("grit", pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = 0
    steps: int = Field(200, gt=0)


class GritConfig(Section):
    """The whole run."""

    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig
    prompt: PromptConfig = PromptConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerConfig = LearnerConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()
    resources: ResourcesConfig = ResourcesConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _batch_divides(self) -> GritConfig:
        per_update = self.algorithm.completions_per_step
        per_pass = self.learner.num_actors * self.learner.micro_batch_size
        if per_update % per_pass:
            raise ValueError(
                f"algorithm.prompts_per_step x algorithm.group_size = {per_update} completions is not divisible "
                f"by learner.num_actors x learner.micro_batch_size = {per_pass}"
            )
        if self.model.family is ModelFamily.INTERNVL3 and self.reward.coord_frame is CoordFrame.QWEN_RESIZED:
            raise ValueError("reward.coord_frame: InternVL3 writes norm1000 boxes, not qwen-resized pixels")
        return self

    def run_dir(self) -> Path:
        return Path(self.logging.run_dir.format(name=self.run.name))


# ---------------------------------------------------------------------------------------------
# loading, overrides, errors


def _format_validation_error(err: ValidationError, known: GritConfig | None = None) -> list[str]:
    problems = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + _suggest(e["loc"])
            if str(e["loc"][-1]).lower() in {"api_key", "key", "token", "secret", "password"}:
                msg += "; secrets never go in configs: export the key and name its variable in reward.judge.api_key_env"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in {"value_error", "assertion_error"}:
            msg += f" (got {e['input']!r})"
        problems.append(f"{path}: {msg}")
    return problems


def _suggest(loc: tuple[Any, ...]) -> str:
    """'; did you mean X' for a misspelt key, looked up in the schema at the key's parent."""
    model: Any = GritConfig
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return ""
        ann = fields[part].annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
    fields = getattr(model, "model_fields", None)
    if not fields:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'rollout.temperature=1.0'`` -> (['rollout', 'temperature'], 1.0). Values are YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError([f"--set {item!r}: expected section.key=value"])
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError([f"--set {item!r}: empty key segment in {key!r}"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError([f"{key}: cannot parse value {raw!r}: {e}"]) from None
    if isinstance(value, str):
        try:  # YAML 1.1 reads '1e-4' as a string; on a command line it means the number
            value = float(value) if any(c in value.lower() for c in "e.") and value.strip() else value
        except ValueError:
            pass
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError([f"{'.'.join(path[: i + 1])}: is a value, not a section (from --set {item})"])
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"cannot read config file: {e.strerror}"], source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"YAML syntax error: {e}"], source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["top level must be a mapping of sections"], source=str(path))
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> GritConfig:
    """Read a YAML config (default: ``configs/tiny-cpu.yaml``), apply ``--set`` overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = apply_overrides(read_yaml(path), overrides or [])
    return validate_config(data, source=str(path))


def validate_config(data: dict[str, Any], source: str | None = None) -> GritConfig:
    try:
        return GritConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e), source=source) from None


def config_to_yaml(cfg: GritConfig) -> str:
    # The config holds no secrets by construction (only the *name* of the key's variable).
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_resolved_config(cfg: GritConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / RESOLVED_CONFIG_NAME
    out.write_text(config_to_yaml(cfg))
    return out
