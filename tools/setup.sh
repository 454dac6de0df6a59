#!/usr/bin/env bash
# Set up tal in ./.venv (created if missing). Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch and torchvision (large, once per venv)" >&2
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
fi
echo "[setup] installing tal with its test, serve, text and clip extras" >&2
.venv/bin/pip install -q -e ".[test,serve,text,clip]"
# decord is optional: it has no wheel on some platforms, and PyAV covers decoding.
.venv/bin/pip install -q "decord>=0.6" 2>/dev/null || echo "[setup] decord unavailable; using PyAV" >&2
