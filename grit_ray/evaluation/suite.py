"""``grit-ray eval --suite grit``: every benchmark of a suite (GRIT's Table 1) that is present, in one
command, through one rollout pool (``--workers N`` engines) and the reward actors, judge calls
overlapping generation. Rows are written as they are scored, so a run that dies keeps them and
``--resume`` goes on from the next; results are keyed by row and decoded greedily, so they are the
same for any number of workers and any chunk size.

Output: ``OUT/<benchmark>/results.jsonl`` (the ``grit-ray eval`` schema), ``summary.json`` and
``report.html`` per benchmark; ``OUT/table1.md`` (ACC x100 / GIoU per benchmark, the paper's
figures beside), ``OUT/summary.json`` and ``OUT/judge_report.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grit_ray.config import BenchmarkSpec, DataSource, GritConfig, JudgeConfig, JudgeKind, SuiteMetric, SuiteSpec
from grit_ray.data.rows import DataError, Row, RowRules, RowStream
from grit_ray.evaluation.eval import result_row
from grit_ray.evaluation.score import fmt_or_dash, summarise
from grit_ray.judge.usage import write_judge_report
from grit_ray.models import box_frame_spec

RESULTS = "results.jsonl"


class SuiteOutputError(ValueError):
    pass


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower()


def load_done(path: Path) -> dict[str, dict[str, Any]]:
    """The rows a killed run had already scored, by ``where``. A last line cut off mid-write is
    dropped (and cut from the file), so the file stays one whole JSON object per line."""
    if not path.is_file():
        return {}
    done, keep = {}, 0
    with path.open("rb") as f:
        for raw in f:
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                break
            if not raw.endswith(b"\n"):
                break
            done[row["where"]] = row
            keep += len(raw)
    if keep < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(keep)
    return done


def chunks(rows: list[Row], size: int) -> Iterator[list[Row]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


@dataclass
class BenchmarkResult:
    spec: BenchmarkSpec
    n: int
    acc: float | None  # x 100
    giou: float | None
    judge_failures: int
    resumed: int  # rows a previous run had scored
    rows_per_s: float | None  # of the rows this run scored

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "acc": self.acc, "giou": self.giou, "judge_failures": self.judge_failures,
                "resumed": self.resumed, "rows_per_s": self.rows_per_s, "metrics": [m.value for m in self.spec.metrics]}


def cell(spec: BenchmarkSpec, values: dict[SuiteMetric, float | None]) -> str:
    """'72.9 / 0.325', '59.8' or '0.398': the benchmark's metrics, in Table 1's form."""
    parts = [fmt_or_dash(values.get(m), ".1f" if m is SuiteMetric.ACC else ".3f") for m in spec.metrics]
    return " / ".join(parts)


def table1(results: list[BenchmarkResult], family: str, model: str) -> str:
    head = "| | " + " | ".join(r.spec.name for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|",
             f"| {model} | " + " | ".join(cell(r.spec, {SuiteMetric.ACC: r.acc, SuiteMetric.GIOU: r.giou})
                                       for r in results) + " |",
             "| rows | " + " | ".join(str(r.n) for r in results) + " |"]
    if any(r.spec.published.get(family) for r in results):
        lines.append(f"| the paper's GRIT ({family}) | " + " | ".join(
            cell(r.spec, r.spec.published[family]) if r.spec.published.get(family) else "-" for r in results) + " |")
    return "\n".join(lines) + "\n"


def _say(msg: str) -> None:
    print(f"[grit-ray eval] {msg}", flush=True)


def run_suite(cfg: GritConfig, suite: SuiteSpec, root: Path, out: Path, resume: bool = False,
              max_rows: int | None = None, chunk_rows: int = 64, report: bool = True,
              say: Callable[[str], None] = _say) -> list[BenchmarkResult]:
    from grit_ray.trainer.held_out import greedy_scored
    from grit_ray.workers.cluster import ray_session
    from grit_ray.workers.reward import RewardPool
    from grit_ray.workers.rollout import RolloutPool

    root = root.expanduser().resolve()  # rows are keyed by file:line: one spelling of the root, resumed or not
    present = [b for b in suite.benchmarks if (root / b.file).is_file()]
    absent = [b.name for b in suite.benchmarks if b not in present]
    if not present:
        raise DataError(f"{root}: none of the suite {suite.name}'s files is there "
                        f"({', '.join(b.file for b in suite.benchmarks)}); `grit-ray data fetch grit --out {root}`")
    if not resume and any((out / slug(b.name) / RESULTS).is_file() for b in present):
        raise SuiteOutputError(f"{out} holds results of an earlier run: --resume continues it, or choose another --out")
    if absent:
        say(f"not present under {root}, left out: {', '.join(absent)}")
    rules = RowRules.from_config(cfg.data)
    benchmark_rows = {}
    for b in present:
        stream = RowStream([DataSource(path=str(root / b.file), images=str(root / b.images))], rules, cfg.data.bad_rows)
        benchmark_rows[b.name] = [r for _, r in zip(range(max_rows or 10**12), stream)]
        if stream.skipped:
            say(f"{b.name}: {stream.skipped_report()}")
    total = sum(map(len, benchmark_rows.values()))
    frame = box_frame_spec(cfg)
    unjudged = cfg.model_copy(deep=True)  # OVDEval: grounding is the answer; no judge is asked
    unjudged.reward.judge = JudgeConfig(kind=JudgeKind.RULE, rule_match=cfg.reward.judge.rule_match)
    results: list[BenchmarkResult] = []
    started, scored_now = time.perf_counter(), 0
    with ray_session(cfg.resources.ray_address):
        rollout = RolloutPool(cfg, str(cfg.model.path))
        judged = RewardPool(cfg) if any(b.judged for b in present) else None
        free = RewardPool(unjudged) if not all(b.judged for b in present) else None
        generating = time.perf_counter()  # rows/s from here: the engines' start-up is not a row's cost
        for b in present:
            rows = benchmark_rows[b.name]
            bdir = out / slug(b.name)
            bdir.mkdir(parents=True, exist_ok=True)
            done = load_done(bdir / RESULTS)
            resumed = sum(r.where in done for r in rows)
            todo = [r for r in rows if r.where not in done]
            pool = judged if b.judged else free
            assert pool is not None
            t0 = time.perf_counter()
            with (bdir / RESULTS).open("a") as f:
                for chunk in chunks(todo, chunk_rows):
                    samples, scored = greedy_scored(cfg, rollout, pool, chunk)
                    for row, s, sc in zip(chunk, samples, scored):
                        done[row.where] = result_row(row, s.completion.text, sc, frame)
                        f.write(json.dumps(done[row.where]) + "\n")
                    f.flush()
                    os.fsync(f.fileno())  # what is written survives a kill
                    scored_now += len(chunk)
                    rate = scored_now / (time.perf_counter() - generating)
                    left = total - sum(len(benchmark_rows[x.spec.name]) for x in results) - len(done)
                    say(f"{b.name}: {len(done)}/{len(rows)} rows | {rate:.2f} rows/s | suite ETA {left / rate:.0f}s")
            ordered = [done[r.where] for r in rows]
            s = summarise(ordered)["all"] if ordered else {"n": 0, "acc": None, "giou": None, "judge_failures": 0}
            took = time.perf_counter() - t0
            res = BenchmarkResult(b, s["n"], s["acc"] if b.judged and SuiteMetric.ACC in b.metrics else None,
                                  s["giou"] if SuiteMetric.GIOU in b.metrics else None, s["judge_failures"], resumed,
                                  len(todo) / took if todo and took > 0 else None)
            results.append(res)
            (bdir / "summary.json").write_text(json.dumps(res.to_json(), indent=2) + "\n")
            if report and rows:
                from grit_ray.evaluation.report import write_report

                write_report(ordered, rows, frame, bdir / "report.html", title=f"grit-ray eval: {b.name}",
                             summary=summarise(ordered))
            say(f"{b.name}: {cell(b, {SuiteMetric.ACC: res.acc, SuiteMetric.GIOU: res.giou})} on {res.n} rows"
                + (f" ({resumed} from the earlier run)" if resumed else ""))
        judge = (judged or free).judge_report()  # type: ignore[union-attr]  # one of them exists
    family = cfg.model.family.value
    text = table1(results, family, Path(str(cfg.model.path)).name or str(cfg.model.path))
    (out / "table1.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(
        {"suite": suite.name, "root": str(root), "model": str(cfg.model.path), "family": family,
         "absent": absent, "benchmarks": {r.spec.name: r.to_json() for r in results},
         "seconds": time.perf_counter() - started}, indent=2) + "\n")
    say(write_judge_report(judge, out))
    print(text, end="")
    say(f"{total} rows of {len(results)} benchmarks in {time.perf_counter() - started:.0f}s; wrote {out}/table1.md, "
        f"summary.json and one folder per benchmark")
    return results
