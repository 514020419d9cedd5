#!/usr/bin/env bash
# The one-GPU check (docs/cluster.md, "The one-GPU check"), for a GPU machine with Python 3.12, torch
# and transformers but no network, Ray, vLLM, DeepSpeed or pydantic:
#   bash bench/gpu_check.sh wheels   # here (pip and a package index): what that image lacks, into .whl/
#   bash bench/gpu_check.sh run      # there: installs .whl/ offline into /tmp/site and runs the check
#                                    # on CUDA; the report goes to $OUT/gpu_check.json (or ./)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
# versions from the GPU lock, so the check runs what a GPU install would
NEEDED="pydantic pydantic_core annotated-types typing-inspection typing_extensions hjson"
pin() { grep -i -m1 "^$1==" requirements/gpu-lock.txt || { echo "$1 is not in requirements/gpu-lock.txt" >&2; exit 1; }; }
case "${1:-}" in
  wheels)
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    pins=(); for n in $NEEDED; do pins+=("$(pin "$n")"); done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEELS" "${pins[@]}"
    # DeepSpeed is published as a source archive: built here into a pure-Python wheel (no ops compiled;
    # the learner uses torch's AdamW). Needs the project's .venv (its setup imports torch).
    DS_BUILD_OPS=0 .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$(pin deepspeed)"
    ls "$WHEELS" && du -sh "$WHEELS";;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHEELS"/*.whl
    PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" exec python3 bench/gpu_check.py --device cuda \
      --out "${OUT:-.}/gpu_check.json" "${@:2}";;
  *) echo "usage: bash bench/gpu_check.sh wheels|run [bench/gpu_check.py options]" >&2; exit 2;;
esac
