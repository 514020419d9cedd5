"""Typed run configuration: the single source of every parameter.

A run is described by one YAML file (see ``configs/``) plus ``--set section.key=value`` overrides.
Everything is validated here, before any actor starts; errors name the dotted path of the field.
Secrets never live in the config: the judge API key is read from the environment variable
named by ``reward.judge.api_key_env``.
"""

from __future__ import annotations

import difflib
import enum
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_CONFIGS = PACKAGE_ROOT.parent / "configs"  # a checkout's configs/ (its tiny-cpu.yaml links to the packaged one)
DEFAULT_CONFIG = PACKAGE_ROOT / "configs" / "tiny-cpu.yaml"  # package data: a wheel install has its default
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


class ComparisonOrder(str, enum.Enum):
    """How the corpus works a relation through two boxes (docs/base_model.md, "Why this recipe")."""

    AS_ASKED = "as-asked"  # a's box, then b's, the coordinates the relation compares; the sign's meaning per relation
    CANONICAL = "canonical"  # the box the relation puts first, then the other; far edge < near edge means Yes


class TinyPretrainSpec(Section):
    """Supervised pretraining of the tiny base model on its corpus (docs/base_model.md)."""

    steps: int = Field(2400, ge=0, description="optimizer steps; 0 leaves the weights random")
    batch_size: int = Field(16, gt=0, description="corpus samples per step")
    lr: float = Field(1e-3, gt=0.0, description="AdamW peak learning rate (3e-3 collapses onto answer priors)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up; the cosine decay runs from step 0, under it")
    selection_share: float = Field(
        0.25, ge=0.0, le=1.0,
        description="first share of the steps: 'where' only, in contrastive scenes of up to selection_shapes shapes "
        "(selection is learnt before the rest of the corpus, docs/base_model.md)",
    )
    selection_shapes: int = Field(
        5, ge=1, le=8, description="most shapes in a scene of the selection phase (1: recipe 5's one-object phase, "
        "which traps the model in boxing any shape)",
    )
    dense_weight: float = Field(
        1.0, ge=0.0, description="weight of the image-token supervision (what shape is where; 0 turns it off)"
    )
    attention_weight: float = Field(
        0.5, ge=0.0, description="weight of the grounding attention: from the positions that write a box, "
        "attention_heads attend to that box's shape (0 turns it off)",
    )
    attention_heads: list[tuple[int, int]] = Field(
        [(1, 0), (2, 0)], description="(layer, head) pairs the grounding attention supervises"
    )
    lr_floor: float = Field(0.1, ge=0.0, le=1.0, description="the cosine decay ends at this share of lr, not at 0")
    bucket_batches: int = Field(
        4, gt=0, description="batches drawn at once and sorted by length into batches of like lengths (1: none)"
    )
    threads: int = Field(2, gt=0, description="torch threads while pretraining (the same count gives the same bytes)")
    probe_scenes: int = Field(
        48, gt=0, description="held-out scenes per probe task after the build (docs/base_model.md); tests use few")
    comparison_order: ComparisonOrder = Field(
        ComparisonOrder.AS_ASKED, description="how worked comparisons and chains order the two boxes: as-asked "
        "(recipe 7) or canonical (build 9: the answer follows the sign alone; docs/base_model.md)")


class TinyModelSpec(Section):
    """Shape and pretraining of the offline tiny model built when `model.path` is null."""

    seed: int = Field(0, description="initialisation seed; the same seed gives the same bytes")
    hidden_size: int = Field(128, gt=0, description="text and vision width (multiple of 32: vLLM CPU head size)")
    num_layers: int = Field(4, gt=0, description="text decoder layers")
    vision_depth: int = Field(2, gt=0, description="vision tower blocks")
    vocab_size: int = Field(1024, ge=512, description="BPE vocabulary before special tokens")
    tie_embeddings: bool = Field(
        False, description="the LM head shares the input embeddings, as Qwen2.5-VL-3B's does (the sync, save and "
        "vLLM paths then carry one tensor for both; docs/models.md)")
    pretrain: TinyPretrainSpec = TinyPretrainSpec()

    @classmethod
    def plumbing(cls, seed: int = 0, tie_embeddings: bool = False) -> TinyModelSpec:
        """The small random model for tests of the machinery (`grit-ray model tiny --random`)."""
        return cls(seed=seed, hidden_size=64, num_layers=2, tie_embeddings=tie_embeddings,
                   pretrain=TinyPretrainSpec(steps=0))


class ModelConfig(Section):
    """The policy model and its image processing, shared by rollout workers and learners."""

    path: str | None = Field(
        None, description="HF directory or hub id of the policy; null builds the tiny offline model"
    )
    family: ModelFamily = Field(
        ModelFamily.QWEN2_5_VL, description="the model family's adapter (grit_ray/models): image tokens, tiling, box "
        "frame and prompt limit; with path null, which tiny model is built"
    )
    tiny: TinyModelSpec = TinyModelSpec()
    dtype: DType = Field(
        DType.BFLOAT16, description="weights and compute dtype on GPU (float16 is refused); CPU always runs float32"
    )
    device: Device = Field(Device.AUTO, description="auto picks cuda when torch sees a GPU")
    min_pixels: int = Field(3136, gt=0, description="Qwen2.5-VL: image processor lower bound (pixels)")
    max_pixels: int = Field(256 * 28 * 28, gt=0, description="Qwen2.5-VL: image processor upper bound (pixels)")
    max_tiles: int | None = Field(
        None, ge=1, description="InternVL3: tiles per image at most (a thumbnail is added when there are several; "
        "GRIT: 2); null keeps the checkpoint processor's setting"
    )
    trust_remote_code: bool = Field(
        False, description="allow model code from the checkpoint (not needed: both families load with transformers' "
        "own classes)"
    )

    @model_validator(mode="after")
    def _image_limits_consistent(self) -> ModelConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) exceeds max_pixels ({self.max_pixels})")
        if self.max_tiles is not None and self.family is not ModelFamily.INTERNVL3:
            raise ValueError(f"max_tiles: {self.family.value} does not tile images (its limits are min_pixels and "
                             "max_pixels)")
        return self


class BadRowPolicy(str, enum.Enum):
    STRICT = "strict"  # stop at the first bad row with file:line and reason
    SKIP = "skip"  # go on; count and report every skipped row at the end


class DataFormat(str, enum.Enum):
    AUTO = "auto"
    JSONL = "jsonl"
    PARQUET = "parquet"


class DataSource(Section):
    """One data file (JSON Lines or Parquet) in the GRIT row schema."""

    path: str = Field(description="the file")
    images: str | None = Field(None, description="folder that relative image names resolve against (default: the file's folder, then its images/)")
    format: DataFormat = Field(DataFormat.AUTO, description="auto reads the suffix (.jsonl, .parquet)")


class SynthSpec(Section):
    """Synthetic grounded data generated into the run directory (see `grit-ray data synth`)."""

    n: int = Field(64, gt=0, description="rows")
    seed: int = Field(0, description="the same seed gives the same rows and image bytes")
    counting_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of TallyQA-style counting rows")
    min_size: int = Field(140, ge=32, description="smallest image side (pixels)")
    max_size: int = Field(168, ge=32, description="largest image side (pixels)")
    side_multiple: int = Field(
        28, ge=1, description="image sides are multiples of this (28: Qwen's processor keeps the size unchanged)"
    )
    object_scale: float = Field(0.22, gt=0.0, le=0.5, description="object side / the image's shorter side")
    max_count: int = Field(9, ge=1, le=12, description="largest answer of a counting row (0..max_count)")
    lit_backdrop: bool = Field(True, description="backdrop shaded by position (a cue to where things are)")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> SynthSpec:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) exceeds max_size ({self.max_size})")
        if -(-self.min_size // self.side_multiple) * self.side_multiple > self.max_size:
            raise ValueError(f"no multiple of side_multiple ({self.side_multiple}) between min_size "
                             f"({self.min_size}) and max_size ({self.max_size})")
        return self


class DataConfig(Section):
    """Training and evaluation data, and what to do with bad rows."""

    root: str | None = Field(
        None, description="folder that relative train/eval paths and image folders resolve against (GRIT's layout: "
        "the GRIT_data/ that `grit-ray data fetch grit` writes); null: the working directory")
    train: list[DataSource] = Field(default_factory=list, description="training files, read in order (e.g. VSR + TallyQA)")
    eval: list[DataSource] = Field(default_factory=list, description="held-out files for evaluation")
    synthetic: SynthSpec | None = Field(None, description="generate synthetic training rows (added after `train`)")
    synthetic_eval: SynthSpec | None = Field(None, description="generate synthetic evaluation rows")
    bad_rows: BadRowPolicy = Field(
        BadRowPolicy.STRICT, description="strict: stop at the first bad row (file:line: reason); skip: report all at the end"
    )
    counting_datasets: list[str] = Field(
        default_factory=lambda: ["tallyqa"], description="datasets whose answers are counts (target-count reward)"
    )
    box_tolerance_px: float = Field(1.0, ge=0.0, description="how far a box may stick out of the image")
    check_images: bool = Field(True, description="open every image while validating")
    shuffle: bool = Field(True, description="shuffle training rows each epoch")
    shuffle_buffer: int = Field(
        4096, gt=0, description="rows held for shuffling (memory stays bounded whatever the dataset size)"
    )
    seed: int = Field(0, description="shuffle seed")

    def located(self, source: DataSource) -> DataSource:
        """``source`` with its relative path and image folder under ``root``."""
        if self.root is None:
            return source
        root = Path(self.root).expanduser()

        def under(p: str | None) -> str | None:
            return p if p is None or Path(p).is_absolute() else str(root / p)

        return source.model_copy(update={"path": under(source.path), "images": under(source.images)})

    @model_validator(mode="after")
    def _has_training_data(self) -> DataConfig:
        if not self.train and self.synthetic is None:
            raise ValueError("give data.train sources or data.synthetic")
        return self


class SuiteMetric(str, enum.Enum):
    ACC = "acc"  # the judge's mean raw score x 100
    GIOU = "giou"  # the union-box IoU with the ground truth (docs/rewards.md)


class BenchmarkSpec(Section):
    """One benchmark of an evaluation suite: a file of GRIT rows and its image folder."""

    name: str = Field(description="its column in the table (VSR, TallyQA, ...)")
    file: str = Field(description="the rows, relative to the suite's root")
    images: str = Field(description="the image folder, relative to the suite's root")
    metrics: list[SuiteMetric] = Field(description="what its column reports")
    judged: bool = Field(True, description="false: no judge is asked (OVDEval: grounding is the answer, and GRIT's "
                         "judge reward for its rows is 0); the rule judge's free check stands in")
    published: dict[str, dict[SuiteMetric, float]] = Field(
        default_factory=dict, description="the paper's figures per model family (Table 1's GRIT rows)")


class SuiteSpec(Section):
    """An evaluation suite (``grit-ray eval --suite``): benchmarks under one data root."""

    name: str
    root: str = Field("GRIT_data", description="where the benchmarks' files and folders are")
    benchmarks: list[BenchmarkSpec] = Field(min_length=1)


def load_suite(name_or_path: str) -> SuiteSpec:
    """A packaged suite by name (``grit``: the paper's Table 1) or a YAML file of the same shape."""
    packaged = Path(__file__).parent / "configs" / "suites" / f"{name_or_path}.yaml"
    path = packaged if packaged.is_file() else Path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in packaged.parent.glob("*.yaml"))
        raise ConfigError([f"--suite {name_or_path}: neither a packaged suite ({', '.join(known)}) nor a YAML file"])
    try:
        return SuiteSpec.model_validate(read_yaml(path))
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e), source=str(path)) from None


class PromptTemplate(str, enum.Enum):
    GRIT = "grit"
    DIRECT = "direct"
    COT = "cot"
    BOXES_FIRST = "boxes-first"  # the tiny base model's own cue for a grounded chain (docs/base_model.md)


class PromptConfig(Section):
    """How a question becomes a prompt."""

    template: PromptTemplate = Field(
        PromptTemplate.GRIT, description="grit: the published suffix; direct / cot: the paper's baselines; boxes-first: the tiny base "
        "model's own cue for boxes, then 'So: <answer>'"
    )
    max_prompt_tokens: int | None = Field(
        None, gt=0, description="prompt tokens with the image's; null: the family's GRIT limit (750 for Qwen2.5-VL, "
        "1500 for InternVL3)"
    )


class RolloutBackend(str, enum.Enum):
    VLLM = "vllm"
    HF = "hf"


class EngineProcess(str, enum.Enum):
    # the engine core runs in the rollout actor's process: weights load straight into its model runner
    IN_ACTOR = "in-actor"
    # vLLM's multiprocessing engine core (and, with tensor parallelism, one worker process per rank):
    # weights reach every worker through the project's worker extension, buckets in shared memory
    # (CPU) or as CUDA IPC handles, called by name with collective_rpc (docs/rollout.md)
    SEPARATE = "separate"


class EngineSleep(str, enum.Enum):
    """What a rollout engine frees while the learners train (docs/cluster.md, "Colocation")."""

    AUTO = "auto"  # colocated CUDA runs: discard-weights (offload-weights with a frozen vision tower); else off
    OFF = "off"  # the engine keeps its memory for the whole run
    OFFLOAD_WEIGHTS = "offload-weights"  # vLLM sleep level 1: KV cache freed, weights parked in host memory
    DISCARD_WEIGHTS = "discard-weights"  # vLLM sleep level 2: both freed; the step's sync refills every weight

    @property
    def vllm_level(self) -> int:
        return {EngineSleep.OFFLOAD_WEIGHTS: 1, EngineSleep.DISCARD_WEIGHTS: 2}.get(self, 0)


class RolloutConfig(Section):
    """Generation of completion groups by the rollout workers."""

    backend: RolloutBackend = Field(RolloutBackend.VLLM, description="vllm, or hf (transformers generate)")
    num_workers: int = Field(1, gt=0, description="rollout actors; prompts are load-balanced across them")
    temperature: float = Field(0.9, ge=0.0, description="sampling temperature (GRIT: 0.9)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling; 1.0 disables it")
    top_k: int = Field(-1, description="-1 disables top-k")
    max_new_tokens: int = Field(1000, gt=0, description="completion length cap (GRIT: 1000)")
    stop: list[str] = Field(default_factory=lambda: ["</answer>"], description="stop strings (kept in the output)")
    max_model_len: int = Field(4096, gt=0, description="prompt + completion tokens per sequence")
    enforce_eager: bool = Field(False, description="skip CUDA-graph/compile capture; true on CPU")
    gpu_memory_utilization: float = Field(0.6, gt=0.0, le=1.0, description="vLLM's share of GPU memory")
    cpu_kv_cache_gib: int = Field(1, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU builds")
    engine_process: EngineProcess = Field(
        EngineProcess.IN_ACTOR, description="in-actor: vLLM's engine core inside the rollout actor; separate: vLLM's "
        "multiprocessing engine (needed for tensor_parallel_size > 1), weights loaded by the worker extension")
    tensor_parallel_size: int = Field(1, gt=0, description="vLLM tensor-parallel ranks per engine (separate engine "
                                      "process only)")
    sleep: EngineSleep = Field(
        EngineSleep.AUTO, description="what each engine frees while the learners train, woken for the sync and "
        "generation: off, offload-weights (vLLM sleep level 1), discard-weights (level 2; the sync resends every "
        "weight); auto: discard-weights on colocated CUDA runs (offload-weights with a frozen vision tower), "
        "else off. vLLM frees memory on CUDA only; on CPU the engine pauses and resumes (docs/cluster.md)")
    seed: int = Field(0, description="engine sampling seed")
    hf_batch_size: int = Field(
        32, gt=0, description="hf backend: sequences per generate call (prompts left-padded, each repeated for its "
        "completions); completions stream back as each call finishes"
    )

    @field_validator("sleep", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return EngineSleep.OFF if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _engine_process(self) -> RolloutConfig:
        if self.tensor_parallel_size > 1 and self.engine_process is not EngineProcess.SEPARATE:
            raise ValueError(f"tensor_parallel_size {self.tensor_parallel_size} needs engine_process: separate (its ranks "
                             "are worker processes, which only the worker extension reaches)")
        if self.engine_process is EngineProcess.SEPARATE and self.backend is not RolloutBackend.VLLM:
            raise ValueError("engine_process: separate is vLLM's multiprocessing engine; the hf backend runs in the actor")
        return self


class JudgeKind(str, enum.Enum):
    RULE = "rule"
    OPENAI = "openai"  # any OpenAI-compatible endpoint (api.openai.com, vLLM, ...)
    AZURE_OPENAI = "azure-openai"  # an Azure OpenAI deployment, as GRIT's own scripts call GPT-4o

    @property
    def is_llm(self) -> bool:
        return self is not JudgeKind.RULE


class RuleMatch(str, enum.Enum):
    """How the rule judge compares an answer with its reference (docs/rewards.md)."""

    EXACT = "exact"  # the normalised answer equals the reference
    # a number or yes/no reference: the answer's first word equals it (as an LLM judge reads
    # "3, no green square" as 3); other references: exact
    LEADING = "leading"


class JudgeFailurePolicy(str, enum.Enum):
    RETRY_LATER = "retry_later"
    RULE_FALLBACK = "rule_fallback"
    DROP_GROUP = "drop_group"


class JudgeConfig(Section):
    """The answer-accuracy judge."""

    kind: JudgeKind = Field(
        JudgeKind.RULE, description="rule: normalised match (rule_match); openai: an LLM judge at an OpenAI-compatible "
        "endpoint; azure-openai: an Azure OpenAI deployment (azure_endpoint, azure_deployment, api_version)")
    rule_match: RuleMatch = Field(
        RuleMatch.EXACT, description="the rule judge (and the rule fallback): exact (the normalised answer equals the "
        "reference) or leading (for a number or yes/no reference, the answer's first word equals it)"
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; null = api.openai.com")
    model: str = Field("gpt-4o", description="judge model name at the endpoint (Azure: the deployment's model, "
                       "for the report)")
    azure_endpoint: str | None = Field(None, description="Azure OpenAI: the resource's endpoint, "
                                       "https://<resource>.openai.azure.com (GRIT's api_base)")
    azure_deployment: str | None = Field(None, description="Azure OpenAI: the deployment name (GRIT's deployment_name)")
    api_version: str | None = Field(None, description="Azure OpenAI: the REST API version, e.g. 2024-10-21")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="name of the environment variable holding the key (never the key)"
    )
    timeout_s: float = Field(30.0, gt=0, description="per-call timeout")
    max_reply_tokens: int | None = Field(
        None, gt=0, description="cap on the judge's reply (max_tokens); null: the endpoint's default (the published "
        "parsing reads the score after the reply's last 'score', so a cap can cut it off)")
    max_retries: int = Field(3, ge=0, description="retries with exponential backoff and jitter")
    concurrency: int = Field(32, gt=0, description="judge calls in flight at once")
    requests_per_minute: int | None = Field(None, gt=0, description="rate limit; null: none")
    tokens_per_minute: int | None = Field(None, gt=0, description="rate limit; null: none")
    send_image: bool = Field(False, description="give the image to a multimodal judge")
    cache_entries: int = Field(
        100_000, gt=0, description="judge results kept per reward actor (least recently used evicted first)"
    )
    on_failure: JudgeFailurePolicy = Field(
        JudgeFailurePolicy.RETRY_LATER, description="what a judge failure does to its sample (never a silent 0)"
    )
    usd_per_million_input_tokens: float | None = Field(
        None, ge=0.0, description="the judge's price, for the judge report's cost estimate; null: no estimate")
    usd_per_million_output_tokens: float | None = Field(
        None, ge=0.0, description="the judge's price per million reply tokens; null: no estimate")

    @model_validator(mode="after")
    def _azure_settings(self) -> JudgeConfig:
        azure = {"azure_endpoint": self.azure_endpoint, "azure_deployment": self.azure_deployment,
                 "api_version": self.api_version}
        if self.kind is JudgeKind.AZURE_OPENAI:
            missing = [k for k, v in azure.items() if not v]
            if missing:
                raise ValueError(f"kind azure-openai needs {', '.join(missing)} (GRIT's api_base, deployment_name, "
                                 f"api_version)")
            if self.base_url is not None:
                raise ValueError("base_url is for kind openai; an Azure deployment is named by azure_endpoint")
        elif any(azure.values()):
            raise ValueError(f"{', '.join(k for k, v in azure.items() if v)} set but kind is {self.kind.value}: "
                             f"set kind: azure-openai")
        return self


class RewardPreset(str, enum.Enum):
    GRIT_CODE = "grit-code"
    GRIT_PAPER = "grit-paper"


class CoordFrame(str, enum.Enum):
    ORIGINAL = "original"
    QWEN_RESIZED = "qwen-resized"
    NORM1000 = "norm1000"


class RewardConfig(Section):
    """Reward components, their weights, the judge, and the reward actors."""

    preset: RewardPreset = Field(
        RewardPreset.GRIT_CODE, description="grit-code: the released code exactly; grit-paper: the paper's equations"
    )
    weights: dict[str, float] = Field(default_factory=dict, description="per-component weight overrides")
    extra_components: list[str] = Field(
        default_factory=list, description="custom components as 'package.module:function'"
    )
    judge: JudgeConfig = JudgeConfig()
    coord_frame: CoordFrame | None = Field(
        None, description="frame of the model's boxes, mapped to original pixels for GIoU; null: the family's "
        "(qwen-resized for Qwen2.5-VL, norm1000 for InternVL3)"
    )
    num_actors: int = Field(1, gt=0, description="reward actors in the pool")
    actor_class: str | None = Field(None, description="import path of a custom reward actor class")


class LossAggregation(str, enum.Enum):
    SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"  # released GRIT code
    TOKEN_MEAN = "token-mean"  # peers' default: mean over all tokens of the global batch


class AlgorithmConfig(Section):
    """GRPO-GR: groups, advantages, KL and the policy loss."""

    prompts_per_step: int = Field(32, gt=0, description="prompts per optimizer step")
    group_size: int = Field(4, ge=2, description="completions per prompt (G)")
    kl_beta: float = Field(0.01, ge=0.0, description="k3 KL weight; 0 disables the reference model")
    adv_eps: float = Field(1e-4, gt=0.0, description="advantage = (r - mean) / (std + eps)")
    adv_std_normalize: bool = Field(True, description="false drops the std (Dr. GRPO)")
    clip_eps_low: float = Field(0.2, ge=0.0, description="ratio clip below 1 (no-op for one on-policy update)")
    clip_eps_high: float = Field(0.2, ge=0.0, description="ratio clip above 1")
    loss_agg: LossAggregation = Field(
        LossAggregation.SEQ_MEAN_TOKEN_MEAN, description="seq-mean-token-mean (released GRIT) or token-mean"
    )
    is_correction: bool = Field(False, description="truncated importance sampling with rollout log-probs")
    is_cap: float = Field(3.0, gt=0.0, description="importance weight cap")
    drop_zero_signal_groups: bool = Field(False, description="drop groups whose rewards are all equal")
    refill_zero_signal_groups: bool = Field(
        False, description="dynamic sampling (DAPO): draw more prompts until prompts_per_step groups carry signal"
    )
    max_prompts_per_step: int | None = Field(
        None, gt=0, description="bound on prompts drawn in one step with refill; null: 4 x prompts_per_step"
    )
    kl_ratio_correction: bool = Field(
        False, description="multiply the k3 term by the ratio (unbiased reverse-KL gradient, TRL's default); GRIT: off"
    )
    scale_logits_by_temperature: bool = Field(
        True, description="learner log-probs at rollout.temperature (TRL, verl, OpenRLHF); false: raw logits"
    )
    max_staleness: int = Field(
        0, ge=0, le=1,
        description="0: synchronous steps (exact on-policy); 1: one-step-off: step k+1 is generated and scored "
                    "while the learners update on step k, its loss takes the ratio against the engine's "
                    "log-probs, clipped and truncated at is_cap (docs/training.md)",
    )

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.group_size

    @property
    def prompt_draw_limit(self) -> int:
        """Prompts one step may draw: prompts_per_step, or more with refill."""
        if not self.refill_zero_signal_groups:
            return self.prompts_per_step
        return self.max_prompts_per_step or 4 * self.prompts_per_step

    @model_validator(mode="after")
    def _staleness(self) -> AlgorithmConfig:
        if self.max_staleness and self.is_correction:
            raise ValueError("is_correction: with max_staleness=1 the ratio is already taken against the rollout "
                             "engine's log-probs (and truncated at is_cap); turn is_correction off")
        return self

    @model_validator(mode="after")
    def _refill_bound(self) -> AlgorithmConfig:
        if self.max_prompts_per_step is not None and self.max_prompts_per_step < self.prompts_per_step:
            raise ValueError(f"max_prompts_per_step ({self.max_prompts_per_step}) is below prompts_per_step "
                             f"({self.prompts_per_step})")
        return self


class ZeroStage(int, enum.Enum):
    ZERO2 = 2
    ZERO3 = 3


class CommBackend(str, enum.Enum):
    AUTO = "auto"  # nccl on CUDA, gloo on CPU
    GLOO = "gloo"
    NCCL = "nccl"


class LearnerConfig(Section):
    """DeepSpeed learner actors and the optimizer."""

    num_actors: int = Field(1, gt=0, description="data-parallel learner actors")
    zero_stage: ZeroStage = Field(ZeroStage.ZERO2, description="DeepSpeed ZeRO stage, 2 or 3")
    comm_backend: CommBackend = Field(CommBackend.AUTO, description="auto: nccl on CUDA, gloo on CPU")
    micro_batch_size: int = Field(1, gt=0, description="completions per forward/backward per actor")
    max_tokens_per_micro_batch: int | None = Field(
        None, gt=0, description="cut micro-batches by computed tokens (rows x (longest prompt + longest completion)) "
        "instead of micro_batch_size rows: completions sorted by length, balanced over ranks (docs/learner.md); "
        "null: micro_batch_size rows",
    )
    lr: float = Field(2e-6, gt=0.0, description="AdamW learning rate (GRIT: 2e-6)")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="decay after warm-up")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0.0, description="gradient-norm clip")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    adam_eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    freeze_vision_tower: bool = Field(False, description="train the language model only (GRIT trains all)")
    cpu_shm_allreduce: bool = Field(
        False, description="CPU only: DeepSpeed's shared-memory allreduce kernel (26-42 s JIT compile); false: gloo"
    )
    offload_states: bool | None = Field(
        None, description="between updates, learner ranks that share a GPU with an engine move their fp32 master "
        "weights, Adam moments, gradients and the ZeRO-2 reference model to host memory (DeepSpeed offload_states) "
        "and empty the CUDA cache; reloaded at the next update. null: on for colocated CUDA runs whose engines sleep"
    )


class SyncTransport(str, enum.Enum):
    BROADCAST = "broadcast"  # torch.distributed group of learner rank 0 + rollout workers
    OBJECT_STORE = "object_store"  # Ray object store
    # learner rank 0 and the engines on one host (colocated): buckets shared in place, CUDA IPC
    # handles on a GPU, /dev/shm files on CPU (docs/rollout.md)
    IPC = "ipc"


class WeightSyncConfig(Section):
    """How updated weights reach the rollout workers after every step."""

    transport: SyncTransport = Field(
        SyncTransport.BROADCAST, description="broadcast: collective over gloo/nccl; object_store: Ray objects; ipc: "
        "learner rank 0 and the engines on one host share buckets in place (CUDA IPC handles, /dev/shm files)"
    )
    bucket_mb: float = Field(512, gt=0, description="bucket size (MiB) for gathered parameters")
    timeout_s: float = Field(600.0, gt=0, description="a sync-group member that does not answer in time fails the sync")


class ResourcesConfig(Section):
    """Where actors run."""

    ray_address: str | None = Field(None, description="null starts a local Ray; 'auto' joins a running cluster")
    gpus_per_rollout_worker: float = Field(0.0, ge=0.0, description="GPUs per rollout actor")
    gpus_per_learner: float = Field(0.0, ge=0.0, description="GPUs per learner actor")
    cpus_per_actor: float = Field(0.25, gt=0.0, description="CPUs reserved per actor (fractions allowed)")
    threads_per_actor: int | None = Field(
        None, gt=0,
        description="torch/OpenMP/vLLM threads per actor; null: cpus_per_actor rounded down, at least 1",
    )
    colocate: bool = Field(False, description="rollout workers share GPUs with learners")
    cluster_gpus: int | None = Field(
        None, gt=0, description="GPUs of the cluster the config is written for: `grit-ray plan` places the actors "
        "on them (docs/cluster.md); null: not checked")
    gpu_memory_gib: float | None = Field(
        None, gt=0, description="memory of each of those GPUs (GiB): the memory planner checks every GPU's load "
        "against it (docs/cluster.md); null: not checked")
    refuse_over_plan: bool = Field(
        True, description="a CUDA run whose memory plan does not fit (resources.cluster_gpus, gpu_memory_gib; "
        "`grit-ray plan`) stops before any actor starts; false: it prints the problems and starts (the plan is "
        "an estimate)")
    learner_resources: dict[str, float] = Field(
        default_factory=dict, description="Ray custom resources per learner: pins learners to nodes started with them"
    )
    rollout_resources: dict[str, float] = Field(
        default_factory=dict, description="Ray custom resources per rollout worker (e.g. {inference_node: 1})"
    )
    reward_resources: dict[str, float] = Field(default_factory=dict, description="Ray custom resources per reward actor")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement-group strategy"
    )

    @property
    def share_threads(self) -> int:
        """Threads the CPU share ``cpus_per_actor`` holds: rounded down, at least 1."""
        return max(1, int(self.cpus_per_actor))

    @property
    def actor_threads(self) -> int:
        """Compute threads each actor runs, so actors sharing a host do not oversubscribe its cores."""
        return self.threads_per_actor or self.share_threads


class FaultToleranceConfig(Section):
    """What a run survives (docs/cluster.md, "Failure model")."""

    actor_restarts: int = Field(
        3, ge=0, description="restarts allowed per rollout worker and per reward actor (Ray restarts them)"
    )
    learner_rebuilds: int = Field(
        2, ge=0, description="times the learners may be rebuilt from the last checkpoint after a death or hang"
    )
    restart_timeout_s: float = Field(300.0, gt=0, description="how long a restarting actor may take to answer again")
    learner_step_timeout_s: float = Field(
        1800.0, gt=0, description="a learner step (or save) that does not finish in time is handled as a death"
    )


class LoggingConfig(Section):
    """Run directory and progress output."""

    run_dir: str = Field("runs/{name}", description="where outputs go; {name} is run.name")
    progress: bool = Field(True, description="live progress line on the driver")
    tensorboard: bool = Field(True, description="write TensorBoard events")
    wandb_project: str | None = Field(None, description="log to Weights & Biases when installed")


class CheckpointConfig(Section):
    """Checkpoints for resume."""

    every_n_steps: int = Field(50, gt=0, description="checkpoint interval")
    keep_last: int = Field(2, gt=0, description="checkpoints kept on disk")
    save_final: bool = Field(True, description="save the final HF-format model")


class EvalConfig(Section):
    """Evaluation on held-out rows during training."""

    every_n_steps: int | None = Field(None, gt=0, description="null: no evaluation during training")
    max_rows: int | None = Field(None, gt=0, description="cap on evaluated rows; null: all")


class RunConfig(Section):
    """Name, seed and length of the run."""

    name: str = Field("grit", pattern=r"^[A-Za-z0-9._-]+$", description="run name (letters, digits, . _ -)")
    seed: int = Field(0, description="global seed")
    steps: int = Field(200, gt=0, description="optimizer steps (GRIT: 200)")


@dataclass(frozen=True)
class ColocationPlan:
    """How engines and learners that share GPUs hand memory to each other every step, resolved from
    ``rollout.sleep``, ``learner.offload_states`` and the placement (docs/cluster.md, "Colocation")."""

    sleep: EngineSleep  # resolved, never AUTO
    offload_ranks: tuple[int, ...]  # learner ranks that move their states to host memory between updates
    on_cuda: bool  # only there do vLLM's sleep mode and the offload free device memory

    @property
    def engines_first(self) -> bool:
        """Sleeping engines start, measure their memory and go to sleep before any learner loads:
        vLLM sizes its KV cache from the device's free memory while it profiles."""
        return self.sleep is not EngineSleep.OFF

    def lines(self) -> list[str]:
        """What applies, and on which device, as ``grit-ray plan`` and the run's start print it."""
        out = []
        if self.sleep is EngineSleep.OFF:
            out.append("rollout.sleep: off: the engines keep their memory for the whole run")
        else:
            what = ("KV cache freed, weights parked in host memory" if self.sleep is EngineSleep.OFFLOAD_WEIGHTS
                    else "KV cache and weights freed; the sync refills the weights")
            out.append(f"rollout.sleep: {self.sleep.value}: each engine sleeps while the learners train ({what}), "
                       "wakes its weights for the sync and its KV cache for generation; the engines start and "
                       "sleep before the learners load")
        if self.offload_ranks:
            out.append(f"learner.offload_states: learner rank(s) {', '.join(map(str, self.offload_ranks))} move "
                       "fp32 master weights, Adam moments, gradients and the reference model to host memory "
                       "before each sync and reload them at the next update")
        else:
            out.append("learner.offload_states: off: the learners keep their states on the device")
        if not self.on_cuda and (self.sleep is not EngineSleep.OFF or self.offload_ranks):
            out.append("on CPU this frees no device memory (vLLM's sleep mode is CUDA only): the engines pause "
                       "and resume and the learners move their states, the same calls in the same order as on "
                       "a GPU")
        return out


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
    fault_tolerance: FaultToleranceConfig = FaultToleranceConfig()

    @model_validator(mode="after")
    def _batch_divides(self) -> GritConfig:
        per_update = self.algorithm.completions_per_step
        per_pass = self.learner.num_actors * self.learner.micro_batch_size
        if self.learner.max_tokens_per_micro_batch is None and per_update % per_pass:
            raise ValueError(
                f"algorithm.prompts_per_step x algorithm.group_size = {per_update} completions is not divisible "
                f"by learner.num_actors x learner.micro_batch_size = {per_pass}"
            )
        if self.model.family is ModelFamily.INTERNVL3 and self.reward.coord_frame is CoordFrame.QWEN_RESIZED:
            raise ValueError("reward.coord_frame: InternVL3 writes norm1000 boxes, not qwen-resized pixels (null picks "
                             "the family's frame)")
        if self.model.dtype is DType.FLOAT16:
            raise ValueError("model.dtype: float16 is not supported: the learner has no loss scaling and no fp32 "
                             "master weights, so float16 updates underflow; use bfloat16 (A100, H100 and newer) "
                             "or float32")
        res = self.resources
        if self.algorithm.max_staleness and res.actor_threads > res.share_threads:
            raise ValueError(f"resources.threads_per_actor: {res.threads_per_actor} threads per actor with "
                             f"algorithm.max_staleness: 1 oversubscribes the cores: generation runs beside the update, "
                             f"and each actor's CPU share is {res.cpus_per_actor} (measured 3-5x slower steps); set "
                             "resources.threads_per_actor: null (threads from the CPU share) or raise "
                             "resources.cpus_per_actor")
        if self.model.device is Device.CUDA:
            # Ray hides every GPU from an actor that reserved none (CUDA_VISIBLE_DEVICES empty): it
            # would fail at its first CUDA call, minutes into the start-up
            none = [f"resources.{k}" for k in ("gpus_per_learner", "gpus_per_rollout_worker") if not getattr(res, k)]
            if none:
                raise ValueError(f"model.device: cuda, but {' and '.join(none)} is 0: Ray shows those actors no GPU; "
                                 "reserve a share (e.g. 1, or 0.5 each with resources.colocate: true) or set "
                                 "model.device: cpu")
        if self.algorithm.max_staleness and self.rollout.sleep not in (EngineSleep.AUTO, EngineSleep.OFF):
            raise ValueError(f"rollout.sleep: {self.rollout.sleep.value} with algorithm.max_staleness: "
                             f"{self.algorithm.max_staleness}: one-step-off generates the next step while the "
                             "learners update, so the engines cannot sleep then; set rollout.sleep: off or "
                             "algorithm.max_staleness: 0")
        if self.rollout.sleep is EngineSleep.DISCARD_WEIGHTS and self.learner.freeze_vision_tower:
            raise ValueError("rollout.sleep: discard-weights with learner.freeze_vision_tower: the sync sends "
                             "trainable weights only, so the frozen vision tower would not come back after the "
                             "engine discards it; use rollout.sleep: offload-weights")
        gpus = self.resources.gpus_per_learner + self.resources.gpus_per_rollout_worker
        if (self.resources.colocate and gpus > 0 and self.weight_sync.transport is SyncTransport.BROADCAST
                and self.learner.comm_backend is not CommBackend.GLOO):
            raise ValueError("resources.colocate: true with weight_sync.transport: broadcast puts learner rank 0 and "
                             "rollout worker 0 on one GPU, which NCCL rejects; set weight_sync.transport: "
                             "object_store (shared memory on the node) or resources.colocate: false")
        return self

    def run_dir(self) -> Path:
        return Path(self.logging.run_dir.format(name=self.run.name))

    def colocation(self) -> ColocationPlan:
        """``rollout.sleep`` and ``learner.offload_states`` resolved: their auto values turn on for
        colocated CUDA runs, and only learner ranks that share a GPU with an engine offload."""
        res = self.resources
        on_cuda = self.model.device is Device.CUDA
        shares_gpus = res.colocate and res.gpus_per_learner + res.gpus_per_rollout_worker > 0
        sleep = self.rollout.sleep
        if sleep is EngineSleep.AUTO:
            # one-step-off generates beside the update: nothing can sleep then
            wanted = on_cuda and shares_gpus and not self.algorithm.max_staleness
            frozen = self.learner.freeze_vision_tower  # the sync would not refill a discarded tower
            sleep = (EngineSleep.OFFLOAD_WEIGHTS if frozen else EngineSleep.DISCARD_WEIGHTS) if wanted else EngineSleep.OFF
        offload = self.learner.offload_states
        if offload is None:
            offload = on_cuda and shares_gpus and sleep is not EngineSleep.OFF
        ranks = min(self.learner.num_actors, self.rollout.num_workers) if shares_gpus else self.learner.num_actors
        return ColocationPlan(sleep, tuple(range(ranks)) if offload else (), on_cuda)


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


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


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
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads '1e-4' as a string; on a command line it means the number
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


# ---------------------------------------------------------------------------------------------
# reference documentation, generated from the models (docs/configuration.md)


def _type_label(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    args = get_args(annotation)
    if type(None) in args and len(args) == 2:  # an optional field: its values, then null
        return _type_label(next(a for a in args if a is not type(None))) + " \\| `null`"
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "").replace("grit_ray.config.", "")
    return f"`{text}`".replace("|", "\\|")


def _default_label(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{json.dumps(value)}`"


def config_reference_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models in `grit_ray/config.py` by `grit-ray config docs`; do not edit by hand.",
        "Every key can be set in a YAML file under its section or on the command line with",
        "`--set section.key=value`. Unknown keys and bad values stop the run before any actor starts,",
        "naming the dotted path of the field.",
        "",
    ]

    def section(model: type[BaseModel], prefix: str) -> None:
        nested = []
        rows = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            args = getattr(ann, "__args__", (ann,))
            sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
            in_list = getattr(ann, "__origin__", None) is list
            if sub is not None and sub not in documented:
                documented.add(sub)
                nested.append((f"{prefix}{name}[]" if in_list else f"{prefix}{name}", sub))
            if sub is not None and not in_list and (
                field.is_required() or isinstance(field.get_default(call_default_factory=True), BaseModel)
            ):
                continue
            desc = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {_type_label(ann)} | {_default_label(field)} | {desc} |")
        if rows:
            doc = (model.__doc__ or "").strip().split("\n")[0]
            lines.extend([f"## `{prefix.rstrip('.') or 'root'}`", "", doc, "", "| key | type | default | meaning |",
                          "|---|---|---|---|", *rows, ""])
        for path, sub in nested:
            section(sub, f"{path}.")

    documented: set[type] = set()
    section(GritConfig, "")
    return "\n".join(lines)
