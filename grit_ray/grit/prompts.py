"""Prompt builders: the GRIT suffix as published, and the baselines it is compared with.

GRIT prompt (docs/grit.md §1): one user turn with the image, then
``"\\nQuestion: " + question + SUFFIX``; no custom system prompt (the model's template default).
"""

from __future__ import annotations

from typing import Any

from grit_ray.config import PromptTemplate

GRIT_SUFFIX = (
    " First, think between <think> and </think> while output necessary coordinates needed to answer the question "
    "in JSON with key 'bbox_2d'. Then, based on the thinking contents and coordinates, rethink between <rethink> "
    "</rethink> and then answer the question after <answer>.\n"
)
# Baselines of the paper's comparison: the bare question, and a text-only chain of thought.
DIRECT_SUFFIX = "\n"
COT_SUFFIX = " Think step by step between <think> and </think>, then answer the question after <answer>.\n"

_SUFFIXES = {PromptTemplate.GRIT: GRIT_SUFFIX, PromptTemplate.DIRECT: DIRECT_SUFFIX, PromptTemplate.COT: COT_SUFFIX}


def user_text(question: str, template: PromptTemplate = PromptTemplate.GRIT) -> str:
    """The text that follows the image in the user turn."""
    return "\nQuestion: " + question + _SUFFIXES[template]


def chat_messages(question: str, template: PromptTemplate = PromptTemplate.GRIT) -> list[dict[str, Any]]:
    """One user turn: the image, then the question with the template's suffix."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text(question, template)}]}]
