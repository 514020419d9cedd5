"""How far two judges agree on the same completions (``grit-ray judge agree A.jsonl B.jsonl``), so a
user can tell when the free rule judge is enough: the share of rows both call right or both call
wrong, Cohen's kappa (agreement beyond what two judges with those rates would reach by chance),
the 2x2 table, and the mean gap between their raw scores. Rows are matched by what was judged
(dataset, question, reference, completion), not by position; rows either judge failed on are left
out and counted."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from grit_ray.judge.protocol import JudgeStatus


class AgreementInputError(ValueError):
    pass


def _judged(path: Path) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    out = {}
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = (str(row["dataset"]), str(row["question"]), str(row["answer"]), str(row["completion"]))
                judge = row["judge"]
                _ = judge["status"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise AgreementInputError(f"{path}:{n}: not a scored row (grit-ray score / eval output): {e!r}") from None
            out[key] = judge
    return out


def cohen_kappa(table: list[list[int]]) -> float | None:
    """Kappa of a 2x2 table [[both wrong, A wrong B right], [A right B wrong, both right]]; None when
    chance agreement is total (both judges gave one verdict to every row)."""
    n = sum(map(sum, table))
    if n == 0:
        return None
    observed = (table[0][0] + table[1][1]) / n
    a_right, b_right = sum(table[1]) / n, (table[0][1] + table[1][1]) / n
    chance = a_right * b_right + (1 - a_right) * (1 - b_right)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def agreement(a_path: Path, b_path: Path) -> dict[str, Any]:
    a, b = _judged(a_path), _judged(b_path)
    common = [k for k in a if k in b]
    if not common:
        raise AgreementInputError(f"{a_path} and {b_path} share no judged row (matched by dataset, question, "
                                  f"answer and completion)")
    ok = JudgeStatus.OK.value
    tables: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0], [0, 0]])
    gaps = []
    failed = 0
    for key in common:
        ja, jb = a[key], b[key]
        if ja["status"] != ok or jb["status"] != ok:
            failed += 1
            continue
        ra, rb = int(ja["score"] > 0), int(jb["score"] > 0)  # right as the training reward reads it
        for name in (key[0], "all"):
            tables[name][ra][rb] += 1
        gaps.append(abs(ja["score"] - jb["score"]))
    per = {}
    for name, t in sorted(tables.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        n = sum(map(sum, t))
        per[name] = {"n": n, "agree": (t[0][0] + t[1][1]) / n, "kappa": cohen_kappa(t),
                     "a_right": sum(t[1]) / n, "b_right": (t[0][1] + t[1][1]) / n,
                     "table": {"both_right": t[1][1], "only_a_right": t[1][0], "only_b_right": t[0][1],
                               "both_wrong": t[0][0]}}
    return {"a": str(a_path), "b": str(b_path), "matched": len(common), "only_in_a": len(a) - len(common),
            "only_in_b": len(b) - len(common), "judge_failed": failed,
            "mean_score_gap": sum(gaps) / len(gaps) if gaps else None, "datasets": per}


def agreement_table(r: dict[str, Any]) -> str:
    lines = [f"A: {r['a']}", f"B: {r['b']}",
             f"{r['matched']} rows in both ({r['only_in_a']} only in A, {r['only_in_b']} only in B), "
             f"{r['judge_failed']} left out where a judge failed",
             "| dataset | n | agree | kappa | A right | B right | only A right | only B right |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in r["datasets"].items():
        kappa = "-" if s["kappa"] is None else f"{s['kappa']:.3f}"
        lines.append(f"| {name} | {s['n']} | {s['agree']:.3f} | {kappa} | {s['a_right']:.3f} | {s['b_right']:.3f} | "
                     f"{s['table']['only_a_right']} | {s['table']['only_b_right']} |")
    if r["mean_score_gap"] is not None:
        lines.append(f"mean |score A - score B|: {r['mean_score_gap']:.3f}")
    return "\n".join(lines)
