"""The linter and the type checker are clean (their settings: pyproject.toml). The type checker
covers the typed core: the config, the method, the data, the RL math and the judges."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TYPED_CORE = ["grit_ray/config.py", "grit_ray/schedules.py", "grit_ray/grit", "grit_ray/data", "grit_ray/algo",
              "grit_ray/judge"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean():
    r = _run("ruff", "check", "grit_ray", "tests", "bench", "scripts")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean_on_the_typed_core():
    r = _run("mypy", *TYPED_CORE)
    assert r.returncode == 0, r.stdout + r.stderr
