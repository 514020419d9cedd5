"""Step metrics out of the driver: ``RUN_DIR/metrics.jsonl``, TensorBoard event files, W&B when
installed and configured, and a live progress line.

The TensorBoard writer is a few lines of protobuf and TFRecord framing (scalars only), so runs
need neither TensorFlow nor the tensorboard package; ``tensorboard --logdir RUN_DIR/tb`` reads it.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# TensorBoard scalars


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint((number << 3) | wire) + payload


def _len_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def event_bytes(step: int, wall_time: float, scalars: dict[str, float] | None = None,
                file_version: str | None = None) -> bytes:
    """One serialised tensorflow.Event: wall_time (1, double), step (2, int64), file_version
    (3, string) or summary (5) of values (1) with tag (1) and simple_value (2, float)."""
    msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        msg += _len_field(3, file_version.encode())
    if scalars:
        values = b"".join(_len_field(1, _len_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", v)))
                          for tag, v in scalars.items())
        msg += _len_field(5, values)
    return msg


def tfrecord(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class TensorBoardWriter:
    def __init__(self, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / f"events.out.tfevents.{int(time.time())}.grit-ray"
        self._f = self.path.open("ab")
        self._f.write(tfrecord(event_bytes(0, time.time(), file_version="brain.Event:2")))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        self._f.write(tfrecord(event_bytes(step, time.time(), finite)))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


# ---------------------------------------------------------------------------------------------
# the logger the driver uses


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(m: dict[str, Any], total_steps: int, eta_s: float) -> str:
    def fmt(key: str, label: str, spec: str = ".3f") -> str:
        v = m.get(key)
        return f"{label} {v:{spec}}" if isinstance(v, int | float) else f"{label} -"

    return " | ".join([f"step {m['step']}/{total_steps}", fmt("reward/mean", "reward"), fmt("accuracy", "acc"),
                       fmt("train/kl", "kl", ".4f"), fmt("time/step", "s/step", ".1f"),
                       fmt("throughput/tokens_per_s", "tok/s", ".0f"), f"ETA {_duration(eta_s)}"])


class MetricsLogger:
    """metrics.jsonl (one object per step), TensorBoard, optional W&B, and the progress line."""

    def __init__(self, run_dir: Path, total_steps: int, tensorboard: bool, progress: bool,
                 wandb_project: str | None, run_name: str, config: dict[str, Any], resume_step: int = 0):
        self.path = run_dir / "metrics.jsonl"
        self.total_steps, self.progress = total_steps, progress
        if resume_step and self.path.exists():  # drop lines from beyond the checkpoint we resume from
            kept = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self._f = self.path.open("a")
        self.tb = TensorBoardWriter(run_dir / "tb") if tensorboard else None
        self.wandb = None
        if wandb_project:
            try:
                import wandb

                self.wandb = wandb.init(project=wandb_project, name=run_name, config=config, resume="allow")
            except ImportError:
                print("[grit-ray] logging.wandb_project is set but wandb is not installed; skipping W&B",
                      file=sys.stderr)
        self._step_times: list[float] = []

    def log(self, metrics: dict[str, Any]) -> None:
        self._f.write(json.dumps(metrics, sort_keys=True) + "\n")
        self._f.flush()
        numeric = {k: v for k, v in metrics.items() if k != "step" and isinstance(v, int | float)}
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
