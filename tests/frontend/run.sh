#!/usr/bin/env bash
# Frontend + server check of Latent Space Control in a real ComfyUI with its web frontend in headless Chromium.
# usage: COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=python] [CHROMIUM=chromium] tests/frontend/run.sh [--out DIR]
# exit:  0 every check passed, 1 a check failed, 2 a prerequisite is missing. See README.md here.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

missing() { echo "$*" >&2; exit 2; }
[ -n "${COMFYUI_PATH:-}" ] || missing "COMFYUI_PATH is not set: point it at a ComfyUI export (the folder with main.py)"
[ -f "$COMFYUI_PATH/main.py" ] || missing "COMFYUI_PATH=$COMFYUI_PATH has no main.py"
PYTHON=$(command -v "${COMFYUI_PYTHON:-python3}") || missing "COMFYUI_PYTHON=${COMFYUI_PYTHON:-python3} not found"
CHROMIUM=$(command -v "${CHROMIUM:-chromium}") || missing "Chromium not found (${CHROMIUM:-chromium}): apt-get install chromium, or set CHROMIUM"
command -v node >/dev/null || missing "node (20+) is required"
export COMFYUI_PATH CHROMIUM
# Bytecode goes to a temp folder, never into the pack or into ComfyUI.
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-${TMPDIR:-/tmp}/lsc-frontend-check-pycache}

if [ ! -d "$HERE/node_modules/playwright-core" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund) || missing "npm ci (playwright-core) failed in $HERE"
fi
exec timeout -k 30 1500 "$PYTHON" "$HERE/check.py" "$@"
