"""The tiny base model's pretraining corpus (docs/base_model.md): the analogue of what a pretrained
VLM knows of its world before GRIT training.

Samples are drawn from the synthetic world of ``synth`` (same shapes, colours, backdrop and image
sizes) with their own seeds. The corpus teaches the model to *see* that world, asked directly:
where a named shape is (named by its kind, its colour or both, in contrastive scenes), every shape
of a colour or kind with its box, colours, shapes, existence, counts, relations and sides, captions;
the two skills a grounded chain needs after its boxes, with the boxes given in the text (comparing
two boxes, worked through the two coordinates the relation compares; counting the boxes of a
listing); and short grounded chains in its own words, under its own cue
(``PromptTemplate.BOXES_FIRST``). Some kinds (colour, shape, existence, corners) also come with
GRIT's prompt and an answer in GRIT's format, so the model knows the format the way an
instruction-tuned VLM does. It never holds GRIT's training or evaluation questions, nor GRIT's
format with a relation or a count of shapes: RL must teach the model to answer GRIT's questions
with grounded reasoning (tests/unit/models/test_base_model.py checks both).
"""

from __future__ import annotations

import enum
import io
import random
from dataclasses import dataclass, replace

from PIL import Image

from grit_ray.config import ComparisonOrder, CoordFrame, PromptTemplate, SynthSpec
from grit_ray.data.synth import COLOURS, RELATIONS, SHAPES, Obj, image_side, random_kinds, render, scatter, unique_by
from grit_ray.grit.grounding import FrameSpec, from_original

PRETRAIN_SEED_OFFSET = 7_000_003  # corpus scenes never share a random stream with `grit-ray data synth` seeds
PROBE_SEED_OFFSET = 9_000_011
MAX_OBJECTS = 8  # as many shapes as the synthetic data's counting scenes hold


class CorpusTask(str, enum.Enum):
    WHERE = "where"  # "Where is the red circle?" -> "[x1, y1, x2, y2]"
    FIND = "find"  # "Find every red shape." -> "red circle [..], red square [..]" or "none"
    LIST = "list"  # "List the shapes." -> every shape with its box, top to bottom
    COLOUR = "colour"  # "What colour is the circle?" -> "red"
    SHAPE = "shape"  # "What shape is the red one?" -> "circle"
    EXISTS = "exists"  # "Is a red circle in the picture?" -> "Yes" / "No"
    COUNT = "count"  # "Count the red shapes." / "How many red shapes can you see?" -> "2"
    RELATE = "relate"  # "Is the red circle to the left of the blue square?" -> "Yes" / "No"
    SIDE = "side"  # "Which side of the blue square is the red circle on?" -> "left"
    CAPTION = "caption"  # "Describe the image." -> "A red circle and a blue square."
    CORNERS = "corners"  # "How many corners does the red one have?" -> "3" (a triangle; a square 4, a circle 0)
    # the two skills a grounded chain needs after its boxes, with the boxes given in the text
    COMPARE = "compare"  # "The red circle is at [..] and the blue square at [..]. Is the red circle left of the
    #                      blue square? Show the boxes first." -> "40 < 62. So: Yes" (under the cue: worked)
    TALLY = "tally"  # "Count the boxes: red circle [..], red square [..]." -> "2"
    # both in one answer, under a cue of the corpus's own (never GRIT's prompt or format): boxes, then the answer
    CHAIN = "chain"  # "Is the red circle to the left of the blue square? Show the boxes first." ->
    #                  "The red circle is at [..]. The blue square is at [..]. 40 < 62. So: Yes"


# sampling weights: selection dominates (every grounded chain starts by picking out the named shapes)
TASK_WEIGHTS = {CorpusTask.WHERE: 5, CorpusTask.FIND: 2, CorpusTask.LIST: 1, CorpusTask.COLOUR: 1,
                CorpusTask.SHAPE: 1, CorpusTask.EXISTS: 2, CorpusTask.COUNT: 2, CorpusTask.RELATE: 2,
                CorpusTask.SIDE: 1, CorpusTask.CAPTION: 1, CorpusTask.CORNERS: 2, CorpusTask.COMPARE: 6,
                CorpusTask.TALLY: 2, CorpusTask.CHAIN: 6}
# scene sizes (shapes) of the non-counting tasks, 1..MAX_OBJECTS: mostly the 2-4 shapes where
# naming one matters, up to the crowded scenes of the evaluation's counting rows
SCENE_SIZE_WEIGHTS = (1, 3, 3, 3, 2, 1, 1, 1)
CONTRAST_SHARE = 0.6  # a "where" scene holds a shape of the target's colour, and one of its kind, this often
# the selection phase (model.tiny.pretrain.selection_share of the steps): "where" only, in contrastive
# scenes, so that picking out the named shape is learnt before anything is built on it
SELECTION_PHASE_WEIGHTS = {CorpusTask.WHERE: 1}
MAX_COUNT = 4  # count questions ask for 0..4 targets, uniformly
# corners: a number answered in GRIT's format that counts no shapes, so that a number can follow
# <answer> at all (GRIT's format is never shown with a count of shapes: docs/base_model.md)
GRIT_FORMAT_TASKS = (CorpusTask.COLOUR, CorpusTask.SHAPE, CorpusTask.EXISTS, CorpusTask.CORNERS)
WORKED_TASKS = (CorpusTask.COMPARE, CorpusTask.CHAIN)  # answered step by step, "So: <answer>" last, under the cue
CORNERS = {"square": 4, "circle": 0, "triangle": 3}
PRESENT_SHARE = 0.8  # find asks mostly about colours and kinds in the picture ("none" is the easy guess)
# the relations of COMPARE in the data's words, but for "above"/"below": those two stay held out
# for GRIT training to generalise to (docs/base_model.md)
COMPARE_WORDS = {"left of": "left of", "right of": "right of", "above": "higher up than", "below": "lower down than"}
# ComparisonOrder.AS_ASKED (recipe 7): the coordinates (of a's box, of b's) that each of synth.RELATIONS
# compares: "a left of b" is a.x2 < b.x1. A comparison is worked through them ("40 < 62"): the tiny model
# learns to copy one coordinate and to compare two numbers side by side, but not both in one step; and
# "<" means Yes for left and above, No for right and below
RELATION_COORDINATES = {"left of": (2, 0), "right of": (0, 2), "above": (3, 1), "below": (1, 3)}
# ComparisonOrder.CANONICAL (build 9): the two boxes in the order in which the relation puts the smaller
# coordinate first ("a right of b" is b.x2 < a.x1: b's box first), in a comparison's question as in a
# chain; then the first box's far edge against the second's near edge on the relation's axis, "<" iff
# it holds. The answer follows the sign alone: with recipe 7's order the whole-corpus model wrote the
# right sign 77% of the time and answered at chance (docs/base_model.md, "Why this recipe")
CANONICAL_FIRST = {"left of": 0, "right of": 1, "above": 0, "below": 1}  # which of (a, b) comes first
AXIS_COORDINATES = {"left of": (2, 0), "right of": (2, 0), "above": (3, 1), "below": (3, 1)}  # (first's, second's)
# the corpus's own wording of synth.RELATIONS ("entirely", as there)
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "higher up than",
                  "below": "lower down than"}
# which side of b the object a lies on (asked when exactly one holds): synth.RELATIONS by a side's name
SIDES = {"left": RELATIONS["left of"], "right": RELATIONS["right of"], "above": RELATIONS["above"],
         "below": RELATIONS["below"]}
GRIT_FORMAT_SHARE = 0.5  # of those kinds' samples, asked with GRIT's prompt and answered in its format
BOXED_THINK_SHARE = 0.25  # of GRIT-format answers, the think names the object's box


@dataclass
class CorpusSample:
    image: Image.Image
    objects: list[Obj]
    task: CorpusTask
    template: PromptTemplate
    question: str
    answer: str  # the assistant turn
    target_boxes: list[tuple[int, int, int, int]]  # the boxes a grounded answer should give
    short_answer: str  # what a direct answer says


def box_text(box) -> str:
    return f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]"


def _listing(objs: list[Obj]) -> str:
    return ", ".join(f"{o.name} {box_text(o.box)}" for o in _reading_order(objs)) or "none"


def _reading_order(objs: list[Obj]) -> list[Obj]:
    return sorted(objs, key=lambda o: (o.box[1] // 20, o.box[0]))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _grit_answer(think: str, rethink: str, answer: str) -> str:
    return f"<think> {think} </think> <rethink> {rethink} </rethink> <answer> {answer} </answer>"


@dataclass(frozen=True)
class _Asked:
    question: str
    answer: str  # the direct answer
    targets: list  # boxes a grounded answer gives
    think: str = ""  # the GRIT-format answer: think naming the boxes,
    plain_think: str = ""  # the same thought without them,
    rethink: str = ""  # and the reflection
    short: str = ""  # the final answer where the direct answer says more (a chain's last word)


def _balanced_relation(rng: random.Random, named: list[Obj]) -> tuple[Obj, Obj, str, bool]:
    """Two named shapes, a relation and whether it holds: as many "Yes" as "No" where the scene
    allows (a lopsided share is learnt as the answer)."""
    asked = [(a, b, rel, RELATIONS[rel](a.box, b.box)) for a in named for b in named if a is not b for rel in RELATIONS]
    want = rng.random() < 0.5
    return rng.choice([q for q in asked if q[3] == want] or asked)


def ordered_pair(a, b, relation: str, order: ComparisonOrder = ComparisonOrder.AS_ASKED) -> tuple:
    """(a, b) in the order a worked comparison of ``relation`` writes their boxes."""
    return (b, a) if order is ComparisonOrder.CANONICAL and CANONICAL_FIRST[relation] else (a, b)


def worked_comparison(a_box, b_box, relation: str, order: ComparisonOrder = ComparisonOrder.AS_ASKED) -> str:
    """The two coordinates ``relation`` compares and their order: "40 < 62" ("=" when equal). As
    asked: a's, then b's (``RELATION_COORDINATES``); canonical: the first box's far edge against the
    second's near edge, "<" iff the relation holds."""
    if order is ComparisonOrder.CANONICAL:
        first, second = ordered_pair(a_box, b_box, relation, order)
        i, j = AXIS_COORDINATES[relation]
        x, y = first[i], second[j]
    else:
        i, j = RELATION_COORDINATES[relation]
        x, y = a_box[i], b_box[j]
    return f"{x} {'<' if x < y else '>' if x > y else '='} {y}"


def _ask(rng: random.Random, objs: list[Obj], task: CorpusTask,
         order: ComparisonOrder = ComparisonOrder.AS_ASKED) -> _Asked | None:
    """The question of ``task`` about this scene and its answers, or None when the scene cannot pose it;
    comparisons and chains write their two boxes in ``order``."""
    if task is CorpusTask.WHERE:
        # the shape is named by whatever singles it out: its kind, its colour or both
        refs = [(o, f"the {o.shape}") for o in unique_by(objs, lambda o: o.shape)]
        refs += [(o, f"the {o.colour} one") for o in unique_by(objs, lambda o: o.colour)]
        refs += [(o, f"the {o.name}") for o in unique_by(objs, lambda o: o.name)]
        if not refs:
            return None
        o, ref = rng.choice(refs)
        return _Asked(f"Where is {ref}?", box_text(o.box), [o.box])
    if task is CorpusTask.COMPARE:  # two boxes given in the text: the relation worked from their numbers alone
        named = unique_by(objs, lambda o: o.name)
        if len(named) < 2:
            return None
        a, b, relation, holds = _balanced_relation(rng, named)
        word = "Yes" if holds else "No"
        first, second = ordered_pair(a, b, relation, order)
        return _Asked(f"The {first.name} is at {box_text(first.box)} and the {second.name} at {box_text(second.box)}. "
                      f"Is the {a.name} {COMPARE_WORDS[relation]} the {b.name}?",
                      f"{worked_comparison(a.box, b.box, relation, order)}. So: {word}", [], short=word)
    if task is CorpusTask.TALLY:  # boxes given in the text, counted
        by_colour = rng.random() < 0.5
        key = rng.choice(list(COLOURS)) if by_colour else rng.choice(SHAPES)
        hits = [o for o in objs if (o.colour if by_colour else o.shape) == key]
        return _Asked(f"Count the boxes: {_listing(hits)}.", str(len(hits)), [])
    if task is CorpusTask.FIND:
        by_colour = rng.random() < 0.5
        present = rng.random() < PRESENT_SHARE
        o = rng.choice(objs)
        key = (o.colour if by_colour else o.shape) if present else \
            (rng.choice(list(COLOURS)) if by_colour else rng.choice(SHAPES))
        hits = [o for o in objs if (o.colour if by_colour else o.shape) == key]
        noun = f"{key} shape" if by_colour else key
        return _Asked(f"Find every {noun}.", _listing(hits), [o.box for o in hits])
    if task is CorpusTask.RELATE:
        named = unique_by(objs, lambda o: o.name)
        if len(named) < 2:
            return None
        a, b, relation, holds = _balanced_relation(rng, named)
        return _Asked(f"Is the {a.name} {RELATION_WORDS[relation]} the {b.name}?", "Yes" if holds else "No",
                      [a.box, b.box])
    if task is CorpusTask.SIDE:
        named = unique_by(objs, lambda o: o.name)
        sides_of = [(a, b, [side for side, test in SIDES.items() if test(a.box, b.box)])
                    for a in named for b in named if a is not b]
        pairs = [(a, b, sides[0]) for a, b, sides in sides_of if len(sides) == 1]
        if not pairs:
            return None
        a, b, side = rng.choice(pairs)
        return _Asked(f"Which side of the {b.name} is the {a.name} on?", side, [a.box, b.box])
    if task is CorpusTask.CHAIN:  # a relation or a count, the boxes it needs written first
        if rng.random() < 0.5 and len(named := unique_by(objs, lambda o: o.name)) >= 2:
            a, b, relation, holds = _balanced_relation(rng, named)
            word = "Yes" if holds else "No"
            first, second = ordered_pair(a, b, relation, order)
            return _Asked(f"Is the {a.name} {RELATION_WORDS[relation]} the {b.name}?",
                          f"The {first.name} is at {box_text(first.box)}. The {second.name} is at "
                          f"{box_text(second.box)}. {worked_comparison(a.box, b.box, relation, order)}. So: {word}",
                          [first.box, second.box], short=word)
        by_colour = rng.random() < 0.5
        key = rng.choice(list(COLOURS)) if by_colour else rng.choice(SHAPES)
        hits = [o for o in objs if (o.colour if by_colour else o.shape) == key]
        noun = f"{key} shape" if by_colour else key
        return _Asked(f"Count the {noun}s.", f"{_listing(hits)}. So: {len(hits)}", [o.box for o in hits],
                      short=str(len(hits)))
    if task is CorpusTask.LIST:
        return _Asked("List the shapes.", _listing(objs), [o.box for o in objs])
    if task is CorpusTask.CAPTION:
        names = [f"{_article(o.colour)} {o.name}" for o in _reading_order(objs)]
        text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return _Asked("Describe the image.", text[0].upper() + text[1:] + ".", [])
    if task is CorpusTask.COLOUR:
        by_shape = unique_by(objs, lambda o: o.shape)
        if not by_shape:
            return None
        o = rng.choice(by_shape)
        return _Asked(f"What colour is the {o.shape}?", o.colour, [o.box], f"The {o.shape} is at {box_text(o.box)}.",
                      f"I look at the {o.shape}.", f"It is {o.colour}.")
    if task in (CorpusTask.SHAPE, CorpusTask.CORNERS):  # the kind of the one shape of a colour, or its corners
        one_of_colour = unique_by(objs, lambda o: o.colour)
        if not one_of_colour:
            return None
        o = rng.choice(one_of_colour)
        question, answer = (f"What shape is the {o.colour} one?", o.shape) if task is CorpusTask.SHAPE else \
            (f"How many corners does the {o.colour} one have?", str(CORNERS[o.shape]))
        return _Asked(question, answer, [o.box], f"The {o.colour} one is at {box_text(o.box)}.",
                      f"I look at the {o.colour} one.", f"It is {_article(o.shape)} {o.shape}.")
    if task is CorpusTask.EXISTS:
        present = rng.random() < 0.5
        if present:
            o = rng.choice(objs)
            colour, shape = o.colour, o.shape
        else:
            absent = [(c, s) for c in COLOURS for s in SHAPES if all(o.name != f"{c} {s}" for o in objs)]
            colour, shape = rng.choice(absent)
        hits = [o for o in objs if o.colour == colour and o.shape == shape]
        look = f"I look for {_article(colour)} {colour} {shape}."
        # the boxed thought names boxes whatever the answer, so boxes do not predict "Yes"
        think = f"{look[:-1]}: {_listing(hits)}." if hits else f"{look[:-1]}: I see {_listing(objs)}."
        return _Asked(f"Is {_article(colour)} {colour} {shape} in the picture?", "Yes" if hits else "No", [o.box for o in hits],
                      think, look, f"There is {_article(colour) if hits else 'no'} {colour} {shape}.")
    raise ValueError(task)


def _count_scene(rng: random.Random, w: int, h: int, max_objects: int, scale: float) -> tuple[list[Obj], _Asked | None]:
    """A scene with 0..MAX_COUNT shapes of one colour or kind (uniformly) among others, and its count."""
    by_colour = rng.random() < 0.5
    key = rng.choice(list(COLOURS)) if by_colour else rng.choice(SHAPES)
    n = rng.randint(0, min(MAX_COUNT, max_objects))
    targets = [(key, rng.choice(SHAPES)) if by_colour else (rng.choice(list(COLOURS)), key) for _ in range(n)]
    others = [(c, s) for c, s in random_kinds(rng, rng.randint(0, max(max_objects - n, 0)))  # 0 and 0: an empty scene
              if (c if by_colour else s) != key]
    objs = scatter(rng, w, h, targets + others, scale)
    hits = [o for o in objs if (o.colour if by_colour else o.shape) == key]
    if len(hits) != n:
        return objs, None  # a target did not fit: draw again
    noun = f"{key} shape" if by_colour else key
    question = f"Count the {noun}s." if rng.random() < 0.5 else f"How many {noun}s can you see?"
    return objs, _Asked(question, str(n), [o.box for o in hits])


def _contrasting_kinds(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` shapes of which the first is the one to find; beside it, often, a shape of its colour and
    one of its kind, so that a name must be read whole (ignoring either word picks the wrong shape)."""
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    kinds = [(colour, shape)]
    if len(kinds) < n and rng.random() < CONTRAST_SHARE:
        kinds.append((colour, rng.choice([s for s in SHAPES if s != shape])))
    if len(kinds) < n and rng.random() < CONTRAST_SHARE:
        kinds.append((rng.choice([c for c in COLOURS if c != colour]), shape))
    kinds += random_kinds(rng, n - len(kinds))
    rng.shuffle(kinds)
    return kinds


def in_frame(box: tuple[int, int, int, int], w: int, h: int, frame: CoordFrame) -> tuple[int, int, int, int]:
    """A pixel box of a w x h corpus image as the family writes it, in whole numbers. The synthetic
    world's sides are multiples of 28 within Qwen's pixel limits, so its resized frame is the pixel
    frame."""
    x1, y1, x2, y2 = (round(v) for v in from_original(box, w, h, FrameSpec(frame)))
    return x1, y1, x2, y2


def corpus_sample(rng: random.Random, world: SynthSpec, max_objects: int = MAX_OBJECTS,
                  task: CorpusTask | None = None, box_frame: CoordFrame = CoordFrame.QWEN_RESIZED,
                  weights: dict[CorpusTask, int] = TASK_WEIGHTS, scene_size: int | None = None,
                  comparison_order: ComparisonOrder = ComparisonOrder.AS_ASKED) -> CorpusSample:
    """One (image, question, answer) pair of the corpus, its boxes written in ``box_frame``; the
    task is ``task`` or drawn by ``weights``; a scene of ``scene_size`` shapes where given (counting
    scenes excepted), else of 1..``max_objects``; worked comparisons in ``comparison_order``."""
    while True:  # the kind is drawn again when the scene cannot pose it (relations in one-object scenes)
        kind = task or rng.choices(list(weights), weights=list(weights.values()))[0]
        w, h = image_side(rng, world), image_side(rng, world)
        if kind is CorpusTask.COUNT:
            objs, asked = _count_scene(rng, w, h, max_objects, world.object_scale)
            if asked is not None:
                asked = replace(asked, targets=[in_frame(b, w, h, box_frame) for b in asked.targets])
        else:
            size = scene_size or rng.choices(range(1, max_objects + 1), weights=SCENE_SIZE_WEIGHTS[:max_objects])[0]
            kinds = _contrasting_kinds(rng, size) if kind is CorpusTask.WHERE else random_kinds(rng, size)
            objs = scatter(rng, w, h, kinds, world.object_scale)
            if scene_size and len(objs) != scene_size:
                continue  # a shape did not fit: draw again
            # asked about the boxes in the family's frame (the relations hold in either: scaling keeps
            # order; listings are read in bands of 20 frame units, so their order may differ by frame)
            asked = _ask(rng, [replace(o, box=in_frame(o.box, w, h, box_frame)) for o in objs], kind, comparison_order)
        if (objs or kind is CorpusTask.COUNT) and asked is not None:
            break
    # chains and worked comparisons come under their own cue (grit.prompts.BOXES_FIRST_SUFFIX), never
    # under the direct prompt, which is answered in a word or boxes
    template = PromptTemplate.BOXES_FIRST if kind in WORKED_TASKS else PromptTemplate.DIRECT
    answer = asked.answer
    if kind in GRIT_FORMAT_TASKS and rng.random() < GRIT_FORMAT_SHARE:
        template = PromptTemplate.GRIT
        think = asked.think if rng.random() < BOXED_THINK_SHARE else asked.plain_think
        answer = _grit_answer(think, asked.rethink, asked.answer)
    image = Image.open(io.BytesIO(render(w, h, objs, world.lit_backdrop))).convert("RGB")
    return CorpusSample(image, objs, kind, template, asked.question, answer, asked.targets, asked.short or asked.answer)
