"""Synthetic grounded data in the GRIT schema: coloured shapes with spatial and counting questions.

Each sample is one image of non-overlapping coloured shapes and one question about it, with the
ground-truth boxes of the question's targets in original-image pixels:

- ``vsr`` yes/no: "Is the red square left of the blue circle?" (boxes: both objects);
- ``vsr`` open: "What is left of the red square?" (exactly one object qualifies; boxes: it);
- ``tallyqa`` counting: "How many green shapes are there?" / "How many circles are there?",
  answers 0..max_count (boxes: every target; none for 0).

Deterministic: the same seed gives the same rows and the same image bytes.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw

from grit_ray.config import SynthSpec

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
SHAPES = ("square", "circle", "triangle")
BACKGROUND = (245, 245, 240)
# relation name -> test on two boxes (a relative to b), both [x1, y1, x2, y2]; "entirely" so that
# answers are unambiguous to a human looking at the picture.
RELATIONS = {
    "left of": lambda a, b: a[2] < b[0],
    "right of": lambda a, b: a[0] > b[2],
    "above": lambda a, b: a[3] < b[1],
    "below": lambda a, b: a[1] > b[3],
}


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def _place(rng: random.Random, w: int, h: int, placed: list[Obj], size: int) -> tuple[int, int, int, int] | None:
    for _ in range(60):
        x1, y1 = rng.randint(1, w - size - 1), rng.randint(1, h - size - 1)
        box = (x1, y1, x1 + size, y1 + size)
        if all(box[2] + 2 < o.box[0] or o.box[2] + 2 < box[0] or box[3] + 2 < o.box[1] or o.box[3] + 2 < box[1]
               for o in placed):
            return box
    return None


def object_size(w: int, h: int, n_objects: int, scale: float) -> int:
    """Side of the objects in a scene: ``scale`` of the shorter image side, smaller in crowded scenes
    so that they still fit without overlap."""
    return max(10, round(min(w, h) * min(scale, 0.55 / math.sqrt(max(n_objects, 1)))))


def scatter(rng: random.Random, w: int, h: int, wanted: list[tuple[str, str]], scale: float) -> list[Obj]:
    """Place the wanted (colour, shape) objects without overlap; objects that do not fit are dropped."""
    objs: list[Obj] = []
    size = object_size(w, h, len(wanted), scale)
    for colour, shape in wanted:
        box = _place(rng, w, h, objs, rng.randint(size - 3, size + 3))
        if box is not None:
            objs.append(Obj(colour, shape, box))
    return objs


def backdrop(w: int, h: int, lit: bool) -> Image.Image:
    """The canvas: flat, or lit from the top left (red falls off to the right, green downwards),
    which tells a small vision tower without position embeddings where a patch is (docs/data.md)."""
    if not lit:
        return Image.new("RGB", (w, h), BACKGROUND)
    xs = bytes(round(255 - 50 * x / 167) for x in range(w))  # 255 -> 205 across a 168-px side
    ys = bytes(round(255 - 50 * y / 167) for y in range(h))
    red = Image.frombytes("L", (w, 1), xs).resize((w, h))
    green = Image.frombytes("L", (1, h), ys).resize((w, h))
    return Image.merge("RGB", (red, green, Image.new("L", (w, h), BACKGROUND[2])))


def render(w: int, h: int, objs: list[Obj], lit: bool = True) -> bytes:
    im = backdrop(w, h, lit)
    draw = ImageDraw.Draw(im)
    for o in objs:
        x1, y1, x2, y2 = o.box
        fill = COLOURS[o.colour]
        if o.shape == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
        elif o.shape == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def image_side(rng: random.Random, spec: SynthSpec) -> int:
    """A side length in [min_size, max_size], a multiple of ``spec.side_multiple``."""
    m = spec.side_multiple
    return m * rng.randint(-(-spec.min_size // m), spec.max_size // m)


def random_kinds(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(n)]


def unique_by(objs: list[Obj], key: Callable[[Obj], str]) -> list[Obj]:
    """The objects whose key (name, colour, shape) no other object in the scene shares."""
    keys = [key(o) for o in objs]
    return [o for o in objs if keys.count(key(o)) == 1]


def _counting_sample(rng: random.Random, w: int, h: int, spec: SynthSpec) -> tuple[list[Obj], dict[str, Any]] | None:
    target = rng.randint(0, spec.max_count)
    by_colour = rng.random() < 0.5
    key = rng.choice(list(COLOURS)) if by_colour else rng.choice(SHAPES)
    others = [(c, s) for c, s in random_kinds(rng, rng.randint(1, 4)) if (c if by_colour else s) != key]
    targets = [(key, rng.choice(SHAPES)) if by_colour else (rng.choice(list(COLOURS)), key) for _ in range(target)]
    objs = scatter(rng, w, h, targets + others, spec.object_scale)
    hits = [o for o in objs if (o.colour if by_colour else o.shape) == key]
    if len(hits) != target:
        return None  # some target did not fit; caller draws again
    noun = f"{key} shapes" if by_colour else f"{key}s"
    q = f"How many {noun} are there?"
    return objs, {"question": q, "answer": str(target), "bboxs": [list(o.box) for o in hits], "dataset": "tallyqa"}


def _relation_sample(rng: random.Random, w: int, h: int, spec: SynthSpec) -> tuple[list[Obj], dict[str, Any]] | None:
    objs = scatter(rng, w, h, random_kinds(rng, rng.randint(2, 5)), spec.object_scale)
    named = unique_by(objs, lambda o: o.name)
    if len(named) < 2:
        return None
    rel = rng.choice(list(RELATIONS))
    test = RELATIONS[rel]
    if rng.random() < 0.5:
        a, b = rng.sample(named, 2)
        answer = "Yes" if test(a.box, b.box) else "No"
        q = f"Is the {a.name} {rel} the {b.name}?"
        return objs, {"question": q, "answer": answer, "bboxs": [list(a.box), list(b.box)], "dataset": "vsr"}
    anchor = rng.choice(named)
    hits = [o for o in objs if o is not anchor and test(o.box, anchor.box)]
    if len(hits) != 1:
        return None
    q = f"What is {rel} the {anchor.name}?"
    return objs, {"question": q, "answer": f"the {hits[0].name}", "bboxs": [list(hits[0].box)], "dataset": "vsr"}


def synth_rows(spec: SynthSpec, split: str = "train") -> list[tuple[dict[str, Any], bytes]]:
    """``spec.n`` (row, PNG bytes) pairs; ``row['image']`` is the file name the bytes belong to."""
    rng = random.Random(spec.seed)
    out: list[tuple[dict[str, Any], bytes]] = []
    while len(out) < spec.n:
        # the kind is drawn once per row and kept through rejections, so the mix follows the spec
        maker = _counting_sample if rng.random() < spec.counting_fraction else _relation_sample
        made = None
        while made is None:
            w, h = image_side(rng, spec), image_side(rng, spec)
            made = maker(rng, w, h, spec)
        objs, qa = made
        i = len(out)
        row = {"id": f"synth-{spec.seed}-{split}-{i:06d}", **qa, "image": f"synth_{split}_{i:06d}.png",
               "width": w, "height": h, "split": split}
        out.append((row, render(w, h, objs, spec.lit_backdrop)))
    return out


def write_synth(
    out_dir: str | Path, spec: SynthSpec, fmt: Literal["jsonl", "parquet"] = "jsonl", split: str = "train"
) -> Path:
    """Write ``OUT/{split}.jsonl`` + ``OUT/images/*.png``, or ``OUT/{split}.parquet`` with embedded bytes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = synth_rows(spec, split)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = [{**row, "image": png} for row, png in rows]
        path = out / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
        return path
    images = out / "images"
    images.mkdir(exist_ok=True)
    path = out / f"{split}.jsonl"
    with path.open("w") as f:
        for row, png in rows:
            (images / row["image"]).write_bytes(png)
            f.write(json.dumps(row) + "\n")
    return path
