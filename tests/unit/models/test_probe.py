"""The base model's selection probe and gate (`grit-ray model probe`), and the grounding-attention
targets pretraining supervises (docs/base_model.md)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from grit_ray.cli import main
from grit_ray.config import ModelFamily, PromptTemplate
from grit_ray.data.corpus import CorpusSample, CorpusTask, box_text
from grit_ray.data.synth import Obj
from grit_ray.models import adapter_for
from grit_ray.models.tiny.probe import (
    SELECTION_GATE,
    asked_directly,
    built_comparison_order,
    selection_gate,
    worked_steps,
)


def test_the_gate_speaks_only_below_what_grounded_reasoning_needs():
    assert selection_gate({"selection_2": SELECTION_GATE + 0.01}) is None
    assert selection_gate({"where_iou": 0.1}) is None  # not measured (InternVL's frame): nothing to say
    message = selection_gate({"selection_2": 0.31})
    assert message and "31%" in message and f"{SELECTION_GATE:.0%}" in message


def test_the_probe_asks_every_question_directly_whatever_form_the_corpus_gave_it():
    # the corpus asks some kinds in GRIT's format as well; the probe's measures (one box where the
    # shape is chosen, the direct answer) read the question alone and its one-word or one-box answer
    obj = Obj("red", "circle", (10, 20, 40, 50))
    grit_form = CorpusSample(Image.new("RGB", (140, 140)), [obj], CorpusTask.WHERE, PromptTemplate.GRIT,
                             "Where is the circle?", f"<think> The circle is at {box_text(obj.box)}. </think> "
                             f"<rethink> I found it. </rethink> <answer> {box_text(obj.box)} </answer>",
                             [obj.box], box_text(obj.box))
    direct = asked_directly(grit_form)
    assert (direct.template, direct.answer) == (PromptTemplate.DIRECT, box_text(obj.box))
    assert (direct.question, direct.objects, direct.target_boxes) == (grit_form.question, [obj], [obj.box])


def test_worked_steps_tell_a_wrong_sign_from_a_wrong_answer_read_from_it():
    import random

    from grit_ray.config import SynthSpec
    from grit_ray.data.corpus import corpus_sample

    rng = random.Random(4)
    s = corpus_sample(rng, SynthSpec(), task=CorpusTask.COMPARE)  # "40 < 62. So: Yes"
    x, sign, y = s.answer.split(".")[0].split()
    other_sign = ">" if sign == "<" else "<"
    other_answer = "No" if s.short_answer == "Yes" else "Yes"
    assert worked_steps(s, s.answer) == (True, True)
    assert worked_steps(s, f"{x} {other_sign} {y}. So: {s.short_answer}") == (False, True)
    assert worked_steps(s, f"{x} {sign} {y}. So: {other_answer}") == (True, False)
    assert worked_steps(s, "red circle [1, 2, 3, 4]") == (False, False)  # no comparison written
    count_chain = next(c for c in (corpus_sample(rng, SynthSpec(), task=CorpusTask.CHAIN) for _ in range(50))
                       if not c.short_answer.isalpha())
    assert worked_steps(count_chain, count_chain.answer) is None  # a count has no comparison


def test_the_probe_asks_comparisons_in_the_order_the_base_model_was_built_with(tmp_path):
    from grit_ray.config import ComparisonOrder, TinyModelSpec

    assert built_comparison_order(str(tmp_path)) is ComparisonOrder.AS_ASKED  # no marker: a trained checkpoint
    spec = TinyModelSpec(pretrain={"comparison_order": "canonical"})
    (tmp_path / "grit_ray_tiny.json").write_text(json.dumps({"spec": spec.model_dump(mode="json")}))
    assert built_comparison_order(str(tmp_path)) is ComparisonOrder.CANONICAL
    (tmp_path / "grit_ray_tiny.json").write_text(json.dumps({"spec": {"pretrain": {"steps": 10}}}))  # built before
    assert built_comparison_order(str(tmp_path)) is ComparisonOrder.AS_ASKED


def test_probe_of_an_untrained_model_reports_selection_and_fails_the_gate(tiny_model_dir, capsys):
    assert main(["model", "probe", str(tiny_model_dir), "--n", "3", "--threads", "1"]) == 0  # says it, exit 0
    out, err = capsys.readouterr()
    keys = {line.split()[0] for line in out.splitlines()}
    assert {"selection_2", "on_shape_2", "selection_many", "on_shape_many", "attention_named", "attention_other", "attention_head",
            "where_iou", "compare_accuracy", "tally_accuracy"} <= keys
    assert "selection gate:" in err
    assert main(["model", "probe", str(tiny_model_dir), "--n", "3", "--threads", "1", "--gate"]) == 1
    assert main(["model", "probe", str(tiny_model_dir / "missing")]) == 2


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    from transformers import AutoProcessor

    from grit_ray.models.tiny.pretrain import Encoder

    return Encoder(AutoProcessor.from_pretrained(tiny_model_dir), adapter_for(ModelFamily.QWEN2_5_VL))


def test_grounding_attention_points_each_box_at_its_shapes_image_token(encoder):
    import torch

    from grit_ray.models.tiny.pretrain import GroundingAttention, box_query_positions, corpus_batch

    red = Obj("red", "circle", (60, 10, 90, 40))  # centre (75, 25) of a 168x140 image: row 0, column 2 of 5x6
    blue = Obj("blue", "triangle", (0, 112, 30, 140))  # centre (15, 126): row 4, column 0
    answer = f"red circle {box_text(red.box)}, blue triangle {box_text(blue.box)}"
    s = CorpusSample(Image.new("RGB", (168, 140)), [red, blue], CorpusTask.LIST, PromptTemplate.DIRECT,
                     "List the shapes.", answer, [red.box, blue.box], answer)
    batch, (prompt_length,) = corpus_batch(encoder, [s])
    (red_positions, red_obj), (blue_positions, blue_obj) = box_query_positions(encoder, s, prompt_length)
    assert (red_obj, blue_obj) == (red, blue)
    ids = batch["input_ids"][0]
    # the positions predict exactly the tokens of each box, bracket to bracket (the space before it may share a token)
    assert encoder.tok.decode(ids[[p + 1 for p in red_positions]]).strip() == box_text(red.box)
    assert encoder.tok.decode(ids[[p + 1 for p in blue_positions]]).strip() == box_text(blue.box)
    # ... and where the shape is chosen (the probe's attention): the bracket and the first coordinate
    (choice, _), _ = box_query_positions(encoder, s, prompt_length, choice_only=True)
    assert encoder.tok.decode(ids[[p + 1 for p in choice]]).strip() == "[60" and choice == red_positions[:len(choice)]
    # attention that puts everything on the right image token scores ~0; on another token, a large loss
    grounding = GroundingAttention(adapter_for(ModelFamily.QWEN2_5_VL), encoder.tok, [(0, 0)])
    cells = (ids == grounding.image_token_id).nonzero().flatten()
    assert len(cells) == 30
    L = ids.shape[0]
    right = torch.zeros(1, 1, L, L)
    right[0, 0, red_positions, cells[2]] = 1.0
    right[0, 0, blue_positions, cells[24]] = 1.0
    wrong = torch.zeros(1, 1, L, L)
    wrong[0, 0, red_positions + blue_positions, cells[0]] = 1.0
    queries = [box_query_positions(encoder, s, prompt_length)]
    assert grounding.loss([right], batch, [s], queries) < 1e-5
    assert grounding.loss([wrong], batch, [s], queries) > 10
    plain = CorpusSample(s.image, s.objects, CorpusTask.COLOUR, PromptTemplate.DIRECT, "What colour?", "red", [], "red")
    assert grounding.loss([right], batch, [plain], [box_query_positions(encoder, plain, prompt_length)]) is None


def test_a_short_build_records_the_gate_in_its_report(tmp_path):
    from grit_ray.config import TinyModelSpec, TinyPretrainSpec
    from grit_ray.models.tiny import build_tiny_model

    spec = TinyModelSpec(hidden_size=64, num_layers=3, vision_depth=1,
                         pretrain=TinyPretrainSpec(steps=3, batch_size=2, warmup_steps=1, threads=1,
                                                           probe_scenes=8))
    out = build_tiny_model(tmp_path / "m", spec, log=lambda m: None)
    report = json.loads((out / "pretrain_report.json").read_text())
    assert report["probe"]["selection_2"] < SELECTION_GATE and report["selection_gate"].startswith("selection gate:")
