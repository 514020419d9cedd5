"""What the tiny base model can do: greedy decoding on held-out corpus scenes (docs/base_model.md).

Besides the direct probes (boxes, colours, counts, relations, the text-only comparisons) it
measures *selection*: asked "Where is the X?" in a scene of several shapes, how often the box lands
on the named shape rather than on another one, and how much more the model's best head attends to
the named shape than to the others where it chooses the box. Grounded reasoning needs selection
first: a model that boxes an arbitrary shape gives RL nothing to sharpen (docs/base_model.md).
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from grit_ray.config import ComparisonOrder, CoordFrame, PromptTemplate, SynthSpec
from grit_ray.data.corpus import PROBE_SEED_OFFSET, WORKED_TASKS, CorpusSample, CorpusTask, corpus_sample
from grit_ray.grit.grounding import find_boxes
from grit_ray.grit.metrics import union_iou
from grit_ray.grit.prompts import plain_reply_answer
from grit_ray.models.family import ModelAdapter
from grit_ray.models.tiny.pretrain import Encoder, box_query_positions, centre_cell, corpus_batch, eager_attention

# What GRIT training needs of selection on two-shape scenes: below it, the boxes of a relation's two
# shapes are right together too rarely for a chain to beat a constant answer (docs/base_model.md)
SELECTION_GATE = 0.6
MANY_SHAPES = (4, 5, 6, 7, 8)
ON_SHAPE_IOU = 0.3  # a box "lands on" the shape it overlaps most when their IoU is above this
DIRECT_TASKS = (CorpusTask.COLOUR, CorpusTask.SHAPE, CorpusTask.EXISTS, CorpusTask.COUNT, CorpusTask.RELATE,
                CorpusTask.SIDE, CorpusTask.CORNERS, CorpusTask.TALLY)


def _generate(model, encoder: Encoder, s: CorpusSample, max_new_tokens: int) -> str:
    import torch

    ids, pix = encoder.prompt(s)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             **pix, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=encoder.tok.pad_token_id,
                             eos_token_id=encoder.end_id)
    return encoder.tok.decode(out[0, len(ids):], skip_special_tokens=True)


def asked_directly(s: CorpusSample) -> CorpusSample:
    """``s`` under the direct prompt with its direct answer (the corpus asks some kinds in GRIT's
    format too; the probe measures what the model answers to the question alone)."""
    return replace(s, template=PromptTemplate.DIRECT, answer=s.short_answer)


def landed_on(box, s: CorpusSample):
    """The shape of ``s`` that ``box`` lands on, or None."""
    best = max(s.objects, key=lambda o: union_iou([box], [o.box]), default=None)
    return best if best is not None and union_iou([box], [best.box]) > ON_SHAPE_IOU else None


def _selection(model, encoder: Encoder, rng: random.Random, world: SynthSpec, sizes: tuple[int, ...],
               n: int) -> tuple[float, float]:
    """Of n "Where is ...?" questions in scenes of ``sizes`` shapes: the share of first boxes on the
    named shape, and on any shape. Pixel frame only (the probe compares with the scene's boxes)."""
    named = some = 0
    for i in range(n):
        s = asked_directly(corpus_sample(rng, world, task=CorpusTask.WHERE, scene_size=sizes[i % len(sizes)]))
        boxes = find_boxes(_generate(model, encoder, s, 16))
        hit = landed_on(boxes[0], s) if boxes else None
        some += hit is not None
        named += hit is not None and hit.box == s.target_boxes[0]
    return named / n, some / n


def named_attention(model, encoder: Encoder, rng: random.Random, world: SynthSpec, n: int) -> tuple[float, float, str]:
    """Teacher-forced "Where is ...?" answers in 2-4-shape scenes: attention from the positions where
    the box's shape is chosen (those predicting its bracket and first coordinate; later ones can
    follow the number already written) to the named shape's image token and, on average, to each
    other shape's, for the head where their ratio is largest, and that head as "L<layer>h<head>"."""
    import torch

    samples = [asked_directly(corpus_sample(rng, world, task=CorpusTask.WHERE, box_frame=encoder.box_frame,
                                            scene_size=2 + i % 3)) for i in range(n)]
    batch, prompt_lengths = corpus_batch(encoder, samples)
    with eager_attention(model), torch.no_grad():
        attentions = model(**batch, use_cache=False, output_attentions=True).attentions
    image_token = encoder.tok.convert_tokens_to_ids(encoder.adapter.image_pad_token)
    grids = encoder.adapter.image_token_grids(batch)
    layers, heads = len(attentions), attentions[0].shape[1]
    on_named, on_other = torch.zeros(layers, heads), torch.zeros(layers, heads)
    for i, s in enumerate(samples):
        cells = (batch["input_ids"][i] == image_token).nonzero().flatten()
        w, h = s.image.size
        (positions, obj), = box_query_positions(encoder, s, prompt_lengths[i], choice_only=True)
        keys = {o: cells[centre_cell(o.box, w, h, grids[i])] for o in s.objects}
        for layer in range(layers):
            a = attentions[layer][i, :, positions]  # (heads, positions, L)
            on_named[layer] += a[:, :, keys[obj]].mean(dim=1)
            on_other[layer] += torch.stack([a[:, :, k].mean(dim=1) for o, k in keys.items() if o is not obj]).mean(dim=0)
    ratio = on_named / on_other.clamp_min(1e-9)
    layer, head = divmod(int(ratio.argmax()), heads)
    return float(on_named[layer, head]) / n, float(on_other[layer, head]) / n, f"L{layer}h{head}"


def probe(model, processor, seed: int, adapter: ModelAdapter, n: int = 48, world: SynthSpec | None = None,
          comparison_order: ComparisonOrder = ComparisonOrder.AS_ASKED) -> dict[str, float | str]:
    """Greedy decoding on held-out corpus scenes: selection (``selection_2``: share of boxes on the
    named shape of two, ``on_shape_2`` on either, so chance is half of it; ``selection_many`` and
    ``on_shape_many``: the same in scenes of 4-8), the best head's
    attention to the named shape against the others, referring IoU, find-every IoU (union of boxes,
    as GRIT's GIoU), the accuracy of the direct answers of ``DIRECT_TASKS``, and of the final answers of
    ``WORKED_TASKS`` under their cue, with the steps of their relation comparisons (``compare_sign``:
    the corpus's sign written; ``compare_after_sign``: of those, the answer right; the same for
    ``chain``), asked in the ``comparison_order`` the model was built with."""
    world = world or SynthSpec()
    encoder = Encoder(processor, adapter)
    box_frame = adapter.box_frame
    rng = random.Random(seed + PROBE_SEED_OFFSET)
    out: dict[str, float | str] = {}
    if box_frame is CoordFrame.QWEN_RESIZED:  # boxes compared with the scene's pixel boxes
        out["selection_2"], out["on_shape_2"] = _selection(model, encoder, rng, world, (2,), 2 * n)
        out["selection_many"], out["on_shape_many"] = _selection(model, encoder, rng, world, MANY_SHAPES, 2 * n)
    out["attention_named"], out["attention_other"], out["attention_head"] = named_attention(
        model, encoder, rng, world, n)
    for task, key in ((CorpusTask.WHERE, "where_iou"), (CorpusTask.FIND, "find_iou")):
        scores = []
        for _ in range(n):
            s = asked_directly(corpus_sample(rng, world, task=task, box_frame=box_frame))
            if not s.target_boxes:
                continue
            pred = find_boxes(_generate(model, encoder, s, 64))
            scores.append(union_iou(pred, s.target_boxes) if pred else 0.0)
        out[key] = sum(scores) / len(scores)
    for task in DIRECT_TASKS:
        right = 0
        for _ in range(n):
            s = corpus_sample(rng, world, task=task, box_frame=box_frame)
            right += _generate(model, encoder, asked_directly(s), 8).strip() == s.short_answer
        out[f"{task.value}_accuracy"] = right / n
    for task in WORKED_TASKS:  # under their own cue: the boxes or the comparison first, then "So: <answer>"
        right, steps = 0, []
        for _ in range(n):
            s = corpus_sample(rng, world, task=task, box_frame=box_frame, comparison_order=comparison_order)
            reply = _generate(model, encoder, s, 64)
            right += plain_reply_answer(reply, s.template).strip() == s.short_answer
            if (step := worked_steps(s, reply)) is not None:
                steps.append(step)
        out[f"{task.value}_accuracy"] = right / n
        if steps:  # which step of a worked comparison fails: the sign, or the answer read from it
            signed = [answer_right for sign_right, answer_right in steps if sign_right]
            out[f"{task.value}_sign"] = len(signed) / len(steps)
            out[f"{task.value}_after_sign"] = sum(signed) / len(signed) if signed else 0.0
    return out


_WORKED = re.compile(r"(\d+) ([<>=]) (\d+)\. So: (\S+)")


def worked_steps(s: CorpusSample, reply: str) -> tuple[bool, bool] | None:
    """For a worked comparison (a relation, not a count): whether the reply wrote the corpus's sign,
    and whether its answer is right; None when the sample has no comparison. A reply without one
    counts as a wrong sign."""
    truth = _WORKED.search(s.answer)
    if truth is None:
        return None
    got = _WORKED.search(reply)
    return (got is not None and got[2] == truth[2]), (got is not None and got[4] == truth[4])


def selection_gate(report: dict) -> str | None:
    """Why selection is below what grounded reasoning needs, or None when it passes (or was not measured)."""
    if "selection_2" in report and report["selection_2"] < SELECTION_GATE:
        return (f"selection gate: the base model boxes the named one of two shapes in {report['selection_2']:.0%} "
                f"of held-out scenes, below the {SELECTION_GATE:.0%} grounded reasoning needs: relations and counts "
                "built on its boxes will stay near chance (docs/base_model.md)")
    return None


def format_probe(report: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items())


def probe_directory(path: str, n: int = 48, threads: int = 2, seed: int = 0,
                    comparison_order: ComparisonOrder | None = None) -> dict[str, float | str]:
    """``probe`` of a saved model directory of either family, with ``threads`` torch threads."""
    import torch
    from transformers import AutoProcessor

    from grit_ray.config import ConfigError
    from grit_ray.models import adapter_for, checkpoint_family, checkpoint_problem, model_path_problem

    family = checkpoint_family(path)
    problem = model_path_problem(path) or ("no config.json of a known model family" if family is None
                                           else checkpoint_problem(path, family))
    if problem is not None:
        raise ConfigError([f"{path}: {problem}"])
    adapter = adapter_for(family)
    torch.set_num_threads(threads)
    model = adapter.tiny_model_class().from_pretrained(path, torch_dtype=torch.float32).eval()
    return probe(model, AutoProcessor.from_pretrained(path), seed, adapter, n=n,
                 comparison_order=comparison_order or built_comparison_order(path))


def built_comparison_order(path: str) -> ComparisonOrder:
    """The comparison order a tiny base model was pretrained with (its build's marker file), or the
    default where there is none: a trained checkpoint has no marker, so probing one trained from a
    canonical base needs ``--comparison-order canonical``."""
    import json
    from pathlib import Path

    meta = Path(path) / "grit_ray_tiny.json"
    spec = json.loads(meta.read_text()).get("spec", {}) if meta.is_file() else {}
    return ComparisonOrder(spec.get("pretrain", {}).get("comparison_order", ComparisonOrder.AS_ASKED.value))
