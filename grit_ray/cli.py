"""``grit-ray`` command line: data, model, config, score, train and the demo.

Every command fails with a one-line reason (no traceback) on bad input: exit 2 for usage and
configuration errors, 1 for bad data.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grit_ray.config import (
    ComparisonOrder,
    ConfigError,
    DataFormat,
    DataSource,
    JudgeKind,
    ModelFamily,
    PromptTemplate,
    SynthSpec,
    TinyModelSpec,
    config_to_yaml,
    load_config,
)

EXIT_BAD_DATA = 1
EXIT_USAGE = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: configs/tiny-cpu.yaml)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set rollout.temperature=1.0 learner.lr=1e-4 (repeatable)")


def _cmd_data_check(args: argparse.Namespace) -> int:
    from grit_ray.data.rows import RowRules, check_sources

    rules = RowRules(frozenset(d.lower() for d in args.counting_datasets), args.box_tolerance, check_images=True)
    sources = [DataSource(path=f, images=args.images, format=DataFormat(args.format)) for f in args.files]
    good, bad = check_sources(sources, rules)
    for err in bad:
        print(err)
    print(f"{good + len(bad)} rows checked: {good} good, {len(bad)} bad")
    return EXIT_BAD_DATA if bad else 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from grit_ray.data.synth import write_synth

    spec = SynthSpec(n=args.n, seed=args.seed, counting_fraction=args.counting_fraction)
    if args.layout == "grit":
        from grit_ray.data.grit_layout import write_grit_layout

        write_grit_layout(Path(args.out), spec, eval_rows=args.eval_n)
        print(f"GRIT's layout under {args.out}: point data.root at it (configs/grit-*.yaml)")
        return 0
    path = write_synth(args.out, spec, fmt=args.format, split=args.split)
    print(f"wrote {args.n} rows to {path}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from grit_ray.data.grit_layout import GRIT_DATASET_REPO, check_layout, fetch_grit, image_provenance
    from grit_ray.data.rows import RowRules

    out = Path(args.out)
    repo = args.repo or GRIT_DATASET_REPO
    print(f"fetching the dataset {repo}" + (f" at {args.revision}" if args.revision else "") + f" into {out}")
    try:
        snapshot, placed = fetch_grit(out, args.revision, repo)
    except Exception as e:  # the hub's errors (offline and not cached, unknown revision, no access) say what
        print(f"grit-ray data fetch: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(f"{placed} files placed under {out} (from {snapshot})")
    print("where the images come from (the dataset's README):")
    for line in image_provenance(out):
        print(f"  {line}")
    rules = RowRules(frozenset(d.lower() for d in args.counting_datasets), args.box_tolerance, check_images=True)
    checks, absent = check_layout(out, rules)
    for c in checks:
        print(c.line)
        for err in c.bad[:5]:
            print(f"  {err}")
        if len(c.bad) > 5:
            print(f"  ... and {len(c.bad) - 5} more (grit-ray data check {c.path})")
    if absent:
        print(f"not in this revision: {', '.join(f.file for f in absent)}")
    bad = sum(len(c.bad) for c in checks)
    print(f"{sum(c.good for c in checks)} good rows in {len(checks)} files, {bad} bad"
          + ("" if bad else f"; train with: grit-ray train --config configs/grit-qwen2.5vl-3b.yaml "
             f"--set data.root={out}"))
    return EXIT_BAD_DATA if bad else 0


def _cmd_model_tiny(args: argparse.Namespace) -> int:
    import shutil

    from grit_ray.models.tiny import build_tiny_model, cached_tiny_model, directory_digest

    overrides = args.overrides + ([f"model.tiny.seed={args.seed}"] if args.seed is not None else [])
    overrides += [f"model.family={args.family}"] if args.family else []
    cfg = load_config(args.config, overrides)
    family = cfg.model.family
    if args.random:
        out = build_tiny_model(args.out, TinyModelSpec.plumbing(seed=args.seed or 0), family=family)
    else:  # exactly the model a run with this config starts from (model.tiny), via the same cache
        cached = cached_tiny_model(cfg.model.tiny, family=family)
        out = Path(args.out)
        shutil.copytree(cached, out, dirs_exist_ok=True)
    kind = "random" if args.random else "pretrained base"
    print(f"wrote the tiny {kind} {family.value} model to {out} (sha256 {directory_digest(out)[:16]})")
    return 0


def _cmd_model_probe(args: argparse.Namespace) -> int:
    from grit_ray.models.tiny.probe import probe_directory, selection_gate

    order = ComparisonOrder(args.comparison_order) if args.comparison_order else None
    report = probe_directory(args.model, n=args.n, threads=args.threads, comparison_order=order)
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if (gate := selection_gate(report)) is not None:
        print(gate, file=sys.stderr)
        return 1 if args.gate else 0
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from grit_ray.evaluation.sweep import run_sweep

    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ConfigError([f"--seeds {args.seeds!r}: a comma-separated list of integers, e.g. 0,1,2"]) from None
    load_config(args.config, args.overrides)  # a bad config fails here, not in the first run
    train_args = (["--config", str(args.config)] if args.config else []) + [a for o in args.overrides for a in ("--set", o)]
    train_args += ["--steps", str(args.steps)] if args.steps is not None else []
    run_sweep(Path(args.out), seeds, args.vary, train_args)
    print(f"sweep: summary in {Path(args.out) / 'summary.md'}, curves in {Path(args.out) / 'accuracy.png'} and giou.png")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(config_to_yaml(cfg), end="")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from grit_ray.trainer.memory_plan import format_plan, plan_for_config

    cfg = load_config(args.config, args.overrides)
    try:
        plan = plan_for_config(cfg, args.gpu_memory, args.gpus)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    return 1 if plan.problems else 0


def _cmd_config_docs(args: argparse.Namespace) -> int:
    from grit_ray.config import config_reference_markdown

    print(config_reference_markdown())
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from grit_ray.config import CoordFrame, JudgeConfig, RewardPreset
    from grit_ray.evaluation.score import ScoreInputError, ScoreSettings, format_table, run_score, summary_path
    from grit_ray.grit.grounding import FrameSpec
    from grit_ray.judge.secrets import MissingAPIKey

    judge = JudgeConfig(kind=JudgeKind(args.judge), base_url=args.judge_base_url, model=args.judge_model,
                        azure_endpoint=args.azure_endpoint, azure_deployment=args.azure_deployment,
                        api_version=args.api_version, timeout_s=args.judge_timeout, concurrency=args.concurrency,
                        max_retries=args.judge_retries, api_key_env=args.judge_api_key_env, send_image=args.judge_image,
                        max_reply_tokens=args.judge_max_reply_tokens)
    settings = ScoreSettings(
        preset=RewardPreset(args.preset), judge=judge,
        frame=FrameSpec(CoordFrame(args.coord_frame), args.min_pixels, args.max_pixels),
        counting_datasets=frozenset(d.lower() for d in args.counting_datasets),
        images_dir=Path(args.images) if args.images else None,
    )
    try:
        table = run_score(Path(args.input), Path(args.out), settings)
    except (ScoreInputError, MissingAPIKey) as e:
        print(f"grit-ray score: {e}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(format_table(table))
    print(f"wrote {args.out} and {summary_path(Path(args.out))}")
    return 0


def _cmd_judge_agree(args: argparse.Namespace) -> int:
    import json

    from grit_ray.judge.agreement import AgreementInputError, agreement, agreement_table

    try:
        result = agreement(Path(args.a), Path(args.b))
    except (AgreementInputError, OSError) as e:
        print(f"grit-ray judge agree: {e}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(agreement_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from grit_ray.evaluation.demo import run_demo

    cfg = load_config(args.config, args.overrides)
    run_demo(cfg, Path(args.run_dir) if args.run_dir else cfg.run_dir())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from grit_ray.trainer.loop import resolve_run, train

    try:
        cfg, run_dir = resolve_run(args.config, args.overrides, args.steps, args.run_dir, args.resume)
    except FileNotFoundError as e:
        print(f"grit-ray: {e}", file=sys.stderr)
        return EXIT_USAGE
    train(cfg, run_dir, resume=args.resume is not None, stop_after=args.stop_after)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from grit_ray.config import DataSource
    from grit_ray.evaluation.eval import run_eval
    from grit_ray.models import checkpoint_family, checkpoint_problem

    overrides = list(args.overrides)
    # without --config or a model.family override, the checkpoint says which family it is
    named = args.config is not None or any(o.split("=", 1)[0].strip() == "model.family" for o in overrides)
    if not named and (family := checkpoint_family(args.model)) is not None:
        overrides.append(f"model.family={family.value}")
    overrides += [f"model.path={args.model}", f"prompt.template={args.prompt}", f"reward.judge.kind={args.judge}",
                  f"rollout.num_workers={args.workers}"]
    if args.judge_base_url:
        overrides.append(f"reward.judge.base_url={args.judge_base_url}")
    if args.judge_model:
        overrides.append(f"reward.judge.model={args.judge_model}")
    cfg = load_config(args.config, overrides)
    user_threads = any(o.split("=", 1)[0].strip() == "resources.threads_per_actor" for o in overrides)
    cores = os.cpu_count() or 1
    if args.workers > 1 and not cfg.resources.gpus_per_rollout_worker and not user_threads \
            and cfg.resources.actor_threads * args.workers > cores:
        # CPU engines decode at once: the config's threads per actor (2 in the default) on every engine
        # oversubscribes the cores (measured 4x slower with 2 engines on 2 cores; docs/eval.md)
        fair = max(1, cores // args.workers)
        print(f"grit-ray: {args.workers} CPU engines on {cores} cores: {fair} thread(s) each "
              f"(--set resources.threads_per_actor=N to choose)")
        cfg = load_config(args.config, overrides + [f"resources.threads_per_actor={fair}"])
    if (problem := checkpoint_problem(args.model, cfg.model.family)) is not None:
        print(f"grit-ray: --model {args.model}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if (args.suite is None) == (args.data is None):
        print("grit-ray: eval needs --data FILE[,FILE...] or --suite NAME (not both)", file=sys.stderr)
        return EXIT_USAGE
    if args.suite is not None:
        from grit_ray.config import load_suite
        from grit_ray.evaluation.suite import SuiteOutputError, run_suite

        suite = load_suite(args.suite)
        try:
            run_suite(cfg, suite, Path(args.data_root or suite.root), Path(args.out), resume=args.resume,
                      max_rows=args.max_rows, chunk_rows=args.chunk_rows, report=not args.no_report)
        except SuiteOutputError as e:
            print(f"grit-ray: {e}", file=sys.stderr)
            return EXIT_USAGE
        return 0
    data = [DataSource(path=p, images=args.images) for p in args.data.split(",") if p]
    if args.crossmodal and not cfg.reward.judge.kind.is_llm:
        print("grit-ray: --crossmodal needs a multimodal LLM judge (--judge openai)", file=sys.stderr)
        return EXIT_USAGE
    run_eval(cfg, data, Path(args.out), max_rows=args.max_rows, report=not args.no_report,
             crossmodal=args.crossmodal)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from grit_ray.evaluation.plots import plot_run

    try:
        written = plot_run(Path(args.run_dir), Path(args.out) if args.out else None)
    except FileNotFoundError as e:
        print(f"grit-ray: {e}", file=sys.stderr)
        return EXIT_BAD_DATA
    for p in written:
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grit-ray", description="GRIT grounded visual reasoning on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="check or synthesise GRIT data").add_subparsers(dest="data_cmd", required=True)
    check = data.add_parser("check", help="report every bad row as FILE:LINE: reason")
    check.add_argument("files", nargs="+", help="JSON Lines or Parquet files")
    check.add_argument("--images", default=None, help="folder that relative image names resolve against")
    check.add_argument("--format", choices=[f.value for f in DataFormat], default="auto")
    check.add_argument("--counting-datasets", nargs="+", default=["tallyqa"])
    check.add_argument("--box-tolerance", type=float, default=1.0, help="pixels a box may stick out")
    check.set_defaults(func=_cmd_data_check)

    synth = data.add_parser("synth", help="synthetic grounded data in the GRIT schema")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--n", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    synth.add_argument("--split", default="train")
    synth.add_argument("--counting-fraction", type=float, default=0.5)
    synth.add_argument("--layout", choices=["files", "grit"], default="files",
                       help="grit: GRIT's released layout (its 2 training and 8 evaluation files, each beside its "
                       "image folder), --n rows per training file")
    synth.add_argument("--eval-n", type=int, default=None, help="with --layout grit: rows per evaluation file")
    synth.set_defaults(func=_cmd_data_synth)

    fetch = data.add_parser("fetch", help="download a released dataset (grit: yfan1997/GRIT_data) and check it")
    fetch.add_argument("name", choices=["grit"])
    fetch.add_argument("--out", default="GRIT_data", help="where the files go (default: GRIT_data, as GRIT's README)")
    fetch.add_argument("--revision", default=None, help="branch, tag or commit of the dataset repo (default: main)")
    fetch.add_argument("--repo", default=None, help="another dataset repo in the same layout (a mirror or a fork)")
    fetch.add_argument("--counting-datasets", nargs="+", default=["tallyqa"])
    fetch.add_argument("--box-tolerance", type=float, default=1.0, help="pixels a box may stick out")
    fetch.set_defaults(func=_cmd_data_fetch)

    model = sub.add_parser("model", help="model utilities").add_subparsers(dest="model_cmd", required=True)
    tiny = model.add_parser("tiny", help="the tiny offline model (Qwen2.5-VL or InternVL3): the default run's base "
                            "model, or --random")
    _add_config_args(tiny)
    tiny.add_argument("--out", required=True, type=Path)
    tiny.add_argument("--seed", type=int, default=None, help="default: model.tiny.seed of the config (0)")
    tiny.add_argument("--family", choices=[f.value for f in ModelFamily], default=None,
                      help="default: model.family of the config (qwen2.5-vl)")
    tiny.add_argument("--random", action="store_true",
                      help="the small untrained model of the plumbing tests (seconds, not minutes)")
    tiny.set_defaults(func=_cmd_model_tiny)
    probe = model.add_parser("probe", help="what a tiny base model can do on held-out corpus scenes: selection of the "
                             "named shape, its attention, boxes and direct answers (docs/base_model.md)")
    probe.add_argument("model", help="the model directory (grit-ray model tiny --out DIR, or a run's final_model)")
    probe.add_argument("--n", type=int, default=48, help="questions per probe (selection: twice as many)")
    probe.add_argument("--threads", type=int, default=2)
    probe.add_argument("--gate", action="store_true", help="exit 1 when selection is below the gate")
    probe.add_argument("--comparison-order", choices=[o.value for o in ComparisonOrder], default=None,
                       help="how worked comparisons are asked; default: the base model's build (its "
                       "grit_ray_tiny.json), else as-asked")
    probe.set_defaults(func=_cmd_model_probe)

    sweep = sub.add_parser("sweep", help="one config over several seeds: every held-out metric as mean and 95%% "
                           "interval, with curves (docs/results.md)")
    _add_config_args(sweep)
    sweep.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    sweep.add_argument("--vary", default="model.tiny.seed",
                       help="the config key each seed is set to: model.tiny.seed (the base model's build, "
                            "default) or run.seed (the run's sampling)")
    sweep.add_argument("--steps", type=int, default=None)
    sweep.add_argument("--out", required=True, help="directory: one run per seed, summary.md/json, PNGs")
    sweep.set_defaults(func=_cmd_sweep)

    plan = sub.add_parser("plan", help="estimated memory of every GPU the config uses, and whether it fits "
                                       "(exit 1 when it does not; docs/cluster.md)")
    _add_config_args(plan)
    plan.add_argument("--gpu-memory", type=float, default=None, metavar="GIB",
                      help="memory of each GPU (default: resources.gpu_memory_gib)")
    plan.add_argument("--gpus", type=int, default=None, help="GPUs of the cluster (default: resources.cluster_gpus)")
    plan.set_defaults(func=_cmd_plan)

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_cmd", required=True)
    show = config.add_parser("show", help="validate and print the resolved config")
    _add_config_args(show)
    show.set_defaults(func=_cmd_config_show)
    docs = config.add_parser("docs", help="print the configuration reference (docs/configuration.md)")
    docs.set_defaults(func=_cmd_config_docs)

    score = sub.add_parser("score", help="rewards, judge and metrics for a JSONL of completions")
    score.add_argument("input", help="JSONL: GRIT rows plus 'completion'")
    score.add_argument("--out", required=True, help="output JSONL (a .summary.json is written beside it)")
    score.add_argument("--preset", choices=["grit-code", "grit-paper"], default="grit-code")
    score.add_argument("--judge", choices=[k.value for k in JudgeKind], default="rule")
    score.add_argument("--judge-base-url", default=None, help="OpenAI-compatible endpoint (default: OpenAI)")
    score.add_argument("--azure-endpoint", default=None, help="azure-openai: https://<resource>.openai.azure.com")
    score.add_argument("--azure-deployment", default=None, help="azure-openai: the deployment name")
    score.add_argument("--api-version", default=None, help="azure-openai: the REST API version")
    score.add_argument("--judge-model", default="gpt-4o")
    score.add_argument("--judge-timeout", type=float, default=30.0, help="seconds per judge call")
    score.add_argument("--judge-retries", type=int, default=3)
    score.add_argument("--judge-max-reply-tokens", type=int, default=None, help="cap on each judge reply")
    score.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="variable holding the key")
    score.add_argument("--judge-image", action="store_true", help="send the image to a multimodal judge")
    score.add_argument("--concurrency", type=int, default=32, help="judge calls in flight")
    score.add_argument("--coord-frame", choices=["original", "qwen-resized", "norm1000"], default="original")
    score.add_argument("--min-pixels", type=int, default=3136, help="processor limits for qwen-resized")
    score.add_argument("--max-pixels", type=int, default=256 * 28 * 28)
    score.add_argument("--counting-datasets", nargs="+", default=["tallyqa"])
    score.add_argument("--images", default=None, help="image folder (for --judge-image)")
    score.set_defaults(func=_cmd_score)

    judge = sub.add_parser("judge", help="judge utilities").add_subparsers(dest="judge_cmd", required=True)
    agree = judge.add_parser("agree", help="agreement and Cohen's kappa of two judges' scores on the same rows "
                             "(two grit-ray score / eval outputs)")
    agree.add_argument("a", help="scored JSONL (results.jsonl of grit-ray eval, or grit-ray score --out)")
    agree.add_argument("b", help="the same completions scored by another judge")
    agree.add_argument("--json", default=None, help="also write the figures here")
    agree.set_defaults(func=_cmd_judge_agree)

    train = sub.add_parser("train", help="GRIT training: rollout, rewards, DeepSpeed updates, weight sync on Ray")
    _add_config_args(train)
    train.add_argument("--steps", type=int, default=None, help="training steps (overrides run.steps)")
    train.add_argument("--run-dir", default=None, help="default: logging.run_dir of the config")
    train.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR from its latest checkpoint (its saved config is used)")
    train.add_argument("--stop-after", type=int, default=None, metavar="N",
                       help="stop after step N with a checkpoint (split a run into jobs; --resume continues)")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="greedy evaluation: per-dataset ACC/GIoU, results.jsonl, HTML report")
    _add_config_args(ev)
    ev.add_argument("--model", required=True, help="HF model directory (e.g. RUN_DIR/final_model)")
    ev.add_argument("--data", default=None, help="FILE[,FILE...] of GRIT rows (JSONL or Parquet)")
    ev.add_argument("--suite", default=None, help="a benchmark suite instead: grit (the paper's Table 1, in the "
                    "layout `grit-ray data fetch grit` writes) or a suite YAML (docs/eval.md)")
    ev.add_argument("--data-root", default=None, help="with --suite: where its files are (default: the suite's root, "
                    "GRIT_data)")
    ev.add_argument("--resume", action="store_true", help="with --suite: keep the rows OUT already holds, go on")
    ev.add_argument("--chunk-rows", type=int, default=64, help="with --suite: rows generated and written at a time")
    ev.add_argument("--out", required=True, help="output directory")
    ev.add_argument("--images", default=None, help="image folder for rows that name their image")
    ev.add_argument("--judge", choices=[k.value for k in JudgeKind], default="rule",
                    help="azure-openai: its settings with --set reward.judge.azure_endpoint=... (docs/reward_service.md)")
    ev.add_argument("--judge-base-url", default=None)
    ev.add_argument("--judge-model", default=None)
    ev.add_argument("--prompt", choices=[t.value for t in PromptTemplate], default="grit",
                    help="grit (default), direct or cot (the paper's baselines), boxes-first (the tiny base model's cue)")
    ev.add_argument("--workers", type=int, default=1, help="rollout workers (results do not depend on it)")
    ev.add_argument("--max-rows", type=int, default=None)
    ev.add_argument("--no-report", action="store_true", help="skip report.html")
    ev.add_argument("--crossmodal", action="store_true",
                    help="also the cross-modal correlation metric (multimodal judge, 3 seeded repeats)")
    ev.set_defaults(func=_cmd_eval)

    plot = sub.add_parser("plot", help="PNG curves from RUN_DIR/metrics.jsonl")
    plot.add_argument("run_dir")
    plot.add_argument("--out", default=None, help="default: RUN_DIR/plots")
    plot.set_defaults(func=_cmd_plot)

    demo = sub.add_parser("demo", help="end-to-end demo: synthetic data, tiny model, vLLM rollout on Ray")
    _add_config_args(demo)
    demo.add_argument("--run-dir", default=None)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from grit_ray.data.rows import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"grit-ray: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as e:  # argument values checked by the config models (e.g. synth --n 0)
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or e.title  # a check across fields names its model
        print(f"grit-ray: invalid argument: {where}: {first['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except DataError as e:
        print(f"grit-ray: {e}", file=sys.stderr)
        return EXIT_BAD_DATA


if __name__ == "__main__":
    sys.exit(main())
