#!/usr/bin/env bash
# The main job: set-up (idempotent), then the tiny zh→en pipeline end to end on this
# machine — corpus → tokenizer → codec → ASR judge (the ASR-BLEU recogniser) → speech
# tokens → pretraining → SFT (text-only turns, then with speech) → RL stage 1 → RL stage 2
# → evaluation → export — sharded over 2 CPU devices, then the RL table (SFT vs RL stage 1
# vs stage 2). Re-running resumes where it stopped (finished steps are skipped, an
# interrupted stage continues from its last checkpoint, an up-to-date export and RL-table
# report are reused).
# Outputs: runs/data (corpus), RUN_DIR/<stage> (checkpoints, TensorBoard, result.json),
# RUN_DIR/eval_<stage> (report of the selected stage, RUN_DIR/selected_stage.json:
# markdown + plots; eval/ for sft), RUN_DIR/export (the serving artifact), RUN_DIR/example_translation.wav (+ its
# source and JSON), RUN_DIR/rl_table.json + rl_table_latency_quality.png (the RL table of
# this run; benchmarks/results/ keeps the committed tables the README is rendered from).
# RUN_DIR=... overrides runs/tiny; extra args go to the recipe (e.g. --steps=..., or
# --config.a.b=v overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
RUN_DIR=${RUN_DIR:-runs/tiny}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/python -m liveinterp.recipe --recipe=tiny --run_dir="$RUN_DIR" --cpu_devices=2 "$@"
# The RL table evaluates every stage the same way (text only, RUN_DIR/eval_table_<stage>,
# reports made once) — a benchmark script, so run here rather than imported by the
# library (liveinterp never imports benchmarks/). Needs a trained sft at least.
if [ -d "$RUN_DIR/sft/checkpoints" ]; then
  .venv/bin/python -m benchmarks.rl_table --run_dir="$RUN_DIR" --evaluate --stages=sft,rl1,rl2 \
    --out="$RUN_DIR/rl_table.json"
fi

# Where everything is: the report of the selected stage, chosen as the recipe's evaluate
# and export steps choose it (recipe.select_stage: by dev score; RUN_DIR/selected_stage.json).
STAGE=$(.venv/bin/python -c "import sys; from liveinterp import recipe; print(recipe.select_stage(sys.argv[1])[0])" "$RUN_DIR" 2>/dev/null || true)
if [ -z "$STAGE" ]; then
  echo "[main] no trained LLM stage (sft, rl1, rl2) in $RUN_DIR yet: re-run to continue"
  exit 0
fi
REPORT_DIR="$RUN_DIR/eval_$STAGE"
[ "$STAGE" = sft ] && REPORT_DIR="$RUN_DIR/eval"
echo "[main] report ($STAGE): $REPORT_DIR/report_test.md (plots: $REPORT_DIR/*.png)"
echo "[main] RL table: $RUN_DIR/rl_table.json, plot $RUN_DIR/rl_table_latency_quality.png"
echo "[main] exported artifact: $RUN_DIR/export"
echo "[main] example translation: $RUN_DIR/example_translation.wav (source $RUN_DIR/example_source.wav, text and timeline $RUN_DIR/example_translation.json)"
echo "[main] serve it: .venv/bin/python -m liveinterp.serve --export=$RUN_DIR/export   then open http://127.0.0.1:8765/"
echo "[main] TensorBoard: .venv/bin/tensorboard --logdir $RUN_DIR"
