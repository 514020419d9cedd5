"""Hand-computed values for every reward component and both presets (docs/grit.md §3)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grit_ray.config import RewardPreset
from grit_ray.grit.grounding import find_boxes, parse_completion
from grit_ray.grit.rewards import (
    RewardConfigError,
    RewardInput,
    RewardSet,
    answer_accuracy,
    answer_bleu,
    answer_format,
    bleu1,
    box_format,
    repetition,
    target_count,
    think_rethink_format,
)

FULL = ("<think> The red square is at [10, 20, 30, 40] and the circle at {\"bbox_2d\": [50, 60, 70, 80]}. </think>"
        " <rethink> The square is left of the circle. </rethink> <answer> Yes</answer>")


def x(completion, reference="Yes", counting=False, judge=None, tokens=None):
    return RewardInput(completion, reference, counting, judge, tokens)


# --- parsing ---------------------------------------------------------------------------------

def test_box_regex_semantics():
    assert find_boxes("[1, 2, 3, 4] {'bbox_2d': [5,6,7,8]} label 9,10,  11,12 and 1 ,2,3,4") == [
        (1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)]
    # all-decimal boxes do not match; a box with one leading decimal matches from the digit after
    # the dot (a word boundary), exactly as the published regex does
    assert find_boxes("[1.5, 2, 3, 4]") == [(5, 2, 3, 4)]
    assert find_boxes("[1, 2, 3]") == [] and find_boxes("1,2,3,4,5") == [(1, 2, 3, 4)]
    assert find_boxes("[10.0, 20.0, 30.0, 40.0]") == []


def test_parse_segments_and_boxes_before_rethink():
    p = parse_completion(FULL + " later box [1, 1, 2, 2]")
    assert p.think.strip().startswith("The red square") and p.rethink.strip().startswith("The square")
    assert p.answer == " Yes" and len(p.boxes) == 3 and len(p.boxes_before_rethink) == 2
    q = parse_completion("no tags [1,2,3,4]")
    assert (q.think, q.rethink, q.answer, q.boxes_before_rethink) == (None, None, None, [])


@given(st.text())
def test_parser_and_components_accept_any_string(s):
    parse_completion(s)
    for preset in RewardPreset:
        values, _ = RewardSet.build(preset).score(x(s, judge=0.5, counting=True, reference="2"))
        assert all(v is None or isinstance(v, float) for v in values.values())


@given(st.text(alphabet="<>/thinkreswa 0123456789,[]", max_size=80))
def test_parser_never_raises_on_tag_soup(s):
    p = parse_completion(s)
    assert len(p.boxes_before_rethink) <= len(p.boxes)


# --- grit-code components --------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (FULL, 0.5),                                              # 4 tags + content bonus = 5/5
    ("<think></think><rethink></rethink>", 0.4),              # 4 tags, empty think: 4/5
    ("<think>x</think><rethink></rethink>", 0.4),             # one-char think: no bonus
    ("<think>ab</think><rethink></rethink>", 0.4),            # one piece: no bonus
    ("<think>a b</think><rethink></rethink>", 0.5),
    ("<think>ab.</think><rethink></rethink>", 0.5),           # as released: 'ab ' splits on ' ' into 2
    ("<think> a b </think>", 0.2),                            # 2 of 4 tags, no bonus
    ("</think><think>", 0.1),                                 # </think> only before <think>: walk finds 1
    ("<rethink></rethink>", 0.2),                             # missing tags do not stop the walk
    # repeated tags: the walk continues after the LAST <think>; the think content is after it
    ("<think>a b</think><think>z</think><rethink></rethink>", 0.4),
    ("", 0.0),
])
def test_think_rethink_format(text, expected):
    assert think_rethink_format(x(text)) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    (FULL, 0.5),
    ("<think> no boxes </think><rethink> [1,2,3,4] </rethink>", 0.0),  # boxes after <rethink> do not count
    ("<think> [1,2,3,4] </think> no rethink", 0.0),                    # needs <rethink>
    ("<think> [1.5,2.5,3.5,4.5] </think><rethink>", 0.0),               # decimals are not boxes
])
def test_box_format(text, expected):
    assert box_format(x(text)) == expected


def test_target_count():
    two = "<think> [1,2,3,4] and [5,6,7,8] </think><rethink> r </rethink><answer> 2"
    assert target_count(x(two, "2", counting=True)) == 1.0
    assert target_count(x(two, "3", counting=True)) == 0.0
    assert target_count(x(two, "2", counting=False)) == 0.0          # per sample: not a counting row
    assert target_count(x("<think> none </think><rethink> r </rethink><answer> 0", "0", counting=True)) == 1.0
    assert target_count(x("<think> none </think> <answer> 0", "0", counting=True)) == 0.0  # needs <rethink>
    after = "<think> [1,2,3,4] </think><rethink> [5,6,7,8] </rethink>"
    assert target_count(x(after, "2", counting=True)) == 0.0          # boxes after <rethink> not counted


@pytest.mark.parametrize("text, expected", [
    ("<answer> a", 0.5), ("<answer> a <answer> b", 0.25), ("no answer", 0.0)])
def test_answer_format(text, expected):
    assert answer_format(x(text)) == expected


def test_answer_bleu_keeps_close_tag_as_released():
    assert answer_bleu(x("<answer> 3</answer>", "3")) == pytest.approx(0.05)   # tokens: 3, answer
    assert answer_bleu(x("<answer> 3", "3")) == pytest.approx(0.1)
    assert answer_bleu(x("no answer", "3")) == 0.0
    # brevity penalty: candidate 'red' vs reference 'the red square' -> p=1, bp=exp(1-3/1)
    assert answer_bleu(x("<answer>red", "the red square")) == pytest.approx(0.1 * 2.718281828 ** -2)


def test_bleu1_clipping():
    assert bleu1(["the", "the", "the"], ["the", "cat"]) == pytest.approx(1 / 3)
    assert bleu1([], ["a"]) == 0.0


def test_answer_accuracy():
    assert answer_accuracy(x("<answer> Yes", judge=0.3)) == 1.0      # training: any score > 0 is 1
    assert answer_accuracy(x("<answer> No", judge=0.0)) == 0.0
    assert answer_accuracy(x("no answer tag", judge=None)) == 0.0    # no <answer>: 0, judge not needed
    assert answer_accuracy(x("<answer> Yes", judge=None)) is None     # judge failed: unknown


def test_repetition():
    short = "one two three"
    assert repetition(x(short)) == 0.5
    varied = " ".join(f"w{i}" for i in range(40))
    assert repetition(x(varied)) == 0.5
    loop = " ".join(["a b c d"] * 10)  # 40 words, 33 8-grams of which 4 distinct
    share = (33 - 4) / 33
    assert repetition(x(loop)) == pytest.approx(0.5 - 2 * share)  # word and token views agree here
    assert repetition(x(loop)) < 0                                 # can go negative
    # with model token ids: only the token view uses them
    assert repetition(x(varied, tokens=[7] * 20)) == pytest.approx(0.5 - 12 / 13)


# --- presets ---------------------------------------------------------------------------------

def test_grit_code_totals_3_1_for_vsr_and_4_1_for_counting():
    rs = RewardSet.build(RewardPreset.GRIT_CODE)
    values, total = rs.score(x(FULL.replace("</answer>", ""), "Yes", judge=1.0))
    assert total == pytest.approx(3.1) and values["target_count"] == 0.0
    count = "<think> two: [1,2,3,4] [5,6,7,8] </think> <rethink> so two </rethink> <answer> 2"
    values, total = rs.score(x(count, "2", counting=True, judge=1.0))
    assert total == pytest.approx(4.1), values


def test_grit_paper_preset():
    rs = RewardSet.build(RewardPreset.GRIT_PAPER)
    assert set(rs.components) == {"think_rethink_format", "box_format", "target_count", "answer_bleu", "answer_accuracy"}
    count = "<think> [1,2,3,4] [5,6,7,8] </think> <rethink> r </rethink> <answer> 2</answer>"
    values, total = rs.score(x(count, "2", counting=True, judge=1.0))
    # r_format 1.5 + r_count 0.5 + r_ans (1 + 0.1 BLEU of '2' vs '2')
    assert values == {"think_rethink_format": 1.0, "box_format": 0.5, "target_count": 0.5, "answer_bleu": 0.1,
                      "answer_accuracy": 1.0}
    assert total == pytest.approx(3.1)
    assert rs.score(x("<think> [1,2,3,4] </think> <answer> 2", "1", counting=True, judge=0.0))[0]["target_count"] == 0.5


def test_judge_failure_makes_total_unknown():
    values, total = RewardSet.build(RewardPreset.GRIT_CODE).score(x(FULL, judge=None))
    assert values["answer_accuracy"] is None and total is None


def test_weights_and_custom_components():
    rs = RewardSet.build(RewardPreset.GRIT_CODE, weights={"repetition": 0.0, "tests.custom_reward:always_two": 3.0},
                         extra=["tests.custom_reward:always_two"])
    values, total = rs.score(x("plain", judge=None))
    assert values["tests.custom_reward:always_two"] == 2.0 and total == pytest.approx(6.0)
    with pytest.raises(RewardConfigError, match="not components of preset"):
        RewardSet.build(RewardPreset.GRIT_CODE, weights={"nope": 1.0})
    with pytest.raises(RewardConfigError, match="expected 'package.module:function'"):
        RewardSet.build(RewardPreset.GRIT_CODE, extra=["tests.custom_reward.always_two"])
    with pytest.raises(RewardConfigError, match="has no attribute"):
        RewardSet.build(RewardPreset.GRIT_CODE, extra=["tests.custom_reward:missing"])
