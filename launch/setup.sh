#!/usr/bin/env bash
# Idempotent set-up from scratch: creates .venv and installs the pinned requirements.
# Re-runs are no-ops unless requirements.txt or NO_DEPS (below) changed. Nothing is
# assumed pre-installed but python3 (>= 3.11) with venv; espeak-ng comes from the
# espeakng-loader wheel, and the optional LibreOffice/Bible/Ding corpora are fetched by
# the data build (apt-get download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON_BIN:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "[setup] python3 venv/ensurepip missing: installing python3-venv with apt-get"
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Installed without their declared dependencies (a second pip line): SimulEval 1.1.4's
# metadata pins tqdm==4.64.1, bitarray==2.6.0, yt-dlp and pytest-flake8, none of which its
# evaluator or scorers import; what they do import is pinned in requirements.txt.
NO_DEPS="simuleval==1.1.4"
stamp=.venv/.requirements.sha256
want=$( { cat requirements.txt; echo "no-deps: $NO_DEPS"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements into .venv (first time: ~2 min, ~3 GB)"
  start=$(date +%s)
  # pip's own exit status decides (pipefail); only the index's location warnings are hidden
  quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
  quiet .venv/bin/python -m pip install -q --upgrade pip
  quiet .venv/bin/python -m pip install -q -r requirements.txt
  # shellcheck disable=SC2086  # NO_DEPS is a space-separated list of pins
  quiet .venv/bin/python -m pip install -q --no-deps $NO_DEPS
  # pip check, less the declared-but-unused requirements of the --no-deps packages.
  ignore="^(No broken requirements"
  for pin in $NO_DEPS; do ignore="$ignore|${pin%%==*} ${pin#*==} "; done
  unmet=$(.venv/bin/python -m pip check 2>&1 | grep -v -E "$ignore)" || true)
  [ -z "$unmet" ] || { echo "$unmet" >&2; exit 1; }
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c "import jax, flax, grain, orbax.checkpoint, clu.metric_writers, simuleval.evaluator.scorers.latency_scorer, websockets, selenium" \
    || { echo "[setup] import check failed" >&2; exit 1; }
  echo "$want" > "$stamp"
  echo "[setup] done in $(( $(date +%s) - start ))s"
else
  echo "[setup] .venv up to date"
fi
