#!/usr/bin/env bash
# Install midtrain with its test tools into .venv, then run the test suite (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec "${MIDTRAIN_VENV:-.venv}/bin/python" -m pytest "$@"
