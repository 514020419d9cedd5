"""GRIT's grounded-reasoning format: parsing completions, boxes, and coordinate frames.

Format (docs/grit.md §1)::

    <think> text with boxes such as [142, 314, 299, 447] ... </think>
    <rethink> reflection ... </rethink>
    <answer> short answer [</answer>]

A box is any match of ``\\b\\d+,\\s*\\d+,\\s*\\d+,\\s*\\d+\\b``: four comma-separated integers;
brackets, JSON keys and labels around it do not matter, decimals do not match. Every function
here accepts any string and never raises.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from grit_ray.config import CoordFrame

BOX_RE = re.compile(r"\b\d+,\s*\d+,\s*\d+,\s*\d+\b")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
RETHINK_OPEN, RETHINK_CLOSE = "<rethink>", "</rethink>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

Box = tuple[float, float, float, float]


def find_boxes(text: str) -> list[Box]:
    """Every box in ``text``, in order, as written (x1, y1, x2, y2)."""
    out = []
    for m in BOX_RE.finditer(text):
        x1, y1, x2, y2 = (float(v) for v in m.group(0).split(","))
        out.append((x1, y1, x2, y2))
    return out


def before_first_rethink(text: str) -> str | None:
    """The text before the first ``<rethink>``, or None when there is none."""
    i = text.find(RETHINK_OPEN)
    return None if i < 0 else text[:i]


def answer_text(text: str, strip_close: bool = True) -> str | None:
    """Text after the first ``<answer>`` (cut at ``</answer>`` when ``strip_close``), or None."""
    i = text.find(ANSWER_OPEN)
    if i < 0:
        return None
    rest = text[i + len(ANSWER_OPEN):]
    if strip_close:
        j = rest.find(ANSWER_CLOSE)
        if j >= 0:
            rest = rest[:j]
    return rest


def _between(text: str, open_tag: str, close_tag: str) -> str | None:
    i = text.find(open_tag)
    if i < 0:
        return None
    start = i + len(open_tag)
    j = text.find(close_tag, start)
    return text[start:] if j < 0 else text[start:j]


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion split into its segments (None where a tag is absent)."""

    think: str | None
    rethink: str | None
    answer: str | None
    boxes: list[Box]  # every box in the completion
    boxes_before_rethink: list[Box]  # the grounded chain's boxes (GRIT counts only these)


def parse_completion(text: str) -> ParsedCompletion:
    text = text if isinstance(text, str) else ""
    head = before_first_rethink(text)
    return ParsedCompletion(
        think=_between(text, THINK_OPEN, THINK_CLOSE),
        rethink=_between(text, RETHINK_OPEN, RETHINK_CLOSE),
        answer=answer_text(text),
        boxes=find_boxes(text),
        boxes_before_rethink=find_boxes(head) if head is not None else [],
    )


# ---------------------------------------------------------------------------------------------
# coordinate frames


def qwen_resized_size(width: int, height: int, min_pixels: int, max_pixels: int, factor: int = 28) -> tuple[int, int]:
    """(width, height) of an image after Qwen2-VL's processor resize: sides rounded to multiples of
    ``factor`` (patch 14 x merge 2), area kept within [min_pixels, max_pixels], aspect kept."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


@dataclass(frozen=True)
class FrameSpec:
    """How to read a model's boxes: its frame, and the processor limits for ``qwen-resized``."""

    frame: CoordFrame = CoordFrame.ORIGINAL
    min_pixels: int = 3136
    max_pixels: int = 256 * 28 * 28


def from_original(box: Box, width: int, height: int, spec: FrameSpec) -> Box:
    """Map a box from original-image pixels to the model's frame (the inverse of ``to_original``)."""
    if spec.frame is CoordFrame.ORIGINAL:
        return box
    if spec.frame is CoordFrame.NORM1000:
        fw, fh = 1000, 1000
    else:
        fw, fh = qwen_resized_size(width, height, spec.min_pixels, spec.max_pixels)
    x1, y1, x2, y2 = box
    return (x1 * fw / width, y1 * fh / height, x2 * fw / width, y2 * fh / height)


def to_original(box: Box, width: int, height: int, spec: FrameSpec) -> Box:
    """Map a box from the model's frame to original-image pixels."""
    x1, y1, x2, y2 = box
    if spec.frame is CoordFrame.ORIGINAL:
        return box
    if spec.frame is CoordFrame.NORM1000:
        sx, sy = width / 1000.0, height / 1000.0
    else:
        rw, rh = qwen_resized_size(width, height, spec.min_pixels, spec.max_pixels)
        sx, sy = width / rw, height / rh
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
