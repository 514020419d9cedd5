"""A Hugging Face hub cache laid out as the hub client writes it (blobs, a snapshot of symlinks,
refs/main), built from a local model directory: runs started from a hub id are tested offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def hub_cache_from(model_dir: Path, cache: Path, repo_id: str, repo_type: str = "model") -> dict[str, str]:
    """Put ``model_dir``'s files (a dataset's: its folders too) under ``cache`` as ``repo_id``;
    returns the environment that makes transformers, vLLM and huggingface_hub find it there
    without a network."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(model_dir.rglob("*") if repo_type == "dataset" else model_dir.iterdir()):
        if not f.is_file():
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / f.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
