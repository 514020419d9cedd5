"""Cross-modal correlation (docs/grit.md §6): do the boxes in a reasoning chain belong to
the image the chain talks about?

For each evaluated row with at least one predicted box, the chain's boxes are drawn on one copy
of the image and the same number of random boxes on another. A multimodal judge gets both images,
in a seeded random order, and the chain with its coordinates masked, and is asked which image
the chain describes. The score is the share of correct picks, over ``repeats`` seeded repeats
(mean and standard deviation). Unanswerable or failed calls are counted, never scored.
"""

from __future__ import annotations

import asyncio
import io
import random
import re
import statistics
from typing import Any

from PIL import ImageDraw

from grit_ray.config import JudgeConfig
from grit_ray.data.rows import Row
from grit_ray.grit.grounding import BOX_RE, FrameSpec, find_boxes, to_original
from grit_ray.judge.llm import openai_client, user_message

PROMPT = (
    "Below is a chain of reasoning about an image, with its box coordinates hidden. The boxes it "
    "referred to are drawn in red on one of the two images; the other image has the same number of "
    "red boxes at random places. Which image matches the reasoning? Reply with exactly 'Image 0' or "
    "'Image 1'.\n\nReasoning: {chain}"
)
_PICK = re.compile(r"image\s*([01])", re.I)


def mask_boxes(text: str) -> str:
    return BOX_RE.sub("[box]", text)


def random_boxes(rng: random.Random, n: int, width: int, height: int) -> list[tuple[float, float, float, float]]:
    out = []
    for _ in range(n):
        w = rng.uniform(0.1, 0.5) * width
        h = rng.uniform(0.1, 0.5) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        out.append((x, y, x + w, y + h))
    return out


def draw(row: Row, boxes: list[tuple[float, float, float, float]]) -> bytes:
    img = row.open_image()
    d = ImageDraw.Draw(img)
    width = max(2, max(img.size) // 100)
    for b in boxes:
        d.rectangle(b, outline=(255, 0, 0), width=width)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def true_position(seed: int, repeat: int, index: int) -> int:
    """Where (0 or 1) the chain's own image goes for this row and repeat: seeded, reproducible."""
    return random.Random(f"crossmodal:{seed}:{repeat}:{index}:order").randrange(2)


def parse_pick(reply: str) -> int | None:
    picks = {int(m.group(1)) for m in _PICK.finditer(reply or "")}
    return picks.pop() if len(picks) == 1 else None


async def _ask(client, model: str, chain: str, images: list[bytes], timeout_s: float) -> int | None:
    resp = await asyncio.wait_for(client.chat.completions.create(
        model=model, messages=user_message(PROMPT.format(chain=chain), images)), timeout=timeout_s)
    return parse_pick(resp.choices[0].message.content if resp.choices else "")


def crossmodal_correlation(results: list[dict[str, Any]], rows: list[Row], frame: FrameSpec, judge: JudgeConfig,
                           repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """{"mean", "std", "per_repeat", "rows", "unanswered"}: share of correct picks per repeat."""
    client = openai_client(judge, max_retries=judge.max_retries)
    sem = asyncio.Semaphore(judge.concurrency)
    cases = [(i, r, res) for i, (res, r) in enumerate(zip(results, rows)) if find_boxes(res["completion"])]

    async def one(repeat: int, i: int, row: Row, res: dict[str, Any]) -> bool | None:
        own = [to_original(b, row.width, row.height, frame) for b in find_boxes(res["completion"])]
        rng = random.Random(f"crossmodal:{seed}:{repeat}:{i}:boxes")
        fake = random_boxes(rng, len(own), row.width, row.height)
        pos = true_position(seed, repeat, i)
        images = [draw(row, own), draw(row, fake)] if pos == 0 else [draw(row, fake), draw(row, own)]
        async with sem:
            try:
                pick = await _ask(client, judge.model, mask_boxes(res["completion"]), images, judge.timeout_s)
            except Exception:  # counted as unanswered below, never as a wrong pick
                return None
        return None if pick is None else pick == pos

    async def run():
        try:
            return [await asyncio.gather(*(one(k, i, r, res) for i, r, res in cases)) for k in range(repeats)]
        finally:
            await client.close()

    outcomes = asyncio.run(run())
    per_repeat = []
    unanswered = 0
    for picks in outcomes:
        answered = [p for p in picks if p is not None]
        unanswered += len(picks) - len(answered)
        per_repeat.append(sum(answered) / len(answered) if answered else None)
    scores = [p for p in per_repeat if p is not None]
    return {"mean": statistics.fmean(scores) if scores else None,
            "std": statistics.pstdev(scores) if len(scores) > 1 else 0.0 if scores else None,
            "per_repeat": per_repeat, "rows": len(cases), "unanswered": unanswered, "repeats": repeats,
            "seed": seed}
