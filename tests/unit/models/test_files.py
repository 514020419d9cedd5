"""A model given by hub id: its config, tokenizer, processor and chat template are found in the
hub cache (offline), so saved models and checkpoints carry them."""

import json
import os
import subprocess
import sys

from tests.hub_cache import hub_cache_from

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_side_files_of_a_hub_id_come_from_the_offline_cache(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    (src / "tokenizer_config.json").write_text("{}")
    (src / "chat_template.jinja").write_text("{{ messages }}")
    (src / "preprocessor_config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"weights are not side files")
    env = {**os.environ, **hub_cache_from(src, tmp_path / "hub", "grit-test/tiny"), "PYTHONPATH": REPO}
    out = tmp_path / "out"
    out.mkdir()
    code = ("import sys; from pathlib import Path; from grit_ray.models.files import copy_side_files; "
            "print(','.join(copy_side_files('grit-test/tiny', Path(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["chat_template.jinja", "config.json", "preprocessor_config.json",
                                                     "tokenizer_config.json"]
    assert not (out / "config.json").is_symlink()  # real files, not links into the cache
    assert json.loads((out / "config.json").read_text()) == {"model_type": "qwen2_5_vl"}


def test_a_model_without_config_is_an_error(tmp_path):
    from grit_ray.models.files import copy_side_files

    (tmp_path / "m").mkdir()
    try:
        copy_side_files(str(tmp_path / "m"), tmp_path)
    except FileNotFoundError as e:
        assert "no config.json" in str(e)
    else:
        raise AssertionError("a directory without config.json was accepted")
