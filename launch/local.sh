#!/usr/bin/env bash
# One process on this machine. Arguments go to `python -m liveinterp.train`, e.g.
#   bash launch/local.sh --config=configs/tiny.py:demo --workdir=runs/tiny/demo --cpu_devices=2
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
exec "${PYTHON:-.venv/bin/python}" -m liveinterp.train "$@"
