"""Prompt builders: the GRIT suffix as published, and the baselines it is compared with.

GRIT prompt (docs/grit.md §1): one user turn with the image, then
``"\\nQuestion: " + question + SUFFIX``; no custom system prompt (the model's template default).
"""

from __future__ import annotations

from typing import Any

from grit_ray.config import PromptTemplate
from grit_ray.grit.grounding import answer_text

GRIT_SUFFIX = (
    " First, think between <think> and </think> while output necessary coordinates needed to answer the question "
    "in JSON with key 'bbox_2d'. Then, based on the thinking contents and coordinates, rethink between <rethink> "
    "</rethink> and then answer the question after <answer>.\n"
)
# Baselines of the paper's comparison: the bare question, and a text-only chain of thought.
DIRECT_SUFFIX = "\n"
COT_SUFFIX = " Think step by step between <think> and </think>, then answer the question after <answer>.\n"

# The tiny base model's corpus cue for a grounded chain in its own words (not GRIT's format): the boxes
# it needs, then "So: <answer>" (docs/base_model.md). A baseline row beside GRIT's, never GRIT's prompt.
BOXES_FIRST_SUFFIX = " Show the boxes first.\n"
BOXES_FIRST_ANSWER = "So:"
_SUFFIXES = {PromptTemplate.GRIT: GRIT_SUFFIX, PromptTemplate.DIRECT: DIRECT_SUFFIX, PromptTemplate.COT: COT_SUFFIX,
             PromptTemplate.BOXES_FIRST: BOXES_FIRST_SUFFIX}


def plain_reply_answer(completion: str, template: PromptTemplate) -> str | None:
    """The answer of a reply outside GRIT's format: a direct reply is its answer, a boxes-first one
    what follows its last "So:" (the whole reply when it has none); None for the other templates,
    whose answer follows ``<answer>``."""
    if template is PromptTemplate.DIRECT:
        return completion
    if template is PromptTemplate.BOXES_FIRST:
        return completion.rsplit(BOXES_FIRST_ANSWER, 1)[-1]
    return None


def judged_answer(completion: str, template: PromptTemplate) -> str | None:
    """The answer the judge scores: the text after ``<answer>`` where the completion has one (in any
    template), else the reply's own answer under a template outside GRIT's format
    (``plain_reply_answer``); None when it gives none."""
    ans = answer_text(completion)
    return ans if ans is not None else plain_reply_answer(completion, template)


def user_text(question: str, template: PromptTemplate = PromptTemplate.GRIT) -> str:
    """The text that follows the image in the user turn."""
    return "\nQuestion: " + question + _SUFFIXES[template]


def chat_messages(question: str, template: PromptTemplate = PromptTemplate.GRIT) -> list[dict[str, Any]]:
    """One user turn: the image, then the question with the template's suffix (the model's chat
    template lays the parts out: the tiny base models' puts the text first, docs/base_model.md)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text(question, template)}]}]
