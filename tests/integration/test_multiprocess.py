"""Two processes on 127.0.0.1 form one 4-device job: psum and sharded matmul match numpy."""

import json
import os
import subprocess
import sys

import pytest

from liveinterp.common import distributed
from tests.subprocess_env import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("dcn_data", [1, 2])
def test_two_processes_psum_and_matmul(dcn_data):
  cmd = ["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "2", sys.executable,
         "-m", "liveinterp.common.distributed_check", "--cpu_devices=2",
         f"--dcn_data={dcn_data}"]
  out = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  rows = [json.loads(line.split("] ", 1)[1]) for line in out.stdout.splitlines()
          if "] {" in line]
  assert sorted(r["process"] for r in rows) == [0, 1]
  for r in rows:
    assert r["processes"] == 2 and r["devices"] == 4 and r["local_devices"] == 2
    assert r["psum"] == r["psum_expected"] == 10.0
    assert r["matmul_max_err"] < 1e-4
    if dcn_data == 2:
      assert r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}


@pytest.mark.parametrize("env,kind", [
    ({}, "single"),
    ({"LIVEINTERP_COORDINATOR": "127.0.0.1:1234", "LIVEINTERP_NUM_PROCESSES": "2",
      "LIVEINTERP_PROCESS_ID": "1"}, "env"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "slurm"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, "single"),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, "single"),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "c:8080"}, "tpu"),
])
def test_cluster_detection(env, kind):
  spec = distributed.detect_cluster(env)
  assert spec.kind == kind
  if kind == "env":
    assert spec.initialize_kwargs() == {"coordinator_address": "127.0.0.1:1234",
                                        "num_processes": 2, "process_id": 1}


def test_explicit_flags_win_and_are_checked():
  spec = distributed.detect_cluster({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"},
                                    "10.0.0.1:9", 4, 3)
  assert spec.kind == "explicit" and spec.process_id == 3
  with pytest.raises(ValueError, match="missing \\['process_id'\\]"):
    distributed.detect_cluster({}, "h:1", 2, None)
  with pytest.raises(ValueError, match="process_id=5 not in"):
    distributed.detect_cluster({}, "h:1", 2, 5)
  with pytest.raises(ValueError, match="LIVEINTERP_NUM_PROCESSES.*not an integer"):
    distributed.detect_cluster({"LIVEINTERP_COORDINATOR": "h:1",
                                "LIVEINTERP_NUM_PROCESSES": "two", "LIVEINTERP_PROCESS_ID": "0"})
