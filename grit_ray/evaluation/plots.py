"""``grit-ray plot RUN_DIR``: PNG curves from ``metrics.jsonl``, drawn with Pillow (no plotting
library needed): reward (total and per component), accuracy, KL, completion lengths and the
per-phase step time."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from grit_ray.evaluation.report import PALETTE

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 900, 420, 70, 190, 40, 45


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a grit-ray run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _nice(lo: float, hi: float) -> tuple[float, float]:
    if lo == hi:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, out: Path, y_label: str = "",
               bands: dict[str, list[tuple[float, float, float]]] | None = None) -> Path:
    """Lines on a white canvas with axes, ticks, a title and a legend; ``bands`` (name -> (x, low,
    high) points) shades an interval around the line of the same name."""
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img, "RGBA")
    font = ImageFont.load_default()
    bands = bands or {}
    points = [p for pts in series.values() for p in pts] + [(x, v) for pts in bands.values() for x, lo, hi in pts
                                                             for v in (lo, hi)]
    x0, x1 = (min(p[0] for p in points), max(p[0] for p in points)) if points else (0, 1)
    y0, y1 = _nice(min(p[1] for p in points), max(p[1] for p in points)) if points else (0, 1)
    x1 = x1 if x1 > x0 else x0 + 1
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def to_px(x: float, y: float) -> tuple[float, float]:
        return PAD_L + (x - x0) / (x1 - x0) * pw, PAD_T + (1 - (y - y0) / (y1 - y0)) * ph

    d.rectangle([PAD_L, PAD_T, PAD_L + pw, PAD_T + ph], outline="#888")
    for i in range(6):  # y grid and labels
        y = y0 + (y1 - y0) * i / 5
        _, py = to_px(x0, y)
        d.line([PAD_L, py, PAD_L + pw, py], fill="#eee")
        d.text((4, py - 6), f"{y:.3g}", fill="#333", font=font)
    for i in range(6):  # x ticks
        x = x0 + (x1 - x0) * i / 5
        px, _ = to_px(x, y0)
        d.line([px, PAD_T + ph, px, PAD_T + ph + 4], fill="#888")
        d.text((px - 8, PAD_T + ph + 8), f"{x:.0f}", fill="#333", font=font)
    d.text((PAD_L + pw / 2 - 12, H - 18), "step", fill="#333", font=font)
    d.text((PAD_L, 12), title + (f"  ({y_label})" if y_label else ""), fill="#000", font=font)
    for i, (name, pts) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        if len(band := bands.get(name, [])) > 1:
            rgb = tuple(int(c.lstrip("#")[k:k + 2], 16) for k in (0, 2, 4))
            d.polygon([to_px(x, hi) for x, _, hi in band] + [to_px(x, lo) for x, lo, _ in reversed(band)],
                      fill=(*rgb, 50))
        px = [to_px(x, y) for x, y in pts]
        if len(px) > 1:
            d.line(px, fill=c, width=2)
        for x, y in px:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=c)
        ly = PAD_T + 14 * i
        d.line([W - PAD_R + 10, ly + 6, W - PAD_R + 30, ly + 6], fill=c, width=3)
        d.text((W - PAD_R + 35, ly), name, fill="#000", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def _series(rows: list[dict], keys: list[str]) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), int | float)]
        if pts:
            out[k] = pts
    return out


def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    rows = read_metrics(run_dir)
    out_dir = out_dir or run_dir / "plots"
    keys = sorted({k for r in rows for k in r})
    components = [k for k in keys if k.startswith("reward/") and k not in ("reward/mean", "reward/std")]
    charts = {
        "reward.png": ("reward: total and per component", ["reward/mean"] + components),
        "accuracy.png": ("answers right in training (binarised) and held-out ACC / 100", ["answer_right", "eval/accuracy"]),
        "eval.png": ("held-out evaluation (greedy): accuracy and GIoU",
                     [k for k in keys if k.startswith("eval/") and k.endswith(("accuracy", "giou"))]),
        "kl.png": ("KL to the reference (k3)", ["train/kl"]),
        "lengths.png": ("completion length (tokens)", ["completion/len_mean", "completion/len_max"]),
        "step_time.png": ("step time by phase (s)", ["time/step"] + [k for k in keys if k.startswith("time/")
                                                                     and k != "time/step"]),
    }
    written = []
    for name, (title, wanted) in charts.items():
        series = _series(rows, wanted)
        if series:
            written.append(line_chart(series, title, out_dir / name))
    return written
