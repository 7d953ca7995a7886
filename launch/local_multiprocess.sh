#!/usr/bin/env bash
# Run N copies of a command as one JAX job on this machine (coordinator on 127.0.0.1).
#   bash launch/local_multiprocess.sh N python -m liveinterp.train --config=... --workdir=...
# Each process gets LIVEINTERP_{COORDINATOR,NUM_PROCESSES,PROCESS_ID}, which
# liveinterp.common.distributed.initialize() reads. Output of process i is prefixed [i].
# Exits non-zero if any process fails; kills the others when one fails.
set -euo pipefail
N=${1:?usage: local_multiprocess.sh N COMMAND...}; shift
[ "$#" -gt 0 ] || { echo "usage: local_multiprocess.sh N COMMAND..." >&2; exit 2; }
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PORT=${LIVEINTERP_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM
for ((i = 0; i < N; i++)); do
  LIVEINTERP_COORDINATOR="127.0.0.1:$PORT" LIVEINTERP_NUM_PROCESSES="$N" \
  LIVEINTERP_PROCESS_ID="$i" "$@" > >(sed -u "s/^/[$i] /") 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do
  if ! wait "$p"; then rc=1; cleanup; fi
done
exit $rc
