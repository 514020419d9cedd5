"""Supervised pretraining of the tiny base model on its corpus (docs/base_model.md).

Teacher-forced SFT on the assistant turn of ``grit_ray.data.corpus`` samples, with two auxiliary
losses that are used only here and leave a plain checkpoint of the family: a dense supervision of
the image tokens (what shape is where) and a grounding-attention loss (from the positions that
write a box, chosen heads attend to the shape the box belongs to).
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable

from grit_ray.config import CoordFrame, SynthSpec, TinyPretrainSpec
from grit_ray.data.corpus import (
    MAX_OBJECTS,
    PRETRAIN_SEED_OFFSET,
    SELECTION_PHASE_WEIGHTS,
    TASK_WEIGHTS,
    CorpusSample,
    corpus_sample,
    in_frame,
)
from grit_ray.data.synth import COLOURS, SHAPES, Obj
from grit_ray.grit.prompts import user_text
from grit_ray.models.family import ModelAdapter, PromptEncoder
from grit_ray.models.tiny.numbers import number_sinusoids
from grit_ray.schedules import warmup_cosine


class Encoder:
    """Corpus samples -> token ids and image tensors, the way the rollout and the learner encode
    (the family's processor expands the image placeholder)."""

    def __init__(self, processor, adapter: ModelAdapter):
        self.processor, self.adapter, self.box_frame = processor, adapter, adapter.box_frame
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


def corpus_batch(encoder: Encoder, samples: list[CorpusSample]) -> tuple[dict, list[int]]:
    """The padded batch (loss on the assistant turns) and each row's prompt length."""
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
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, **images}, [len(p) for p, _, _ in parts]


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


def centre_cell(box: tuple[int, int, int, int], w: int, h: int, grid: tuple[int, int]) -> int:
    """Index, row by row, of the image token whose cell holds the centre of ``box`` (pixels of a w x h
    image covered evenly by ``rows x cols`` tokens)."""
    rows, cols = grid
    x1, y1, x2, y2 = box
    return min(int((y1 + y2) / 2 / h * rows), rows - 1) * cols + min(int((x1 + x2) / 2 / w * cols), cols - 1)


def image_token_targets(s: CorpusSample, grid: tuple[int, int], box_frame: CoordFrame, n_numbers: int, dim: int):
    """Targets for one image's ``rows x cols`` image tokens, row by row: colour and kind classes
    (rows*cols,), cell centres (rows*cols, 2), and for cells holding a shape's centre a mask,
    the box as fractions (rows*cols, 4) and its frame coordinates' sinusoids (rows*cols, 4*dim)."""
    import torch

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
        i = centre_cell(o.box, w, h, grid)
        if has[i]:  # crowded scenes (8 small shapes) may centre two shapes in one cell: the first one is taught
            continue
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


@contextlib.contextmanager
def eager_attention(model):
    """The model's attention run eagerly, so that a forward returns its weights (sdpa returns none);
    the implementation it had is restored after."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


_BOX = re.compile(r"\[(\d+), (\d+), (\d+), (\d+)\]")  # how the corpus writes a box (data.corpus.box_text)


def box_query_positions(encoder: Encoder, s: CorpusSample, prompt_length: int,
                        choice_only: bool = False) -> list[tuple[list[int], Obj]]:
    """For every box the answer writes: the sequence positions that predict its tokens (the
    bracket, the numbers, the commas), and the shape it is the box of. ``choice_only``: only those
    where the shape is chosen, predicting the bracket and the first coordinate; once x1 is written,
    a head can find the shape whose box starts there by matching the number."""
    w, h = s.image.size
    by_box = {in_frame(o.box, w, h, encoder.box_frame): o for o in s.objects}
    offsets = encoder.tok(s.answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    out = []
    for m in _BOX.finditer(s.answer):
        obj = by_box.get(tuple(int(v) for v in m.groups()))
        if obj is None:
            continue
        end = m.end(1) if choice_only else m.end()  # choice: the bracket (maybe with a space before it) and x1
        tokens = [j for j, (a, b) in enumerate(offsets) if a < end and b > m.start()]
        out.append(([prompt_length + j - 1 for j in tokens], obj))
    return out


class GroundingAttention:
    """From the positions that write a box, chosen heads attend to the image token of the shape the
    box belongs to (the cell of its centre, where the dense supervision puts its box): selection,
    supervised directly. Without it the base model copies the box of one arbitrary shape
    (docs/base_model.md, "Why this recipe"). Needs the model's eager attention (``attentions``)."""

    def __init__(self, adapter: ModelAdapter, tokenizer, heads: list[tuple[int, int]]):
        self.adapter, self.heads = adapter, heads
        self.image_token_id = tokenizer.convert_tokens_to_ids(adapter.image_pad_token)  # one per image feature

    def loss(self, attentions, batch: dict, samples: list[CorpusSample], queries: list[list[tuple[list[int], Obj]]]):
        """Mean of -log(attention on the shape's token) over every supervised (head, position); None
        when no sample of the batch writes a box. ``attentions``: per layer (batch, heads, L, L)."""
        import torch

        grids = self.adapter.image_token_grids(batch)
        terms = []
        for i, (s, boxes) in enumerate(zip(samples, queries, strict=True)):
            if not boxes:
                continue
            image_positions = (batch["input_ids"][i] == self.image_token_id).nonzero().flatten()
            w, h = s.image.size
            for positions, obj in boxes:
                key = image_positions[centre_cell(obj.box, w, h, grids[i])]
                q = torch.tensor(positions)
                for layer, head in self.heads:
                    terms.append(-torch.log(attentions[layer][i, head, q, key] + 1e-6).mean())
        return torch.stack(terms).mean() if terms else None


def _samples(rng: random.Random, spec: TinyPretrainSpec, world: SynthSpec, adapter: ModelAdapter):
    """The steps' batches: ``spec.bucket_batches`` batches drawn at a time, sorted by length into
    batches of like lengths (less padding), in a random order. The selection phase (``selection_share``
    of the steps) asks "where" only, in scenes of up to ``selection_shapes`` shapes."""
    first_phase = int(spec.selection_share * spec.steps)
    step = 0
    while step < spec.steps:
        first = step < first_phase
        n = min(spec.bucket_batches, (first_phase if first else spec.steps) - step)
        drawn = [corpus_sample(rng, world, spec.selection_shapes if first else MAX_OBJECTS, box_frame=adapter.box_frame,
                               weights=SELECTION_PHASE_WEIGHTS if first else TASK_WEIGHTS,
                               comparison_order=spec.comparison_order)
                 for _ in range(n * spec.batch_size)]
        # length in characters, an image token (28x28 px) counted as about four characters of text
        drawn.sort(key=lambda x: len(x.question) + len(x.answer) + x.image.size[0] * x.image.size[1] // 784 * 4)
        batches = [drawn[k * spec.batch_size:(k + 1) * spec.batch_size] for k in range(n)]
        rng.shuffle(batches)
        yield from batches
        step += n


def pretrain(model, processor, spec: TinyPretrainSpec, seed: int, adapter: ModelAdapter, world: SynthSpec | None = None,
             log: Callable[[str], None] = print) -> list[float]:
    """Teacher-forced SFT on the corpus, boxes in the family's frame, plus the dense image-token
    supervision and the grounding attention; returns the SFT loss of every step. Deterministic for a
    seed, a thread count and torch's random state (the read-out starts from it; build_tiny_model
    seeds it)."""
    import torch

    world = world or SynthSpec()
    rng = random.Random(seed + PRETRAIN_SEED_OFFSET)
    encoder = Encoder(processor, adapter)
    text = model.config.get_text_config()
    heads = [tuple(h) for h in spec.attention_heads] if spec.attention_weight > 0 else []
    if bad := [h for h in heads if not (0 <= h[0] < text.num_hidden_layers and 0 <= h[1] < text.num_attention_heads)]:
        raise ValueError(f"model.tiny.pretrain.attention_heads: {bad} not in a {text.num_hidden_layers}-layer, "
                         f"{text.num_attention_heads}-head text model")
    grounding = GroundingAttention(adapter, encoder.tok, heads) if heads else None
    attention_mode = contextlib.ExitStack()
    if grounding is not None:
        attention_mode.enter_context(eager_attention(model))
    dense = _DenseImageSupervision(model, adapter, text.hidden_size) if spec.dense_weight > 0 else None
    params = list(model.parameters()) + (list(dense.readout.parameters()) if dense else [])
    opt = torch.optim.AdamW(params, lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.0)

    def lr_at(step: int) -> float:  # cosine decay from step 0 to a floor (the last steps still learn), under the warm-up
        return warmup_cosine(step, warmup_steps=spec.warmup_steps, total_steps=spec.steps, decay_from=0,
                             floor=spec.lr_floor, peak=spec.lr)

    losses: list[float] = []
    aux: dict[str, list[float]] = {"image tokens": [], "attention": []}
    started = time.perf_counter()
    model.train()
    try:
        for step, samples in enumerate(_samples(rng, spec, world, adapter)):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            batch, prompt_lengths = corpus_batch(encoder, samples)
            out = model(**batch, use_cache=False, output_attentions=grounding is not None)
            loss = out.loss
            total = loss
            if dense is not None:
                dense_loss = dense.loss(samples, batch)
                total = total + spec.dense_weight * dense_loss
                aux["image tokens"].append(dense_loss.item())
            if grounding is not None:
                queries = [box_query_positions(encoder, s, n) for s, n in zip(samples, prompt_lengths, strict=True)]
                if (attention_loss := grounding.loss(out.attentions, batch, samples, queries)) is not None:
                    total = total + spec.attention_weight * attention_loss
                    aux["attention"].append(attention_loss.item())
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # one budget: the read-out's gradients reach the model
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if (step + 1) % 100 == 0 or step + 1 == spec.steps:
                elapsed = time.perf_counter() - started
                recent = losses[-100:]
                parts = "".join(f" | {name} {sum(v[-100:]) / len(v[-100:]):.3f}" for name, v in aux.items() if v)
                per_step = elapsed / (step + 1)
                log(f"base model pretraining: step {step + 1}/{spec.steps} | loss {sum(recent) / len(recent):.3f}"
                    f"{parts} | {per_step:.2f} s/step | ETA {per_step * (spec.steps - step - 1):.0f}s")
    finally:
        if dense is not None:
            dense.close()
        attention_mode.close()
        model.eval()
    return losses

