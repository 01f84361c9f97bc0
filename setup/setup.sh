#!/usr/bin/env bash
# Set up everything sgtui needs on this machine from a checkout; idempotent and fast when already done.
#   .venv/                         sgtui itself (core: textual, rich, typer, httpx, orjson, nvidia-ml-py) + dev tools
#   ~/.cache/sgtui/venvs/...       one venv per engine (they pin different torch versions)
#   ~/.cache/sgtui/models/...      the tiny built-in model (CPU machines)
# Heavy parts are cached outside the checkout, keyed by version, so a fresh clone reuses them. They are made by
# `sgtui setup` (the scripts in sgtui/setup_scripts/, shipped in the package), which this runs from .venv:
# an installed sgtui (`uv tool install`, pipx) runs the very same `sgtui setup`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

py="${PYTHON:-python3}"
stamp=".venv/.sgtui-setup-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv (sgtui + dev tools)" >&2
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi

if [ "${SGTUI_SKIP_ENGINES:-0}" = "1" ]; then
  exit 0
fi
# GPU or CPU as sgtui itself decides (an NVIDIA GPU seen through NVML: the GPU venvs; else the CPU set).
exec .venv/bin/sgtui setup "$@"
