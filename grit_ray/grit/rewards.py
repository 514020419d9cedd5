"""GRIT reward components: small pure functions, registered by name, combined by presets.

Each component takes one ``RewardInput`` (a completion and its data row) and returns a float
(``answer_accuracy`` returns None when the judge failed: unknown, not zero). Two presets
(docs/grit.md §3):

- ``grit-code``: the released code exactly (all components, weight 1; 3.1 max for VSR rows,
  4.1 for counting rows). Counting is decided per sample from the row's dataset.
- ``grit-paper``: the paper's equations, r = r_format + r_count + r_ans.

Custom components are named by import path ``package.module:function`` with the same signature.
"""

from __future__ import annotations

import importlib
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grit_ray.config import PromptTemplate, RewardPreset
from grit_ray.grit.grounding import (
    ANSWER_OPEN,
    RETHINK_CLOSE,
    RETHINK_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    answer_text,
    before_first_rethink,
    find_boxes,
)
from grit_ray.grit.prompts import judged_answer

REPETITION_NGRAM = 8


@dataclass(frozen=True)
class RewardInput:
    completion: str
    reference: str  # the row's answer
    is_counting: bool  # the row's dataset is a counting dataset (TallyQA)
    judge_score: float | None = None  # raw judge score of the answer; None: failed or not asked
    token_ids: Sequence[int] | None = None  # the completion's tokens, for the token n-gram check
    # how the question was asked: under the direct prompt (or the boxes-first cue) the reply is the
    # answer the judge scored, with no <answer> (grit.prompts.judged_answer)
    template: PromptTemplate = PromptTemplate.GRIT


RewardFn = Callable[[RewardInput], "float | None"]


# ---------------------------------------------------------------------------------------------
# released-code components (grit-code)


def think_rethink_format(x: RewardInput) -> float:
    """Walk <think>, </think>, <rethink>, </rethink> in order; each found scores 1 and the walk goes on
    after its last occurrence (a missing tag scores 0 and the walk goes on from the same place). With
    all four, +1 when the think content has more than one word-like piece. Total / 5 x 0.5."""
    text, pos, found = x.completion, 0, 0
    for tag in (THINK_OPEN, THINK_CLOSE, RETHINK_OPEN, RETHINK_CLOSE):
        if text.find(tag, pos) >= 0:
            found += 1
            pos = text.rfind(tag) + len(tag)
    score = float(found)
    if found == 4:
        start = text.rfind(THINK_OPEN) + len(THINK_OPEN)
        end = text.find(THINK_CLOSE, start)
        content = text[start:end if end >= 0 else len(text)].strip()
        # as released: split on ' ' (not any whitespace) after blanking non-alphanumerics
        if len(content) > 1 and len(re.sub(r"[^a-zA-Z0-9]", " ", content).split(" ")) > 1:
            score += 1
    return score / 5 * 0.5


def box_format(x: RewardInput) -> float:
    """0.5 when at least one box stands before the first <rethink> (0 without <rethink>)."""
    head = before_first_rethink(x.completion)
    return 0.5 if head is not None and find_boxes(head) else 0.0


def _as_count(reference: str) -> int | None:
    s = reference.strip()
    return int(s) if s.isdigit() else None


def target_count(x: RewardInput) -> float:
    """Counting rows only, needs <rethink>: 1.0 when the boxes before it number int(answer)."""
    head = before_first_rethink(x.completion)
    count = _as_count(x.reference)
    if not x.is_counting or head is None or count is None:
        return 0.0
    return 1.0 if len(find_boxes(head)) == count else 0.0


def answer_format(x: RewardInput) -> float:
    """(+1 if <answer> occurs, +1 more if exactly once) x 0.25."""
    n = x.completion.count(ANSWER_OPEN)
    return ((n > 0) + (n == 1)) * 0.25


def _ngram_duplicate_share(items: Sequence, n: int) -> float:
    """Share of n-grams equal to their neighbour once sorted, i.e. (count - distinct) / count."""
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def _tokens(x: RewardInput) -> Sequence:
    # the model's tokens when known; otherwise words and punctuation marks as a stand-in
    return x.token_ids if x.token_ids is not None else re.findall(r"\w+|[^\w\s]", x.completion)


def repetition(x: RewardInput) -> float:
    """0.5 minus the duplicate share of 8-word and of 8-token n-grams (can go negative; 0.5 when the
    completion is shorter than 8 words/tokens)."""
    words = x.completion.split()
    return 0.5 - _ngram_duplicate_share(words, REPETITION_NGRAM) - _ngram_duplicate_share(_tokens(x), REPETITION_NGRAM)


def _bleu_clean(text: str) -> list[str]:
    return re.sub(r"[^a-zA-Z0-9\s]", " ", text).lower().split()


def bleu1(candidate: list[str], reference: list[str]) -> float:
    """Sentence BLEU-1: clipped unigram precision x brevity penalty."""
    if not candidate or not reference:
        return 0.0
    ref_counts = Counter(reference)
    clipped = sum(min(c, ref_counts[w]) for w, c in Counter(candidate).items())
    precision = clipped / len(candidate)
    c, r = len(candidate), len(reference)
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return precision * bp


def answer_bleu(x: RewardInput) -> float:
    """0.1 x BLEU-1 of the text after the first <answer> (</answer> left in, as released) vs the reference."""
    ans = answer_text(x.completion, strip_close=False)
    return 0.0 if ans is None else 0.1 * bleu1(_bleu_clean(ans), _bleu_clean(x.reference))


def answer_accuracy(x: RewardInput) -> float | None:
    """Judge score binarised for training (any score > 0 is 1.0); 0 without an answer (under GRIT's
    prompt: without <answer>); None if the judge failed."""
    if judged_answer(x.completion, x.template) is None:
        return 0.0
    if x.judge_score is None:
        return None
    return 1.0 if x.judge_score > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# paper components (grit-paper): r_format + r_count + r_ans


def _pair_in_order(text: str, open_tag: str, close_tag: str) -> bool:
    i = text.find(open_tag)
    return i >= 0 and text.find(close_tag, i + len(open_tag)) >= 0


def paper_think_rethink_format(x: RewardInput) -> float:
    """0.5 [think pair in order] + 0.5 [rethink pair in order]."""
    return 0.5 * _pair_in_order(x.completion, THINK_OPEN, THINK_CLOSE) + 0.5 * _pair_in_order(
        x.completion, RETHINK_OPEN, RETHINK_CLOSE
    )


def _chain_boxes(text: str) -> list:
    head = before_first_rethink(text)
    return find_boxes(head if head is not None else text)


def paper_box_format(x: RewardInput) -> float:
    """0.5 [at least one box in the reasoning chain (before <rethink>, or anywhere without it)]."""
    return 0.5 if _chain_boxes(x.completion) else 0.0


def paper_target_count(x: RewardInput) -> float:
    """0.5 on counting rows when the chain's boxes number the ground-truth count."""
    count = _as_count(x.reference)
    if not x.is_counting or count is None:
        return 0.0
    return 0.5 if len(_chain_boxes(x.completion)) == count else 0.0


def paper_answer_bleu(x: RewardInput) -> float:
    """0.1 x BLEU-1 of the answer (cut at </answer>) vs the reference."""
    ans = answer_text(x.completion)
    return 0.0 if ans is None else 0.1 * bleu1(_bleu_clean(ans), _bleu_clean(x.reference))


# ---------------------------------------------------------------------------------------------
# registry and presets

PRESETS: dict[RewardPreset, dict[str, RewardFn]] = {
    RewardPreset.GRIT_CODE: {
        "think_rethink_format": think_rethink_format,
        "box_format": box_format,
        "target_count": target_count,
        "answer_format": answer_format,
        "repetition": repetition,
        "answer_bleu": answer_bleu,
        "answer_accuracy": answer_accuracy,
    },
    RewardPreset.GRIT_PAPER: {
        "think_rethink_format": paper_think_rethink_format,
        "box_format": paper_box_format,
        "target_count": paper_target_count,
        "answer_bleu": paper_answer_bleu,
        "answer_accuracy": answer_accuracy,
    },
}


class RewardConfigError(ValueError):
    pass


def import_by_path(path: str, what: str, form: str) -> Any:
    """``'package.module:name'`` -> the object; errors name ``what`` (the config key) and ``form``."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RewardConfigError(f"{what} {path!r}: expected '{form}'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise RewardConfigError(f"{what} {path!r}: {e}") from None


def import_component(path: str) -> RewardFn:
    """``'package.module:function'`` -> the function."""
    fn = import_by_path(path, "reward component", "package.module:function")
    if not callable(fn):
        raise RewardConfigError(f"reward component {path!r} is not callable")
    return fn


@dataclass(frozen=True)
class RewardSet:
    """The components of a run with their weights."""

    components: dict[str, RewardFn]
    weights: dict[str, float]

    @classmethod
    def build(
        cls, preset: RewardPreset, weights: Mapping[str, float] | None = None, extra: Sequence[str] = ()
    ) -> RewardSet:
        components = dict(PRESETS[preset])
        for path in extra:
            components[path] = import_component(path)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(components))
        if unknown:
            raise RewardConfigError(
                f"reward.weights names {unknown}, not components of preset {preset.value} "
                f"(components: {sorted(components)})"
            )
        return cls(components, {name: float(weights.get(name, 1.0)) for name in components})

    def score(self, x: RewardInput) -> tuple[dict[str, float | None], float | None]:
        """(component -> value, weighted total); the total is None when any component is unknown."""
        values = {name: fn(x) for name, fn in self.components.items()}
        known = {n: v for n, v in values.items() if v is not None}
        if len(known) < len(values):
            return values, None
        return values, sum(self.weights[n] * v for n, v in known.items())
