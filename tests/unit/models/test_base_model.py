"""The tiny base model's corpus and cache: no GRIT question leaks into pretraining, and the cache
builds once per spec (docs/base_model.md; build determinism: tests/integration/test_base_model_build.py)."""

from __future__ import annotations

import random
import re

from PIL import Image

from grit_ray.config import ComparisonOrder, CoordFrame, ModelFamily, PromptTemplate, SynthSpec, TinyModelSpec
from grit_ray.data.corpus import (
    CORNERS,
    GRIT_FORMAT_TASKS,
    RELATION_COORDINATES,
    TASK_WEIGHTS,
    WORKED_TASKS,
    CorpusTask,
    corpus_sample,
    in_frame,
    worked_comparison,
)
from grit_ray.data.synth import SHAPES, synth_rows
from grit_ray.models.tiny import cached_tiny_model
from grit_ray.models.tiny.build import cache_key

# the wording of GRIT's synthetic training and evaluation questions (grit_ray.data.synth)
SYNTH_QUESTION = re.compile(r"^(Is the \w+ \w+ (left of|right of|above|below) the \w+ \w+\?"
                            r"|What is (left of|right of|above|below) the \w+ \w+\?"
                            r"|How many \w+( shapes)? are there\?)$")
RELATION_OR_COUNT = (CorpusTask.COUNT, CorpusTask.RELATE, CorpusTask.SIDE, CorpusTask.COMPARE, CorpusTask.TALLY,
                     CorpusTask.CHAIN)


def _corpus(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [corpus_sample(rng, SynthSpec()) for _ in range(n)]


def test_the_corpus_holds_no_training_or_evaluation_question():
    corpus = _corpus(3000)
    questions = {s.question for s in corpus}
    grit_questions = {row["question"] for spec in (SynthSpec(n=400, seed=0), SynthSpec(n=400, seed=1))
                      for row, _ in synth_rows(spec)}
    assert all(SYNTH_QUESTION.match(q) for q in grit_questions)  # the pattern does catch them
    assert not [q for q in questions if SYNTH_QUESTION.match(q)]
    assert not questions & grit_questions
    # GRIT's answer format appears only for the corpus's colour, shape, existence and corner
    # questions, never with a count or a relation, and both prompt forms occur
    grit_format = [s for s in corpus if "<rethink>" in s.answer]
    assert grit_format and {s.task for s in grit_format} <= set(GRIT_FORMAT_TASKS)
    assert not set(GRIT_FORMAT_TASKS) & set(RELATION_OR_COUNT)
    assert all(s.template is PromptTemplate.GRIT for s in grit_format)
    assert {s.task for s in corpus} == {t for t, w in TASK_WEIGHTS.items() if w > 0}
    # the boxes of a GRIT-format thought do not give the answer away: both answers come boxed
    boxed_exists = {s.short_answer for s in grit_format if s.task is CorpusTask.EXISTS and "[" in s.answer}
    assert boxed_exists == {"Yes", "No"}


def test_chains_come_under_their_own_cue_in_the_corpus_words_never_in_grit_format():
    rng = random.Random(7)
    chains = [corpus_sample(rng, SynthSpec(), task=CorpusTask.CHAIN) for _ in range(300)]
    assert all(s.template is PromptTemplate.BOXES_FIRST for s in chains)
    assert not [s for s in chains if SYNTH_QUESTION.match(s.question)]
    # only chains and worked comparisons come under the cue; the direct prompt is answered in one word
    # or boxes, never worked through
    corpus = _corpus(2000, seed=9)
    assert {s.task for s in corpus if s.template is PromptTemplate.BOXES_FIRST} == set(WORKED_TASKS)
    assert not [s for s in corpus if s.template is PromptTemplate.DIRECT and "So:" in s.answer]
    assert not [s for s in chains if "<think>" in s.answer or "<answer>" in s.answer]
    for s in chains:  # the boxes first, each of a shape in the picture, then the answer
        boxes = [tuple(int(v) for v in b) for b in re.findall(r"\[(\d+), (\d+), (\d+), (\d+)\]", s.answer)]
        assert sorted(boxes) == sorted(s.target_boxes) and set(boxes) <= {o.box for o in s.objects}
        assert s.answer.endswith(f"So: {s.short_answer}") and s.short_answer in {"Yes", "No", *map(str, range(9))}
        if s.short_answer in ("Yes", "No"):  # a relation: its two coordinates compared before the answer
            assert re.search(r"\]\. \d+ [<>=] \d+\. So: (Yes|No)$", s.answer)
    assert {s.answer.rsplit("So: ", 1)[1] for s in chains} >= {"Yes", "No", "0", "1", "2"}


def test_worked_comparisons_compare_the_coordinates_each_relation_tests():
    from grit_ray.data.synth import RELATIONS

    assert set(RELATION_COORDINATES) == set(RELATIONS)
    rng = random.Random(5)
    for _ in range(2000):
        a, b = [sorted(rng.sample(range(60), 2)) + sorted(rng.sample(range(60), 2)) for _ in range(2)]
        a, b = (a[0], a[2], a[1], a[3]), (b[0], b[2], b[1], b[3])  # x1 < x2, y1 < y2
        for relation, holds in RELATIONS.items():
            x, sign, y = worked_comparison(a, b, relation).split()
            # the sign the relation needs ("<" for left/above, ">" for right/below) is there iff it holds
            assert (sign == ("<" if relation in ("left of", "above") else ">")) == holds(a, b)
            assert sign == ("<" if int(x) < int(y) else ">" if int(x) > int(y) else "=")


def test_canonical_comparisons_write_the_box_the_relation_puts_first_and_mean_yes_by_lt():
    from grit_ray.data.synth import RELATIONS

    rng = random.Random(9)
    words = {"left of": "left of", "right of": "right of", "higher up than": "above", "lower down than": "below",
             "to the left of": "left of", "to the right of": "right of"}
    seen = set()
    for task in (CorpusTask.COMPARE, CorpusTask.CHAIN):
        for _ in range(300):
            s = corpus_sample(rng, SynthSpec(), task=task, comparison_order=ComparisonOrder.CANONICAL)
            if not s.short_answer.isalpha():
                continue  # a count chain: no comparison
            asked = re.search(r"Is the (\w+ \w+) (to the left of|to the right of|left of|right of|higher up than|"
                              r"lower down than) the (\w+ \w+)\?", s.question)
            names, relation = [asked[1], asked[3]], words[asked[2]]
            text = s.question if task is CorpusTask.COMPARE else s.answer
            first, second = [tuple(int(v) for v in m) for m in re.findall(r"\[(\d+), (\d+), (\d+), (\d+)\]", text)]
            written = re.findall(r"[Tt]he (\w+ \w+) (?:is )?at", text)
            a_first = relation in ("left of", "above")
            assert written == (names if a_first else names[::-1])  # the box the relation puts first, first
            a, b = (first, second) if a_first else (second, first)
            x, sign, y = worked_comparison(a, b, relation, ComparisonOrder.CANONICAL).split()
            assert (sign == "<") == RELATIONS[relation](a, b) == (s.short_answer == "Yes")
            assert s.answer.endswith(f"{x} {sign} {y}. So: {s.short_answer}")
            seen.add((task, relation))
    assert len(seen) == 8  # both tasks, every relation


def test_the_default_order_is_recipe_7s_corpus_and_cache_key():
    rng_a, rng_b = random.Random(11), random.Random(11)
    for _ in range(200):
        a = corpus_sample(rng_a, SynthSpec())
        b = corpus_sample(rng_b, SynthSpec(), comparison_order=ComparisonOrder.AS_ASKED)
        assert (a.question, a.answer) == (b.question, b.answer)
    default = TinyModelSpec()
    canonical = TinyModelSpec(pretrain={"comparison_order": "canonical"})
    assert cache_key(default) == cache_key(TinyModelSpec(pretrain={"comparison_order": "as-asked"}))
    assert cache_key(canonical) != cache_key(default)
    assert cache_key(default) == "9cffba9c648489cf"  # the default base model of the docs and the caches


def test_text_comparisons_answer_from_the_boxes_given():
    from grit_ray.data.synth import RELATIONS

    rng = random.Random(8)
    words = {"left of": "left of", "right of": "right of", "higher up than": "above", "lower down than": "below"}
    answers = []
    for _ in range(300):
        s = corpus_sample(rng, SynthSpec(), task=CorpusTask.COMPARE)
        a, b = [tuple(int(v) for v in m) for m in re.findall(r"\[(\d+), (\d+), (\d+), (\d+)\]", s.question)]
        relation = next(r for w, r in words.items() if f" {w} the " in s.question)
        assert s.short_answer == ("Yes" if RELATIONS[relation](a, b) else "No")
        assert s.template is PromptTemplate.BOXES_FIRST  # worked through under the cue, never asked directly
        assert s.answer == f"{worked_comparison(a, b, relation)}. So: {s.short_answer}"
        assert not re.search(r"\b(above|below)\b", s.question)  # held out for GRIT training
        answers.append(s.short_answer)
    assert 0.4 < answers.count("Yes") / len(answers) < 0.6


def test_count_questions_ask_for_every_count_alike():
    counts = [int(s.answer) for s in _corpus(3000, seed=2) if s.task is CorpusTask.COUNT]
    assert sorted(set(counts)) == [0, 1, 2, 3, 4]
    assert min(counts.count(c) for c in range(5)) > len(counts) / 10


def test_corner_questions_answer_the_named_shape_and_are_the_only_numbers_in_grit_format():
    corpus = _corpus(1500, seed=3)
    corners = [s for s in corpus if s.task is CorpusTask.CORNERS]
    assert set(CORNERS) == set(SHAPES)
    for s in corners:
        colour = s.question.split()[5]  # "How many corners does the <colour> one have?"
        (named,) = [o for o in s.objects if o.colour == colour]
        assert s.short_answer == {"triangle": "3", "square": "4", "circle": "0"}[named.shape]
        assert s.target_boxes == [named.box]
        if s.template is PromptTemplate.GRIT:
            assert s.answer.endswith(f"<answer> {s.short_answer} </answer>")
    grit_thoughts = [s.answer for s in corners if s.template is PromptTemplate.GRIT]
    assert any("[" in a for a in grit_thoughts) and any("[" not in a for a in grit_thoughts)
    numeric = [s for s in corpus if "<answer> " in s.answer and s.answer.split("<answer> ")[1][0].isdigit()]
    assert numeric and {s.task for s in numeric} == {CorpusTask.CORNERS}


def test_corpus_boxes_are_the_objects_in_the_picture():
    for s in _corpus(300, seed=1):
        assert s.image.size[0] % 28 == 0 and s.image.size[1] % 28 == 0
        boxes = {o.box for o in s.objects}
        assert set(s.target_boxes) <= boxes
        if s.task is CorpusTask.WHERE:
            (box,) = s.target_boxes
            assert s.answer == f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]"


def test_the_internvl_corpus_writes_the_same_scenes_in_norm1000():
    """The InternVL3 base model learns boxes in its own frame: the same draws, every box scaled to
    0-1000 of its image (questions, relations and counts unchanged; listings are read in bands of
    the frame, so their order may differ)."""
    rng_a, rng_b = random.Random(4), random.Random(4)
    for _ in range(300):
        a = corpus_sample(rng_a, SynthSpec())
        b = corpus_sample(rng_b, SynthSpec(), box_frame=CoordFrame.NORM1000)
        assert (a.task, a.objects) == (b.task, b.objects)
        # questions that give boxes in the text give them in the family's frame
        mask = lambda q: re.sub(r"\[\d+, \d+, \d+, \d+\]", "[box]", q)  # noqa: E731
        if a.task is CorpusTask.TALLY:  # a listing, read in bands of the frame: the same shapes, maybe reordered
            assert sorted(re.findall(r"(\w+ \w+) \[", a.question)) == sorted(re.findall(r"(\w+ \w+) \[", b.question))
        else:
            assert mask(a.question) == mask(b.question)
        assert (a.question == b.question) == (a.task not in (CorpusTask.COMPARE, CorpusTask.TALLY) or "[" not in a.question)
        w, h = a.image.size
        assert b.target_boxes == [in_frame(box, w, h, CoordFrame.NORM1000) for box in a.target_boxes]
        assert all(0 <= v <= 1000 for box in b.target_boxes for v in box)
        if a.task is CorpusTask.WHERE:
            (box,) = b.target_boxes
            assert b.answer == f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]" != a.answer


def test_the_cache_builds_once_per_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIT_RAY_CACHE", str(tmp_path))
    messages: list[str] = []
    spec = TinyModelSpec.plumbing(seed=5)
    first = cached_tiny_model(spec, log=messages.append)
    again = cached_tiny_model(spec, log=messages.append)
    other = cached_tiny_model(TinyModelSpec.plumbing(seed=6), log=messages.append)
    assert first == again != other and first.parent == tmp_path / "models"
    assert len([m for m in messages if m.startswith("building")]) == 2
    assert not list((tmp_path / "models").glob(".building-*"))
    internvl = cached_tiny_model(spec, log=messages.append, family=ModelFamily.INTERNVL3)
    assert internvl != first and internvl.name.startswith("tiny-internvl3-") and first.name.startswith("tiny-qwen2.5-vl-")


def test_image_token_targets_mark_the_cell_of_each_shape_centre():
    import torch

    from grit_ray.data.corpus import CorpusSample
    from grit_ray.data.synth import COLOURS, SHAPES, Obj
    from grit_ray.models.tiny import number_sinusoids
    from grit_ray.models.tiny.pretrain import image_token_targets

    # a 168x140 image: 5 rows x 6 columns of 28-px cells
    red = Obj("red", "circle", (60, 10, 90, 40))  # centre (75, 25): row 0, column 2
    blue = Obj("blue", "triangle", (0, 112, 30, 140))  # centre (15, 126): row 4, column 0
    s = CorpusSample(Image.new("RGB", (168, 140)), [red, blue], CorpusTask.WHERE, PromptTemplate.DIRECT, "", "", [], "")
    colour, kind, centre, has, frac, sines = image_token_targets(s, (5, 6), CoordFrame.NORM1000, 1001, 8)
    assert has.nonzero().flatten().tolist() == [2, 24]
    assert colour[2] == list(COLOURS).index("red") + 1 and kind[24] == SHAPES.index("triangle") + 1
    assert colour.count_nonzero() == kind.count_nonzero() == 2  # "none" everywhere else
    assert torch.allclose(centre[24], torch.tensor([0.5 / 6, 4.5 / 5]))
    assert torch.allclose(frac[2], torch.tensor([60 / 168, 10 / 140, 90 / 168, 40 / 140]))
    # the sinusoids of the coordinates the family writes (0-1000 here, not pixels), as the number tokens start
    assert torch.allclose(sines[24], number_sinusoids(torch.tensor(in_frame(blue.box, 168, 140, CoordFrame.NORM1000)),
                                                      8, 1001).flatten())
