"""GRIT's data as its authors release it: the Hugging Face dataset repo ``yfan1997/GRIT_data``,
cloned into ``GRIT_data/``, holds two training files and eight evaluation files, each beside the
folder of its images (the names GRIT's own training scripts pass). ``grit-ray data fetch grit``
downloads it and checks every file; ``grit-ray data synth --layout grit`` writes synthetic rows in
the same layout, so the paper configs' data sections run end to end without the real images."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grit_ray.config import DataSource, SynthSpec

GRIT_DATASET_REPO = "yfan1997/GRIT_data"


@dataclass(frozen=True)
class LayoutFile:
    file: str  # under the data root
    images: str  # the folder its image names resolve against, under the data root
    split: str  # train | eval
    dataset: str  # the benchmark's name (the synthetic rows' ``dataset``)

    def source(self, root: Path) -> DataSource:
        return DataSource(path=str(root / self.file), images=str(root / self.images))


GRIT_LAYOUT: tuple[LayoutFile, ...] = (
    LayoutFile("tallyqa_train_10.jsonl", "tallyqa", "train", "tallyqa"),
    LayoutFile("vsr_cot_train_10.jsonl", "vsr", "train", "vsr"),
    LayoutFile("vsr_val.jsonl", "vsr", "eval", "vsr"),
    LayoutFile("mme_val.jsonl", "mme", "eval", "mme"),
    LayoutFile("tallyqa_val.jsonl", "tallyqa", "eval", "tallyqa"),
    LayoutFile("gqa_val.jsonl", "gqa", "eval", "gqa"),
    LayoutFile("mathvista_mini_val.jsonl", "mathvista_mini", "eval", "mathvista"),
    LayoutFile("ovd_position_val.jsonl", "ovd_position", "eval", "ovd_position"),
    LayoutFile("ovd_relationship_val.jsonl", "ovd_relationship", "eval", "ovd_relationship"),
    LayoutFile("ovd_negation_val.jsonl", "ovd_negation", "eval", "ovd_negation"),
)

# the synthetic world's stand-ins: counting rows for the counting benchmarks, relations for the rest
_COUNTING = {"tallyqa", "mathvista"}


def write_grit_layout(root: Path, spec: SynthSpec, eval_rows: int | None = None,
                      say: Callable[[str], None] = print) -> list[Path]:
    """Synthetic rows in GRIT's layout under ``root``: ``spec.n`` rows in each training file and
    ``eval_rows`` (default ``spec.n``) in each evaluation file, every file with its own seed and
    image names, so files sharing a folder (vsr_cot_train_10 and vsr_val) never collide."""
    from grit_ray.data.synth import synth_rows

    written = []
    for k, f in enumerate(GRIT_LAYOUT):
        n = spec.n if f.split == "train" else (eval_rows or spec.n)
        rows = synth_rows(spec.model_copy(update={"n": n, "seed": spec.seed + 1000 * k,
                                                  "counting_fraction": 1.0 if f.dataset in _COUNTING else 0.0}),
                          split=Path(f.file).stem)
        images = root / f.images
        images.mkdir(parents=True, exist_ok=True)
        with (root / f.file).open("w") as out:
            for row, png in rows:
                (images / row["image"]).write_bytes(png)
                out.write(json.dumps({**row, "dataset": f.dataset}) + "\n")
        written.append(root / f.file)
        say(f"wrote {n} rows to {root / f.file} (images in {images})")
    return written


@dataclass
class FileCheck:
    file: LayoutFile | None  # None: a JSONL outside GRIT's layout
    path: Path
    good: int
    bad: list  # RowError

    @property
    def line(self) -> str:
        what = f"{self.path.name} (images: {self.file.images}/)" if self.file else f"{self.path.name} (not in GRIT's layout)"
        return f"{what}: {self.good + len(self.bad)} rows, {self.good} good, {len(self.bad)} bad"


def check_layout(root: Path, rules) -> tuple[list[FileCheck], list[LayoutFile]]:
    """``data check`` over every JSONL under ``root`` (each file of GRIT's layout against its image
    folder); returns the checks and the layout's files that are absent."""
    from grit_ray.data.rows import check_sources

    known = {f.file: f for f in GRIT_LAYOUT}
    checks = []
    for path in sorted(root.glob("*.jsonl")):
        f = known.get(path.name)
        source = f.source(root) if f else DataSource(path=str(path))
        good, bad = check_sources([source], rules)
        checks.append(FileCheck(f, path, good, bad))
    return checks, [f for f in GRIT_LAYOUT if not (root / f.file).is_file()]


def image_provenance(root: Path, limit: int = 12) -> list[str]:
    """What the dataset's README says of its images (the lines that name them)."""
    readme = root / "README.md"
    if not readme.is_file():
        return [f"{readme}: no README; see the dataset's page for where its images come from"]
    lines = [ln.strip() for ln in readme.read_text(errors="replace").splitlines()
             if any(w in ln.lower() for w in ("image", "coco", "visual genome", "download"))]
    return lines[:limit] or [f"{readme} names no image source"]


def fetch_grit(out: Path, revision: str | None = None, repo_id: str = GRIT_DATASET_REPO) -> tuple[Path, int]:
    """The dataset repo through huggingface_hub into its cache (resumable: an interrupted fetch goes
    on from the bytes it has; progress bars; ``revision`` a branch, tag or commit), then laid out
    under ``out`` as hard links to the cached files (copies across file systems), so the data is
    not stored twice. With HF_HUB_OFFLINE=1 it is served from the hub cache alone. Returns the
    snapshot it came from and the number of files newly placed under ``out``."""
    import os
    import shutil

    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision))
    placed = 0
    for f in sorted(snapshot.rglob("*")):
        if not f.is_file():
            continue
        dest = out / f.relative_to(snapshot)
        blob = f.resolve()
        if dest.is_file() and dest.stat().st_size == blob.stat().st_size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(blob, dest)
        except OSError:
            shutil.copy2(blob, dest)
        placed += 1
    return snapshot, placed
