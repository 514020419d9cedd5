"""Base-model builds are deterministic: the same spec and seed give the same bytes, another seed
other bytes (three short pretraining runs through both phases, the image-token and the
grounding-attention losses, with their probes, and one of InternVL3: about a minute, so not a unit
test). A head outside the network is refused by name."""

from __future__ import annotations

from grit_ray.config import ModelFamily, TinyModelSpec, TinyPretrainSpec
from grit_ray.models.tiny import build_tiny_model, directory_digest
from tests.unit.models.test_base_model import _corpus


def test_same_seed_same_corpus_and_same_bytes(tmp_path):
    assert [(s.question, s.answer) for s in _corpus(50, 3)] == [(s.question, s.answer) for s in _corpus(50, 3)]
    # 3 layers: the grounding attention supervises heads of layers 1 and 2; 2 of the 4 steps in the selection phase
    spec = TinyModelSpec(hidden_size=64, num_layers=3, vision_depth=1,
                         pretrain=TinyPretrainSpec(steps=4, batch_size=2, warmup_steps=1, selection_share=0.5,
                                                           probe_scenes=4))
    quiet = lambda msg: None  # noqa: E731
    a = build_tiny_model(tmp_path / "a", spec, log=quiet)
    b = build_tiny_model(tmp_path / "b", spec, log=quiet)
    c = build_tiny_model(tmp_path / "c", spec.model_copy(update={"seed": 1}), log=quiet)
    assert directory_digest(a) == directory_digest(b) != directory_digest(c)
    assert (a / "pretrain_report.json").exists()  # the probe's numbers are part of the same bytes
    # the image-token supervision through InternVL3's hook and grid as well
    internvl = build_tiny_model(tmp_path / "internvl", spec, log=quiet, family=ModelFamily.INTERNVL3)
    assert (internvl / "pretrain_report.json").exists()


def test_a_supervised_head_outside_the_network_is_refused(tmp_path):
    import pytest

    spec = TinyModelSpec(hidden_size=64, num_layers=2, vision_depth=1,
                         pretrain=TinyPretrainSpec(steps=2, batch_size=2, attention_heads=[(1, 0), (2, 0)]))
    with pytest.raises(ValueError, match=r"attention_heads: \[\(2, 0\)\] not in a 2-layer"):
        build_tiny_model(tmp_path / "m", spec, log=lambda msg: None)
