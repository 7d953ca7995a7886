#!/usr/bin/env bash
# Run the same training command on every worker of a Cloud TPU VM pod slice.
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a bash launch/tpu_vm.sh \
#       --config=configs/1b.py:pretrain --workdir=gs://bucket/runs/1b
# Steps: copy this checkout to every worker, run launch/setup.sh there, then start
# `python -m liveinterp.train ARGS` on all workers at once. JAX's TPU auto-detection
# (TPU_WORKER_HOSTNAMES, set by the TPU runtime) makes them one job; see
# liveinterp/common/distributed.py. Requires the gcloud CLI with TPU access.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=${REMOTE_DIR:-liveinterp}
cd "$(dirname "$0")/.."
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
    --command="$1"
}
tar --exclude=.venv --exclude=runs -czf /tmp/liveinterp_src.tgz .
gcloud compute tpus tpu-vm scp /tmp/liveinterp_src.tgz "$TPU_NAME":/tmp/ --zone="$ZONE" \
  $PROJECT_FLAG --worker=all
ssh_all "mkdir -p $REMOTE_DIR && tar -xzf /tmp/liveinterp_src.tgz -C $REMOTE_DIR && \
  cd $REMOTE_DIR && bash launch/setup.sh && pip_extra=\${PIP_EXTRA:-'jax[tpu]==0.10.2'} && \
  .venv/bin/pip install -q \"\$pip_extra\""
ARGS=$(printf ' %q' "$@")
ssh_all "cd $REMOTE_DIR && PYTHONPATH=\$PWD .venv/bin/python -m liveinterp.train $ARGS"
