#!/usr/bin/env bash
# The main job: set-up (idempotent), then the tiny default run on this machine.
# Re-running resumes where it stopped. Outputs go to runs/tiny/ (TensorBoard logs,
# checkpoints, result JSON). Override the output directory with RUN_DIR=...
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
RUN_DIR=${RUN_DIR:-runs/tiny}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=3
echo "[main] demo stage: tiny LLM on generated tokens, sharded over 2 CPU devices"
.venv/bin/python -m liveinterp.train --config=configs/tiny.py:demo \
  --workdir="$RUN_DIR/demo" --cpu_devices=2 "$@"
echo "[main] TensorBoard: .venv/bin/tensorboard --logdir $RUN_DIR"
