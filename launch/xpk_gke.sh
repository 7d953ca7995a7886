#!/usr/bin/env bash
# GKE via xpk (TPU multislice): build an image from this checkout and start a workload.
#   CLUSTER=my-cluster TPU_TYPE=v5p-256 NUM_SLICES=2 bash launch/xpk_gke.sh \
#       --config=configs/7b.py:pretrain --config.mesh.dcn_data=2 --workdir=gs://bucket/7b
# xpk sets MEGASCALE_* / TPU_WORKER_* on every pod; liveinterp.common.distributed picks
# them up (kind "tpu"), and mesh.dcn_* spans the slices. Requires xpk + docker + gcloud.
set -euo pipefail
: "${CLUSTER:?set CLUSTER}" "${TPU_TYPE:?set TPU_TYPE}"
NUM_SLICES=${NUM_SLICES:-1}
WORKLOAD=${WORKLOAD:-liveinterp-$(date +%Y%m%d-%H%M%S)}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
cd "$(dirname "$0")/.."
ARGS=$(printf ' %q' "$@")
xpk workload create \
  --cluster="$CLUSTER" --workload="$WORKLOAD" --tpu-type="$TPU_TYPE" \
  --num-slices="$NUM_SLICES" --base-docker-image="$BASE_IMAGE" --script-dir=. \
  --command="bash launch/setup.sh && .venv/bin/pip install -q 'jax[tpu]==0.10.2' && \
PYTHONPATH=\$PWD .venv/bin/python -m liveinterp.train $ARGS"
