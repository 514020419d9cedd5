"""The files that make a model directory loadable besides its weights (config, generation config,
tokenizer, chat template, processor), found for a local directory or a hub id alike."""

from __future__ import annotations

import shutil
from pathlib import Path

MODEL_SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
    "processor_config.json", "video_preprocessor_config.json", "added_tokens.json",
)


def model_source_dir(model_path: str) -> Path:
    """The directory holding ``model_path``'s files: the path itself, or for a hub id
    (``org/name``) its snapshot in the Hugging Face cache, fetching only the side files when
    missing (with HF_HUB_OFFLINE=1, the cache alone)."""
    local = Path(model_path).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_path, allow_patterns=list(MODEL_SIDE_FILES)))


def copy_side_files(model_path: str, dest: Path) -> list[str]:
    """Copy the side files of ``model_path`` into ``dest``; returns the names copied. A model
    without a config.json is an error: the copy would not load."""
    src = model_source_dir(model_path)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{model_path}: no config.json in {src}: the saved model would not load")
    copied = []
    for name in MODEL_SIDE_FILES:
        if (f := src / name).is_file():
            shutil.copy2(f, dest / name)  # follows the hub cache's symlinks to the blobs
            copied.append(name)
    return copied


def model_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a model, or None. Names that do not look like paths are hub model ids
    and are left to the loader (a cluster node may fetch them)."""
    local = Path(path).expanduser()
    if not local.exists():
        return "no such model directory" if path.startswith(("/", ".", "~")) else None
    if not (local / "config.json").exists():
        return "not an HF model directory (no config.json)"
    return None
