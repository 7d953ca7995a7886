"""The training CLI: demo stage end to end, SIGTERM saves and exits 75 ("preempted,
re-run me", issue #12), re-run resumes."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "liveinterp.train", "--config=configs/micro.py:demo",
          f"--workdir={workdir}", "--cpu_devices=2", *extra]


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)
  return env


def _steps(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
                if os.path.basename(p).isdigit())


def test_sigterm_saves_exits_preempted_and_rerun_resumes(tmp_path):
  w = str(tmp_path / "run")
  proc = subprocess.Popen(_cmd(w, "--config.train.steps=100000",
                               "--config.checkpoint.every_steps=100000",
                               "--config.train.log_every=1"),
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  seen = []
  deadline = time.time() + 180
  for line in proc.stdout:
    seen.append(line)
    if "step 3/" in line:
      proc.send_signal(signal.SIGTERM)
      break
    assert time.time() < deadline, "".join(seen)
  rest = proc.communicate(timeout=120)[0]
  assert proc.returncode == 75, "".join(seen) + rest  # was 0: read as "finished"
  assert "saving a checkpoint and stopping" in rest
  assert "re-run the same command to resume" in rest and " done at step" not in rest
  saved = _steps(w)
  assert len(saved) == 1 and 3 <= saved[0] < 100000
  result = json.load(open(os.path.join(w, "result.json")))
  assert result["stopped_early"] and result["step"] == saved[0]
  assert result["stopped"] == "preempted"
  out = subprocess.run(_cmd(w, f"--config.train.steps={saved[0] + 2}",
                            "--config.checkpoint.every_steps=100000"),
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  assert f"resumed from step {saved[0]}" in out.stdout
  assert _steps(w)[-1] == saved[0] + 2
  assert glob.glob(os.path.join(w, "tensorboard", "events.out.tfevents.*"))
