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
# The docs extra: .ci/run builds the documentation with `mkdocs build --strict`.
echo "[setup] installing the docs extra (mkdocs)" >&2
.venv/bin/pip install -q -e ".[docs]"
# The browser tests (tests/test_web.py) drive Debian's Chromium with playwright (the test extra); playwright's
# own browser download is not used. Installed here when missing and we may (root with apt-get).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing chromium for the browser tests (apt-get)" >&2
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || echo "[setup] apt-get install chromium failed: tests/test_web.py will fail until it is installed" >&2
  else
    echo "[setup] no /usr/bin/chromium and not root: install chromium (or set TAL_CHROMIUM) for tests/test_web.py" >&2
  fi
fi
