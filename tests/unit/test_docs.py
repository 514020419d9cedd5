"""The docs speak to users: no planning leftovers ("issue 15", "issues 7-8") in docs/ or the README,
and every judge metric reward_service.md names is one the code logs."""

import re
from pathlib import Path

from grit_ray.judge.protocol import JudgeStatus

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
PLANNING = re.compile(r"\bissues? #?\d+", re.IGNORECASE)


def planning_references(paths: list[Path]) -> list[str]:
    return [f"{p.name}:{n}: {m.group(0)}" for p in paths
            for n, line in enumerate(p.read_text().splitlines(), 1) for m in PLANNING.finditer(line)]


def test_docs_hold_no_issue_numbers():
    assert planning_references(DOCS) == []


def test_the_check_finds_an_issue_number(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("Cluster submission arrives with the driver (issue 7).\nSee Issues 7-8.\nverl #2958 is a peer's.\n")
    assert planning_references([doc]) == ["x.md:1: issue 7", "x.md:2: Issues 7"]


def test_judge_metric_names_in_docs_are_logged():
    logged = (ROOT / "grit_ray" / "workers" / "reward.py").read_text()
    quoted = set(re.findall(r"`judge/([a-z_]+)", (ROOT / "docs" / "reward_service.md").read_text()))
    assert len(quoted) >= 5, quoted
    # the reward pool counts judge_<status> per status and named counters; the step logs them as judge/<name>
    statuses = {s.value for s in JudgeStatus}
    missing = {q for q in quoted if q not in statuses and f'"judge_{q}"' not in logged and f'"{q}"' not in logged}
    assert missing == set()
