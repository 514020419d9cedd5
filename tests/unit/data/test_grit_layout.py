"""GRIT's released layout: `grit-ray data fetch grit` from a hub cache laid out here (offline),
`grit-ray data synth --layout grit`, and the paper configs reading that layout under data.root."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grit_ray.config import SynthSpec, load_config
from grit_ray.data.grit_layout import GRIT_LAYOUT, write_grit_layout
from grit_ray.data.rows import RowRules, check_sources, materialise_sources
from tests.hub_cache import hub_cache_from

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """GRIT_data as the dataset repo holds it: the layout's files, their images and a README."""
    src = tmp_path_factory.mktemp("GRIT_data-src")
    write_grit_layout(src, SynthSpec(n=3, seed=5), eval_rows=2, say=lambda _: None)
    (src / "README.md").write_text("# GRIT data\nVSR images are COCO 2017 images; TallyQA's come from Visual Genome.\n")
    return src


def _fetch(out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grit_ray.cli", "data", "fetch", "grit", "--out", str(out), *extra],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_fetch_lays_out_the_dataset_and_checks_every_file(released, tmp_path):
    env = hub_cache_from(released, tmp_path / "hub", "yfan1997/GRIT_data", repo_type="dataset")
    out = tmp_path / "GRIT_data"
    r = _fetch(out, env)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in GRIT_LAYOUT:
        assert (out / f.file).read_bytes() == (released / f.file).read_bytes()
        assert sorted(p.name for p in (out / f.images).iterdir()) == sorted(p.name for p in (released / f.images).iterdir())
    assert "VSR images are COCO 2017 images" in r.stdout  # where the images come from
    assert "vsr_val.jsonl (images: vsr/): 2 rows, 2 good, 0 bad" in r.stdout
    assert "tallyqa_train_10.jsonl (images: tallyqa/): 3 rows, 3 good, 0 bad" in r.stdout
    assert "22 good rows in 10 files, 0 bad" in r.stdout
    again = _fetch(out, env)  # resumable: what is there already is kept
    assert again.returncode == 0 and "0 files placed" in again.stdout


def test_fetch_reports_bad_rows_by_file_and_line(released, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(released), str(broken)], check=True)
    rows = (broken / "vsr_val.jsonl").read_text().splitlines()
    row = json.loads(rows[1])
    row["image"] = "missing.png"
    (broken / "vsr_val.jsonl").write_text(rows[0] + "\n" + json.dumps(row) + "\n")
    env = hub_cache_from(broken, tmp_path / "hub", "yfan1997/GRIT_data", repo_type="dataset")
    r = _fetch(tmp_path / "out", env)
    assert r.returncode == 1 and "vsr_val.jsonl (images: vsr/): 2 rows, 1 good, 1 bad" in r.stdout
    assert "vsr_val.jsonl:2:" in r.stdout and "missing.png" in r.stdout


def test_fetch_offline_without_the_dataset_says_so(tmp_path):
    r = _fetch(tmp_path / "out", {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and "grit-ray data fetch:" in r.stderr and "offline" in r.stderr.lower()
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("config", ["configs/grit-qwen2.5vl-3b.yaml", "configs/grit-internvl3-2b.yaml"])
def test_the_paper_configs_read_the_layout_under_data_root(released, tmp_path, config):
    cfg = load_config(str(ROOT / config), [f"data.root={released}"])
    train, evals = materialise_sources(cfg.data, tmp_path)
    rules = RowRules.from_config(cfg.data)
    good, bad = check_sources(train, rules)
    assert (good, bad) == (6, [])  # 3 TallyQA + 3 VSR rows, every image found in its folder
    good, bad = check_sources(evals, rules)
    assert (good, bad) == (4, [])
    assert {Path(s.path).name for s in train} == {"tallyqa_train_10.jsonl", "vsr_cot_train_10.jsonl"}


def test_the_synthetic_layout_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "grit_ray.cli", "data", "synth", "--layout", "grit", "--out",
                        str(tmp_path), "--n", "2", "--eval-n", "1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == sorted(f.file for f in GRIT_LAYOUT)
    vsr = [json.loads(x) for x in (tmp_path / "vsr_cot_train_10.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (tmp_path / "vsr_val.jsonl").read_text().splitlines()]
    assert len(vsr) == 2 and len(val) == 1 and {r["dataset"] for r in vsr + val} == {"vsr"}
    assert not {r["image"] for r in vsr} & {r["image"] for r in val}  # one folder, no name shared
