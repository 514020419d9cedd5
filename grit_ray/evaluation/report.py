"""The evaluation report: one self-contained HTML file (images embedded, no network), showing for
every row the image with the predicted boxes (one colour each) and the ground-truth boxes
(dashed), the reasoning with each box's coordinates highlighted in that box's colour, the
question, reference, answer and scores; filters by dataset and by right/wrong."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from grit_ray.data.rows import Row
from grit_ray.evaluation.score import fmt_or_dash
from grit_ray.grit.grounding import BOX_RE, FrameSpec, answer_text, to_original

# distinguishable on photos; the ground truth is drawn dashed black-on-white, unlike any of these
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324")
MAX_SIDE = 640  # embedded images are downscaled; boxes live in original pixels through the SVG viewBox


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def image_data_uri(row: Row) -> str:
    img = row.open_image()
    img.thumbnail((MAX_SIDE, MAX_SIDE))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def highlighted_reasoning(text: str) -> str:
    """The completion, escaped, with the i-th box's coordinates on the i-th colour."""
    out, at = [], 0
    for i, m in enumerate(BOX_RE.finditer(text)):
        out.append(html.escape(text[at:m.start()]))
        out.append(f'<mark class="box" style="background:{colour(i)}">{html.escape(m.group(0))}</mark>')
        at = m.end()
    out.append(html.escape(text[at:]))
    return "".join(out)


def svg(row: Row, completion: str, frame: FrameSpec) -> str:
    w, h = row.width, row.height
    parts = [f'<svg viewBox="0 0 {w} {h}" class="img"><image href="{image_data_uri(row)}" width="{w}" height="{h}"/>']
    stroke = max(w, h) / 150
    for box in row.bboxs:
        x1, y1, x2, y2 = box
        for dash_colour, offset in (("#ffffff", 0), ("#000000", stroke * 2)):
            parts.append(f'<rect class="gt" x="{x1}" y="{y1}" width="{x2 - x1}" height="{y2 - y1}" fill="none" '
                         f'stroke="{dash_colour}" stroke-width="{stroke}" stroke-dasharray="{stroke * 2}" '
                         f'stroke-dashoffset="{offset}"/>')
    for i, m in enumerate(BOX_RE.finditer(completion)):
        x1, y1, x2, y2 = to_original(tuple(float(v) for v in m.group(0).split(",")), w, h, frame)
        parts.append(f'<rect class="pred" x="{x1:.1f}" y="{y1:.1f}" width="{max(x2 - x1, 0):.1f}" '
                     f'height="{max(y2 - y1, 0):.1f}" fill="none" stroke="{colour(i)}" stroke-width="{stroke * 1.5}"/>')
    parts.append("</svg>")
    return "".join(parts)


def card(result: dict[str, Any], row: Row, frame: FrameSpec) -> str:
    judge = result["judge"]
    right = judge.get("status") == "ok" and (judge.get("score") or 0) > 0
    verdict = "right" if right else ("failed" if judge.get("status") == "failed" else "wrong")
    ans = answer_text(result["completion"])
    return f"""
<div class="card {verdict}" data-dataset="{html.escape(row.dataset)}" data-verdict="{verdict}">
  {svg(row, result['completion'], frame)}
  <div class="text">
    <div class="meta"><b>{html.escape(row.dataset)}</b> · {html.escape(row.where)} ·
      <span class="verdict">{verdict}</span> · judge {fmt_or_dash(judge.get('score'), '.2f')} ·
      reward {fmt_or_dash(result.get('reward'), '.3f')} · GIoU {fmt_or_dash(result.get('giou'), '.3f')}</div>
    <div><b>Q:</b> {html.escape(row.question)}</div>
    <div><b>Reference:</b> {html.escape(str(row.answer))} · <b>Answer:</b>
      {html.escape(ans.strip()) if ans is not None else '<i>none</i>'}</div>
    <pre class="reasoning">{highlighted_reasoning(result['completion'])}</pre>
  </div>
</div>"""


_STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa}
.card{display:flex;gap:16px;background:#fff;border:1px solid #ddd;border-left:6px solid #999;margin:10px 0;padding:10px}
.card.right{border-left-color:#3cb44b}.card.wrong{border-left-color:#e6194b}.card.failed{border-left-color:#999}
.img{width:320px;height:auto;flex:none}
.text{flex:1;min-width:0}.meta{color:#555;font-size:90%;margin-bottom:6px}
pre.reasoning{white-space:pre-wrap;background:#f4f4f4;padding:8px;font-size:90%}
mark.box{color:#fff;padding:0 2px;border-radius:3px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.legend span{display:inline-block;margin-right:12px}
"""

_SCRIPT = """
function applyFilters(){
  const d=document.getElementById('dataset').value, v=document.getElementById('verdict').value;
  let shown=0;
  document.querySelectorAll('.card').forEach(c=>{
    const ok=(d==='all'||c.dataset.dataset===d)&&(v==='all'||c.dataset.verdict===v);
    c.style.display=ok?'flex':'none'; if(ok) shown++;});
  document.getElementById('shown').textContent=shown;
}
"""


def write_report(results: list[dict[str, Any]], rows: list[Row], frame: FrameSpec, out: Path,
                 title: str = "grit-ray report", summary: dict[str, dict[str, Any]] | None = None) -> Path:
    datasets = sorted({r.dataset for r in rows})
    options = "".join(f'<option value="{html.escape(d)}">{html.escape(d)}</option>' for d in datasets)
    table = ""
    if summary:
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v['n']}</td><td>{fmt_or_dash(v['acc'], '.1f')}</td>"
                       f"<td>{fmt_or_dash(v['giou'], '.3f')}</td><td>{v['judge_failures']}</td></tr>"
                       for k, v in summary.items())
        table = ("<table><tr><th>dataset</th><th>n</th><th>ACC</th><th>GIoU</th><th>judge failures</th></tr>"
                 f"{body}</table>")
    cards = "".join(card(res, row, frame) for res, row in zip(results, rows))
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
{table}
<p class="legend"><span>boxes: predicted, one colour each, the same colour marks their coordinates in the
reasoning</span><span>ground truth: dashed black and white</span>
<span>frame: {html.escape(frame.frame.value)}</span></p>
<p>dataset <select id="dataset" onchange="applyFilters()"><option value="all">all</option>{options}</select>
 answer <select id="verdict" onchange="applyFilters()"><option value="all">all</option>
 <option value="right">right</option><option value="wrong">wrong</option><option value="failed">judge failed</option>
 </select> · <span id="shown">{len(rows)}</span> shown</p>
{cards}
<script>{_SCRIPT}</script>
<script type="application/json" id="data">{html.escape(json.dumps({"rows": len(rows)}))}</script>
</body></html>"""
    out.write_text(doc)
    return out
