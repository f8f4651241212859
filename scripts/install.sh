#!/usr/bin/env bash
# Install midtrain into a virtual environment (default .venv; set MIDTRAIN_VENV to change it).
#   bash scripts/install.sh          # runtime only
#   bash scripts/install.sh test     # plus the test tools
#   bash scripts/install.sh eval     # plus lm-evaluation-harness (midtrain eval --tasks); extras combine: "eval,wandb"
# An existing torch in the environment is kept (e.g. a CUDA build on a cluster); otherwise torch 2.13.0 is
# installed (set MIDTRAIN_TORCH_INDEX to a wheel index, e.g. PyTorch's CPU index, to choose the build).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MIDTRAIN_VENV:-.venv}"
extras="${1:-}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
pip_q() { "$py" -m pip install --quiet --disable-pip-version-check "$@"; }
if ! "$py" -c "import torch" 2>/dev/null; then
  if [ -n "${MIDTRAIN_TORCH_INDEX:-}" ]; then pip_q --index-url "$MIDTRAIN_TORCH_INDEX" "torch==2.13.0"; else pip_q "torch==2.13.0"; fi
fi
# litdata without its unpinned torchvision requirement (see pyproject.toml); its other dependencies come with midtrain.
pip_q --no-deps "litdata==0.2.76"
if [ -n "$extras" ]; then pip_q -e ".[$extras]"; else pip_q -e .; fi
"$py" -c "import litgpt, litdata, midtrain" || { echo "install check failed: litgpt, litdata or midtrain does not import" >&2; exit 1; }
echo "midtrain installed in $venv (run: $venv/bin/midtrain --help)"
