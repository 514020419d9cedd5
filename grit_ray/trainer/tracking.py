"""Step metrics out of the driver: ``RUN_DIR/metrics.jsonl``, TensorBoard event files, W&B when
installed and configured, and a live progress line.

TensorBoard event files are written with tensorboardX (no TensorFlow); ``tensorboard --logdir
RUN_DIR/tb`` reads them.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# TensorBoard scalars


class TensorBoardWriter:
    """Scalars into ``log_dir`` through tensorboardX (no TensorFlow needed); non-finite values are
    left out, as TensorBoard cannot plot them."""

    def __init__(self, log_dir: Path):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(log_dir), flush_secs=10)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, v in values.items():
            if isinstance(v, int | float) and math.isfinite(v):
                self._writer.add_scalar(tag, float(v), global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


# ---------------------------------------------------------------------------------------------
# the logger the driver uses


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "step" and isinstance(v, int | float)}


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(m: dict[str, Any], total_steps: int, eta_s: float) -> str:
    def fmt(key: str, label: str, spec: str = ".3f") -> str:
        v = m.get(key)
        return f"{label} {v:{spec}}" if isinstance(v, int | float) else f"{label} -"

    return " | ".join([f"step {m['step']}/{total_steps}", fmt("reward/mean", "reward"), fmt("answer_right", "right"),
                       fmt("train/kl", "kl", ".4f"), fmt("time/step", "s/step", ".1f"),
                       fmt("throughput/tokens_per_s", "tok/s", ".0f"), f"ETA {_duration(eta_s)}"])


class MetricsLogger:
    """metrics.jsonl (one object per step), TensorBoard, optional W&B, and the progress line.

    ``keep_through`` is the last step whose rows stay (the checkpoint a run resumes from; -1: a
    fresh run keeps nothing): rows the run will log again leave metrics.jsonl, and the
    TensorBoard events are rewritten from the rows kept, so both hold every step exactly once."""

    def __init__(self, run_dir: Path, total_steps: int, tensorboard: bool, progress: bool,
                 wandb_project: str | None, run_name: str, config: dict[str, Any], keep_through: int = -1):
        self.path = run_dir / "metrics.jsonl"
        self.tb_dir = run_dir / "tb"
        self.total_steps, self.progress, self.tensorboard = total_steps, progress, tensorboard
        self._f = None
        self.tb: TensorBoardWriter | None = None
        self.rewind(keep_through)
        self.wandb = None
        if wandb_project:
            try:
                import wandb

                self.wandb = wandb.init(project=wandb_project, name=run_name, config=config, resume="allow")
            except ImportError:
                print("[grit-ray] logging.wandb_project is set but wandb is not installed; skipping W&B",
                      file=sys.stderr)
        self._step_times: list[float] = []

    def rewind(self, step: int) -> None:
        """Continue logging after ``step``: later rows leave metrics.jsonl and TensorBoard."""
        if self._f:
            self._f.close()
        kept: list[str] = []
        if self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln and json.loads(ln)["step"] <= step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self._f = self.path.open("a")
        if self.tb:
            self.tb.close()
        if self.tensorboard:
            shutil.rmtree(self.tb_dir, ignore_errors=True)  # events are rewritten from the rows kept
            self.tb = TensorBoardWriter(self.tb_dir)
            for ln in kept:
                row = json.loads(ln)
                self.tb.scalars(row["step"], _numeric(row))

    def log(self, metrics: dict[str, Any]) -> None:
        self._f.write(json.dumps(metrics, sort_keys=True) + "\n")
        self._f.flush()
        numeric = _numeric(metrics)
        if self.tb:
            self.tb.scalars(metrics["step"], numeric)
        if self.wandb:
            self.wandb.log(numeric, step=metrics["step"])
        if "time/step" in metrics:
            self._step_times.append(metrics["time/step"])
        if self.progress and "time/step" in metrics:
            recent = self._step_times[-5:]
            eta = (self.total_steps - metrics["step"]) * sum(recent) / len(recent)
            print(f"[grit-ray] {progress_line(metrics, self.total_steps, eta)}", flush=True)

    def close(self) -> None:
        self._f.close()
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()
