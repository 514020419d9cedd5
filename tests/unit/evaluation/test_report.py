"""The HTML report and the PNG curves, from crafted results (deterministic boxes), plus a real
headless Chromium screenshot of the report when Chromium is installed (.ci/run installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from grit_ray.config import CoordFrame, DataSource
from grit_ray.data.rows import RowStream
from grit_ray.evaluation.report import PALETTE, highlighted_reasoning, write_report
from grit_ray.grit.grounding import FrameSpec, from_original


def _rows(synth_jsonl, n=3):
    return list(RowStream([DataSource(path=str(synth_jsonl), images=str(synth_jsonl.parent / "images"))]))[:n]


def _results(rows):
    out = []
    for i, r in enumerate(rows):
        x1, y1, x2, y2 = (int(v) for v in r.bboxs[0]) if r.bboxs else (5, 5, 40, 40)
        completion = (f"<think> the object is at [{x1}, {y1}, {x2}, {y2}] and maybe [2, 3, 30, 31] </think> "
                      f"<rethink> yes </rethink> <answer> {r.answer if i % 2 == 0 else 'wrong'} </answer>")
        score = 1.0 if i % 2 == 0 else 0.0
        out.append({**r.to_json(), "completion": completion, "reward": 2.5, "giou": 0.5,
                    "judge": {"status": "ok", "score": score}})
    return out


def test_reasoning_highlights_each_box_in_its_colour():
    text = "a [1, 2, 3, 4] b 5,6,7,8 <x>"
    out = highlighted_reasoning(text)
    assert out.count("<mark") == 2 and PALETTE[0] in out and PALETTE[1] in out
    assert "&lt;x&gt;" in out  # the rest is escaped


def test_report_has_every_row_its_boxes_and_filters(synth_jsonl, tmp_path):
    rows = _rows(synth_jsonl)
    out = write_report(_results(rows), rows, FrameSpec(CoordFrame.ORIGINAL), tmp_path / "report.html")
    doc = out.read_text()
    assert doc.count('<div class="card') == 3 and doc.count('class="pred"') == 6
    assert doc.count('class="gt"') == 2 * sum(len(r.bboxs) for r in rows)  # dashed: white + black strokes
    assert 'data-verdict="right"' in doc and 'data-verdict="wrong"' in doc
    assert 'id="dataset"' in doc and 'id="verdict"' in doc and "data:image/jpeg;base64," in doc
    assert "http://" not in doc and "https://" not in doc  # offline: nothing to fetch


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None,
                    reason="Chromium is not installed (scripts/setup.sh --dev installs it when run as root, as in CI)")
def test_report_renders_in_headless_chromium_with_boxes_on_images(synth_jsonl, tmp_path):
    rows = _rows(synth_jsonl, n=2)
    report = write_report(_results(rows), rows, FrameSpec(CoordFrame.ORIGINAL), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1000,900", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    pixels = set(img.getdata())
    first_box = tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))
    second_box = tuple(int(PALETTE[1][i:i + 2], 16) for i in (1, 3, 5))
    assert first_box in pixels and second_box in pixels  # boxes drawn (and their coordinate marks)
    assert len(pixels) > 500  # images rendered, not a blank page


def test_plots_render_from_a_metrics_file(tmp_path):
    from grit_ray.evaluation.plots import plot_run

    rows = [{"step": s, "reward/mean": 0.1 * s, "reward/answer_format": 0.05 * s, "answer_right": 0.02 * s,
             "train/kl": 0.001 * s, "completion/len_mean": 20 + s, "completion/len_max": 40,
             "time/step": 1.0, "time/generation": 0.6, "time/learner": 0.3} for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = plot_run(tmp_path)
    assert sorted(p.name for p in written) == ["accuracy.png", "kl.png", "lengths.png", "reward.png", "step_time.png"]
    for p in written:
        img = Image.open(p)
        assert img.size == (900, 420) and len(set(img.convert("RGB").getdata())) > 3
    with pytest.raises(FileNotFoundError, match="no metrics"):
        plot_run(Path(tmp_path / "nowhere"))


def test_an_internvl_norm1000_box_is_drawn_at_the_pixels_it_means(synth_jsonl, tmp_path):
    """InternVL3 writes boxes in 0-1000 of the image: the report maps them to the image's pixels,
    so the ground-truth box written in norm1000 lands exactly on the dashed ground truth."""
    import re

    row = _rows(synth_jsonl, n=1)[0]
    x1, y1, x2, y2 = row.bboxs[0]
    w, h = row.width, row.height
    norm = [round(v) for v in from_original((x1, y1, x2, y2), w, h, FrameSpec(CoordFrame.NORM1000))]
    completion = f"<think> {{\"bbox_2d\": {norm}}} </think> <rethink> ok </rethink> <answer> {row.answer} </answer>"
    result = {**row.to_json(), "completion": completion, "reward": 2.0, "giou": 1.0, "judge": {"status": "ok", "score": 1.0}}
    doc = write_report([result], [row], FrameSpec(CoordFrame.NORM1000), tmp_path / "report.html").read_text()
    pred = re.search(r'<rect class="pred" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', doc)
    px, py, pw, ph = (float(v) for v in pred.groups())
    tolerance = max(w, h) / 1000 + 0.1  # one norm1000 unit of rounding, and the report's one decimal
    assert abs(px - x1) <= tolerance and abs(py - y1) <= tolerance
    assert abs(px + pw - x2) <= tolerance and abs(py + ph - y2) <= tolerance
    assert norm != [int(v) for v in row.bboxs[0]]  # the frames differ: drawing the raw numbers would miss
    assert "frame: norm1000" in doc
