#!/usr/bin/env bash
# Install midtrain into a virtual environment (default .venv; set MIDTRAIN_VENV to change it).
#   bash scripts/install.sh          # runtime only
#   bash scripts/install.sh test     # plus the test tools
#   bash scripts/install.sh eval     # plus lm-evaluation-harness (midtrain eval --tasks); extras combine: "eval,wandb"
#   bash scripts/install.sh export   # plus transformers and safetensors (midtrain export; loading what it writes)
# An existing torch in the environment is kept (e.g. a CUDA build on a cluster); otherwise torch 2.13.0 is
# installed (set MIDTRAIN_TORCH_INDEX to a wheel index, e.g. PyTorch's CPU index, to choose the build).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MIDTRAIN_VENV:-.venv}"
extras="${1:-}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
# pip's resolver reports litdata's unpinned torchvision requirement (left out on purpose, see pyproject.toml) as an
# ERROR after every install that follows litdata's; those lines are replaced by one note, everything else is shown.
pip_q() {
  local log
  log="$(mktemp)"
  if "$py" -m pip install --quiet --disable-pip-version-check "$@" 2>"$log"; then
    if grep -q "litdata .* requires torchvision, which is not installed" "$log"; then
      echo "note: litdata is installed without torchvision on purpose (token data never needs it)"
    fi
    grep -v -e "litdata .* requires torchvision, which is not installed" \
            -e "pip's dependency resolver does not currently take into account" \
            -e "^WARNING: Location '.*' is ignored" "$log" >&2 || true
    rm -f "$log"
  else
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
}
if ! "$py" -c "import torch" 2>/dev/null; then
  if [ -n "${MIDTRAIN_TORCH_INDEX:-}" ]; then pip_q --index-url "$MIDTRAIN_TORCH_INDEX" "torch==2.13.0"; else pip_q "torch==2.13.0"; fi
fi
# litdata without its unpinned torchvision requirement (see pyproject.toml); its other dependencies come with midtrain.
pip_q --no-deps "litdata==0.2.76"
if [ -n "$extras" ]; then pip_q -e ".[$extras]"; else pip_q -e .; fi
"$py" -c "import litgpt, litdata, midtrain" || { echo "install check failed: litgpt, litdata or midtrain does not import" >&2; exit 1; }
echo "midtrain installed in $venv (run: $venv/bin/midtrain --help)"
