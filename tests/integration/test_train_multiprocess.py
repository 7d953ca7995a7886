"""Training across processes: 2 processes == 1 process; a 2-process checkpoint resumes
in 1 process on fewer devices."""

import json
import os
import subprocess
import sys

import numpy as np
from tests.subprocess_env import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = ["-m", "liveinterp.train", "--config=configs/micro.py:demo",
          "--config.checkpoint.every_steps=2", "--config.checkpoint.async_save=False",
          "--config.train.log_every=1", "--config.data.seq_len=64"]


def _run(cmd):
  out = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=400)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows}


# The 2- and 1-process runs stop at step 4 of a 6-step run (`--stop_at`, checkpointed),
# so neither runs the stage's end-of-run dev evaluation (one more compile in each
# process); the resume re-runs the same 6-step command and evaluates once at the end.
_SIX_STEPS = ("--config.train.steps=6",)


def test_two_processes_match_one_and_resume_in_one(tmp_path):
  w2, w1 = str(tmp_path / "two"), str(tmp_path / "one")
  _run(["bash", "launch/local_multiprocess.sh", "2", sys.executable, *COMMON,
        f"--workdir={w2}", "--cpu_devices=2", *_SIX_STEPS, "--stop_at=4"])
  _run([sys.executable, *COMMON, f"--workdir={w1}", "--cpu_devices=4", *_SIX_STEPS,
        "--stop_at=4"])
  l2, l1 = _losses(w2), _losses(w1)
  assert sorted(l2) == sorted(l1) == [1, 2, 3, 4]
  np.testing.assert_allclose([l2[s] for s in range(1, 5)], [l1[s] for s in range(1, 5)],
                             rtol=2e-5)
  # The 2-process (4-device) checkpoint continues in 1 process on 2 devices.
  out = _run([sys.executable, *COMMON, f"--workdir={w2}", "--cpu_devices=2", *_SIX_STEPS])
  assert "resumed from step 4" in out
  assert sorted(_losses(w2))[-1] == 6
