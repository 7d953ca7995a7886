#!/usr/bin/env bash
# The main job: set-up (idempotent), then the tiny zh→en pipeline end to end on this
# machine — corpus → tokenizer → codec → speech tokens → pretraining → SFT → evaluation —
# sharded over 2 CPU devices. Re-running resumes where it stopped (finished steps are
# skipped, an interrupted stage continues from its last checkpoint).
# Outputs: runs/data (corpus), runs/tiny/<stage> (checkpoints, TensorBoard, result.json),
# runs/tiny/eval (report). RUN_DIR=... overrides runs/tiny; extra args go to the recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
RUN_DIR=${RUN_DIR:-runs/tiny}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/python -m liveinterp.recipe --recipe=tiny --run_dir="$RUN_DIR" --cpu_devices=2 "$@"
echo "[main] TensorBoard: .venv/bin/tensorboard --logdir $RUN_DIR"
