"""Checkpoints of a run: the learners' DeepSpeed state plus the driver's (step, data position).
The driver state is written last, so a checkpoint without it is incomplete and ignored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from grit_ray.data.rows import PromptSampler

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "final_model"
DRIVER_STATE = "driver.json"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories whose driver state was written (the last file of a save), oldest first."""
    return sorted(p.parent for p in (run_dir / CHECKPOINTS).glob(f"step-*/{DRIVER_STATE}"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories a crash left without their driver state."""
    return sorted(p for p in (run_dir / CHECKPOINTS).glob("step-*") if not (p / DRIVER_STATE).exists())


def save_checkpoint(run_dir: Path, step: int, learners, sampler: PromptSampler, keep_last: int) -> Path:
    ckpt = run_dir / CHECKPOINTS / f"step-{step:06d}"
    shutil.rmtree(ckpt, ignore_errors=True)  # a partial save of this step (a replay after a crash)
    learners.save_checkpoint(ckpt)
    state = {"step": step, "sampler": sampler.state()}
    (ckpt / DRIVER_STATE).write_text(json.dumps(state))
    prune_checkpoints(run_dir, keep_last)
    return ckpt


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Remove the complete checkpoints beyond the newest ``keep_last`` and every incomplete one."""
    doomed = complete_checkpoints(run_dir)[:-keep_last] + incomplete_checkpoints(run_dir)
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)
    return doomed


def load_driver_state(ckpt: Path) -> dict:
    return json.loads((ckpt / DRIVER_STATE).read_text())
