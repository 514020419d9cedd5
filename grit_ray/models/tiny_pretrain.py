"""Supervised pretraining of the tiny base model: the analogue of the pretrained VLM GRIT starts from.

The corpus (docs/base_model.md) is drawn from the synthetic world of ``synth`` (same shapes,
colours, backdrop and image sizes) with its own seeds, and teaches the model to *see* that world,
asked directly, the way a pretrained VLM knows its world: where a named shape is, every shape of a
colour or kind with its box, colours, shapes, existence, counts, whether one shape lies left of,
right of, above or below another, on which side, captions. Some kinds (colour, shape, existence)
also come with GRIT's prompt and a grounded answer in GRIT's format, so the model knows the format
the way an instruction-tuned VLM does. Its counting and relation questions are worded its own way
("Count the circles.", "Is the red circle to the left of the blue square?"), never as GRIT's
training and evaluation questions ("How many circles are there?", "Is the red circle left of the
blue square?", "What is left of ...?"), and never come with GRIT's format: RL must teach the model
to answer GRIT's questions with grounded reasoning.

``pretrain`` runs teacher-forced SFT on the assistant turn (AdamW, warm-up, cosine decay), "where"
about one-object scenes first so that copying a box is learnt before matching names to objects,
with a dense supervision of the image tokens (what shape is where) beside it;
``probe`` measures what the result can do on held-out scenes.
"""

from __future__ import annotations

import enum
import io
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from PIL import Image

from grit_ray.config import CoordFrame, PromptTemplate, SynthSpec, TinyPretrainSpec
from grit_ray.data.synth import COLOURS, RELATIONS, SHAPES, Obj, image_side, random_kinds, render, scatter, unique_by
from grit_ray.grit.grounding import FrameSpec, find_boxes, from_original
from grit_ray.grit.metrics import union_iou
from grit_ray.grit.prompts import user_text
from grit_ray.models.family import ModelAdapter, PromptEncoder

PRETRAIN_SEED_OFFSET = 7_000_003  # corpus scenes never share a random stream with `grit-ray data synth` seeds
PROBE_SEED_OFFSET = 9_000_011
MAX_OBJECTS = 5


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


# sampling weights: grounding dominates (it is what GRIT's GIoU can rise to)
TASK_WEIGHTS = {CorpusTask.WHERE: 3, CorpusTask.FIND: 2, CorpusTask.LIST: 1, CorpusTask.COLOUR: 1,
                CorpusTask.SHAPE: 1, CorpusTask.EXISTS: 3, CorpusTask.COUNT: 3, CorpusTask.RELATE: 3,
                CorpusTask.SIDE: 1, CorpusTask.CAPTION: 1, CorpusTask.CORNERS: 2}
# the first phase (spec.single_object_share of the steps): "where" about one-object scenes only, so
# the text model learns to copy a box out of an image token before it must match names to objects
FIRST_PHASE_WEIGHTS = {CorpusTask.WHERE: 1}
MAX_COUNT = 4  # count questions ask for 0..4 targets, uniformly
# corners: a number answered in GRIT's format that counts no shapes, so that a number can follow
# <answer> at all (GRIT's format is never shown with a count of shapes: docs/base_model.md)
GRIT_FORMAT_TASKS = (CorpusTask.COLOUR, CorpusTask.SHAPE, CorpusTask.EXISTS, CorpusTask.CORNERS)
CORNERS = {"square": 4, "circle": 0, "triangle": 3}
PRESENT_SHARE = 0.8  # find asks mostly about colours and kinds in the picture ("none" is the easy guess)
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


def _ask(rng: random.Random, objs: list[Obj], task: CorpusTask) -> _Asked | None:
    """The question of ``task`` about this scene and its answers, or None when the scene cannot pose it."""
    if task is CorpusTask.WHERE:
        named = unique_by(objs, lambda o: o.name)
        if not named:
            return None
        o = rng.choice(named)
        return _Asked(f"Where is the {o.name}?", box_text(o.box), [o.box])
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
        # as many "Yes" as "No" where the scene allows: a lopsided share is learnt as the answer
        asked = [(a, b, rel, RELATIONS[rel](a.box, b.box)) for a in named for b in named if a is not b
                 for rel in RELATIONS]
        want = rng.random() < 0.5
        a, b, relation, holds = rng.choice([q for q in asked if q[3] == want] or asked)
        return _Asked(f"Is the {a.name} {RELATION_WORDS[relation]} the {b.name}?", "Yes" if holds else "No",
                      [a.box, b.box])
    if task is CorpusTask.SIDE:
        named = unique_by(objs, lambda o: o.name)
        pairs = [(a, b, [side for side, test in SIDES.items() if test(a.box, b.box)])
                 for a in named for b in named if a is not b]
        pairs = [(a, b, sides[0]) for a, b, sides in pairs if len(sides) == 1]
        if not pairs:
            return None
        a, b, side = rng.choice(pairs)
        return _Asked(f"Which side of the {b.name} is the {a.name} on?", side, [a.box, b.box])
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
        by_colour = unique_by(objs, lambda o: o.colour)
        if not by_colour:
            return None
        o = rng.choice(by_colour)
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
    others = [(c, s) for c, s in random_kinds(rng, rng.randint(0 if n else 1, max(max_objects - n, 0)))
              if (c if by_colour else s) != key]
    objs = scatter(rng, w, h, targets + others, scale)
    hits = [o for o in objs if (o.colour if by_colour else o.shape) == key]
    if len(hits) != n:
        return objs, None  # a target did not fit: draw again
    noun = f"{key} shape" if by_colour else key
    question = f"Count the {noun}s." if rng.random() < 0.5 else f"How many {noun}s can you see?"
    return objs, _Asked(question, str(n), [o.box for o in hits])


def in_frame(box: tuple[int, int, int, int], w: int, h: int, frame: CoordFrame) -> tuple[int, int, int, int]:
    """A pixel box of a w x h corpus image as the family writes it, in whole numbers. The synthetic
    world's sides are multiples of 28 within Qwen's pixel limits, so its resized frame is the pixel
    frame."""
    return tuple(round(v) for v in from_original(box, w, h, FrameSpec(frame)))


def corpus_sample(rng: random.Random, world: SynthSpec, max_objects: int = MAX_OBJECTS,
                  task: CorpusTask | None = None, box_frame: CoordFrame = CoordFrame.QWEN_RESIZED,
                  weights: dict[CorpusTask, int] = TASK_WEIGHTS) -> CorpusSample:
    """One (image, question, answer) pair of the corpus, its boxes written in ``box_frame``; the
    task is ``task`` or drawn by ``weights``."""
    while True:  # the kind is drawn again when the scene cannot pose it (relations in one-object scenes)
        kind = task or rng.choices(list(weights), weights=list(weights.values()))[0]
        w, h = image_side(rng, world), image_side(rng, world)
        if kind is CorpusTask.COUNT:
            objs, asked = _count_scene(rng, w, h, max_objects, world.object_scale)
            if asked is not None:
                asked = replace(asked, targets=[in_frame(b, w, h, box_frame) for b in asked.targets])
        else:
            objs = scatter(rng, w, h, random_kinds(rng, rng.randint(1, max_objects)), world.object_scale)
            # asked about the boxes in the family's frame (the relations hold in either: scaling keeps
            # order; listings are read in bands of 20 frame units, so their order may differ by frame)
            asked = _ask(rng, [replace(o, box=in_frame(o.box, w, h, box_frame)) for o in objs], kind)
        if objs and asked is not None:
            break
    template, answer = PromptTemplate.DIRECT, asked.answer
    if kind in GRIT_FORMAT_TASKS and rng.random() < GRIT_FORMAT_SHARE:
        template = PromptTemplate.GRIT
        think = asked.think if rng.random() < BOXED_THINK_SHARE else asked.plain_think
        answer = _grit_answer(think, asked.rethink, asked.answer)
    image = Image.open(io.BytesIO(render(w, h, objs, world.lit_backdrop))).convert("RGB")
    return CorpusSample(image, objs, kind, template, asked.question, answer, asked.targets, asked.answer)


# ---------------------------------------------------------------------------------------------
# training


class _Encoder:
    """Corpus samples -> token ids and image tensors, the way the rollout and the learner encode
    (the family's processor expands the image placeholder)."""

    def __init__(self, processor):
        self.processor = processor
        self.tok = processor.tokenizer
        self.end_id = self.tok.convert_tokens_to_ids("<|im_end|>")

    def prompt(self, s: CorpusSample) -> tuple[list[int], dict]:
        """The prompt's ids and its image tensors (every processor output but the text's)."""
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": user_text(s.question, s.template)}]}]
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        encoded = self.processor(text=[text], images=[s.image], return_tensors="pt")
        pix = {k: v for k, v in encoded.items() if k not in PromptEncoder.TOKEN_ALIGNED}
        return encoded["input_ids"][0].tolist(), pix

    def answer(self, s: CorpusSample) -> list[int]:
        return self.tok.encode(s.answer, add_special_tokens=False) + [self.end_id]


def _batch(encoder: _Encoder, samples: list[CorpusSample]):
    import torch

    parts = []
    for s in samples:
        p_ids, pix = encoder.prompt(s)
        parts.append((p_ids, encoder.answer(s), pix))
    L = max(len(p) + len(a) for p, a, _ in parts)
    pad = encoder.tok.pad_token_id
    input_ids = torch.full((len(parts), L), pad)
    labels = torch.full((len(parts), L), -100)
    mask = torch.zeros(len(parts), L, dtype=torch.long)
    for i, (p_ids, a_ids, _) in enumerate(parts):
        seq = p_ids + a_ids
        input_ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        labels[i, len(p_ids):len(seq)] = torch.tensor(a_ids)  # loss on the assistant turn only
    images = {k: torch.cat([x[k] for _, _, x in parts]) for k in parts[0][2]}  # pixel_values (+ image_grid_thw)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, **images}


# Dense supervision of the image tokens: for every image token, a linear read-out (used only while
# pretraining, then dropped) predicts the colour and the kind of the shape whose centre lies in the
# token's cell ("none" elsewhere), the cell's centre, and that shape's box, as fractions of the image
# and as the sinusoids of its coordinates that the number tokens' embeddings are. The vision tower
# then writes what is where into each token, in a form the text model can copy into a box; without
# it the tiny model learns the box priors and not positions (docs/base_model.md, "Why this recipe").
_NONE = 0  # class index of "no shape's centre here"; colours and kinds count from 1
# squared errors of fractions and of unit sinusoids are far smaller than the classes' cross-entropy
# at the start: weighted up so that positions are learnt beside the classes, not after them
_CENTRE_WEIGHT, _BOX_WEIGHT, _SINUSOID_WEIGHT = 10.0, 10.0, 4.0


def image_token_targets(s: CorpusSample, grid: tuple[int, int], box_frame: CoordFrame, n_numbers: int, dim: int):
    """Targets for one image's ``rows x cols`` image tokens, row by row: colour and kind classes
    (rows*cols,), cell centres (rows*cols, 2), and for cells holding a shape's centre a mask,
    the box as fractions (rows*cols, 4) and its frame coordinates' sinusoids (rows*cols, 4*dim)."""
    import torch

    from grit_ray.models.tiny import number_sinusoids

    rows, cols = grid
    w, h = s.image.size
    n = rows * cols
    colour, kind = torch.full((n,), _NONE), torch.full((n,), _NONE)
    has = torch.zeros(n, dtype=torch.bool)
    frac, sines = torch.zeros(n, 4), torch.zeros(n, 4 * dim)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    centre = torch.stack([(c.flatten() + 0.5) / cols, (r.flatten() + 0.5) / rows], dim=1)  # (n, 2)
    for o in s.objects:
        x1, y1, x2, y2 = o.box
        i = min(int((y1 + y2) / 2 / h * rows), rows - 1) * cols + min(int((x1 + x2) / 2 / w * cols), cols - 1)
        if has[i]:  # the synthetic world's shapes are at least a cell apart; a denser world needs finer cells
            raise ValueError(f"two shapes centred in image-token cell {i} of a {rows}x{cols} grid")
        colour[i], kind[i], has[i] = list(COLOURS).index(o.colour) + 1, SHAPES.index(o.shape) + 1, True
        frac[i] = torch.tensor([x1 / w, y1 / h, x2 / w, y2 / h])
        sines[i] = number_sinusoids(torch.tensor(in_frame(o.box, w, h, box_frame)), dim, n_numbers).flatten()
    return colour, kind, centre, has, frac, sines


class _DenseImageSupervision:
    """The read-out, its hook on the family's image-token features, and its loss."""

    def __init__(self, model, adapter: ModelAdapter, hidden: int):
        import torch

        self.adapter, self.dim = adapter, hidden
        self.n_colour, self.n_kind = len(COLOURS) + 1, len(SHAPES) + 1
        self.readout = torch.nn.Linear(hidden, self.n_colour + self.n_kind + 2 + 4 + 4 * hidden)
        module, self._features_of = adapter.image_token_features(model)
        self._features = None
        self._hook = module.register_forward_hook(self._keep)

    def _keep(self, _module, _inputs, out) -> None:
        self._features = self._features_of(out)

    def close(self) -> None:
        """Take the hook off: the model leaves pretraining as it came."""
        self._hook.remove()
        self._features = None

    def loss(self, samples: list[CorpusSample], image_inputs: dict):
        """Of the batch just run forward: classes by cross-entropy, positions and boxes by squared
        error (fractions weighted up to the classes' scale)."""
        import torch
        import torch.nn.functional as F

        grids = self.adapter.image_token_grids(image_inputs)
        parts = [image_token_targets(s, g, self.adapter.box_frame, self.adapter.tiny_number_tokens, self.dim)
                 for s, g in zip(samples, grids, strict=True)]
        colour, kind, centre, has, frac, sines = (torch.cat([p[i] for p in parts]) for i in range(6))
        out = self.readout(self._features)  # (image tokens, outputs)
        if out.shape[0] != colour.shape[0]:
            raise RuntimeError(f"{out.shape[0]} image-token features for {colour.shape[0]} cells")
        a, b = self.n_colour, self.n_colour + self.n_kind
        loss = F.cross_entropy(out[:, :a], colour) + F.cross_entropy(out[:, a:b], kind)
        loss = loss + _CENTRE_WEIGHT * F.mse_loss(out[:, b:b + 2], centre)
        if has.any():
            loss = loss + _BOX_WEIGHT * F.mse_loss(out[has, b + 2:b + 6], frac[has])
            loss = loss + _SINUSOID_WEIGHT * F.mse_loss(out[has, b + 6:], sines[has])
        return loss


def pretrain(model, processor, spec: TinyPretrainSpec, seed: int, adapter: ModelAdapter, world: SynthSpec | None = None,
             log: Callable[[str], None] = print) -> list[float]:
    """Teacher-forced SFT on the corpus, boxes in the family's frame, plus the dense image-token
    supervision; returns the SFT loss of every step. Deterministic for a seed, a thread count and
    torch's random state (the read-out starts from it; build_tiny_model seeds it)."""
    import torch

    world = world or SynthSpec()
    rng = random.Random(seed + PRETRAIN_SEED_OFFSET)
    encoder = _Encoder(processor)
    dense = _DenseImageSupervision(model, adapter, model.config.get_text_config().hidden_size) \
        if spec.dense_weight > 0 else None
    params = list(model.parameters()) + (list(dense.readout.parameters()) if dense else [])
    opt = torch.optim.AdamW(params, lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.0)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / max(spec.warmup_steps, 1))
        return spec.lr * warm * 0.5 * (1 + math.cos(math.pi * step / spec.steps))

    first_phase = int(spec.single_object_share * spec.steps)
    losses: list[float] = []
    dense_losses: list[float] = []
    started = time.perf_counter()
    model.train()
    try:
        for step in range(spec.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            first = step < first_phase
            samples = [corpus_sample(rng, world, 1 if first else MAX_OBJECTS, box_frame=adapter.box_frame,
                                     weights=FIRST_PHASE_WEIGHTS if first else TASK_WEIGHTS)
                       for _ in range(spec.batch_size)]
            batch = _batch(encoder, samples)
            loss = model(**batch, use_cache=False).loss
            total = loss
            if dense is not None:
                dense_loss = dense.loss(samples, batch)
                total = loss + spec.dense_weight * dense_loss
                dense_losses.append(dense_loss.item())
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # one budget: the read-out's gradients reach the model
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if (step + 1) % 100 == 0 or step + 1 == spec.steps:
                elapsed = time.perf_counter() - started
                recent = losses[-100:]
                image_part = f" | image tokens {sum(dense_losses[-100:]) / len(recent):.3f}" if dense_losses else ""
                per_step = elapsed / (step + 1)
                log(f"base model pretraining: step {step + 1}/{spec.steps} | loss {sum(recent) / len(recent):.3f}"
                    f"{image_part} | {per_step:.2f} s/step | ETA {per_step * (spec.steps - step - 1):.0f}s")
    finally:
        if dense is not None:
            dense.close()
        model.eval()
    return losses


# ---------------------------------------------------------------------------------------------
# what the base model can do


def _generate(model, encoder: _Encoder, s: CorpusSample, max_new_tokens: int) -> str:
    import torch

    ids, pix = encoder.prompt(s)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             **pix, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=encoder.tok.pad_token_id,
                             eos_token_id=encoder.end_id)
    return encoder.tok.decode(out[0, len(ids):], skip_special_tokens=True)


def probe(model, processor, seed: int, n: int = 48, world: SynthSpec | None = None,
          box_frame: CoordFrame = CoordFrame.QWEN_RESIZED) -> dict[str, float]:
    """Greedy decoding on held-out corpus scenes: referring IoU, find-every IoU (union of boxes, as
    GRIT's GIoU), and the accuracy of direct colour, shape, existence, count and side answers."""
    world = world or SynthSpec()
    encoder = _Encoder(processor)
    rng = random.Random(seed + PROBE_SEED_OFFSET)
    out: dict[str, float] = {}
    for task, key in ((CorpusTask.WHERE, "where_iou"), (CorpusTask.FIND, "find_iou")):
        scores = []
        for _ in range(n):
            s = corpus_sample(rng, world, task=task, box_frame=box_frame)
            if not s.target_boxes:
                continue
            pred = find_boxes(_generate(model, encoder, s, 64))
            scores.append(union_iou(pred, s.target_boxes) if pred else 0.0)
        out[key] = sum(scores) / len(scores)
    for task in (CorpusTask.COLOUR, CorpusTask.SHAPE, CorpusTask.EXISTS, CorpusTask.COUNT, CorpusTask.RELATE,
                 CorpusTask.SIDE, CorpusTask.CORNERS):
        right = 0
        for _ in range(n):
            s = corpus_sample(rng, world, task=task, box_frame=box_frame)
            direct = CorpusSample(s.image, s.objects, task, PromptTemplate.DIRECT, s.question, s.short_answer,
                                  s.target_boxes, s.short_answer)
            right += _generate(model, encoder, direct, 8).strip() == s.short_answer
        out[f"{task.value}_accuracy"] = right / n
    return out
