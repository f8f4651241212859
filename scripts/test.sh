#!/usr/bin/env bash
# Install midtrain with its test tools into .venv, then run the test suite on two worker processes (the CI machine's
# two cores; set MIDTRAIN_TEST_WORKERS to change it, 0 for one process). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec "${MIDTRAIN_VENV:-.venv}/bin/python" -m pytest -n "${MIDTRAIN_TEST_WORKERS:-2}" --dist worksteal "$@"
