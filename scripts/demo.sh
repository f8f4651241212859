#!/usr/bin/env bash
# Install midtrain into .venv (see scripts/install.sh) and run the demo: a trunk and three midtraining branches on
# text from Python's own standard library, on the CPU, in a few minutes. Extra arguments go to `midtrain demo`
# (e.g. --out_dir elsewhere, --size tiny for a seconds-long smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${MIDTRAIN_VENV:-.venv}/bin/midtrain" demo "$@"
