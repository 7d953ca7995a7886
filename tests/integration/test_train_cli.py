"""The training CLI: demo stage end to end, SIGTERM saves and exits 75 ("preempted,
re-run me", issue #12), re-run resumes."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.subprocess_env import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "liveinterp.train", "--config=configs/micro.py:demo",
          f"--workdir={workdir}", "--cpu_devices=2", *extra]


def _steps(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
                if os.path.basename(p).isdigit())


# The run's flags. The re-run repeats them exactly ("re-run the same command to resume"),
# so its train step is the same program and loads from the suite's compilation cache
# (tests/conftest.py) instead of compiling again (~45 s of CPU): a different
# train.steps would change the learning-rate schedule inside the step. `--stop_at` bounds it.
_PREEMPTED_RUN = ("--config.train.steps=100000", "--config.checkpoint.every_steps=100000",
                  "--config.train.log_every=1")


def test_sigterm_saves_exits_preempted_and_rerun_resumes(tmp_path):
  w = str(tmp_path / "run")
  proc = subprocess.Popen(_cmd(w, *_PREEMPTED_RUN),
                          cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  seen = []
  # A hang guard, not a speed bound: start-up, compile and 3 steps take ~1 min on an idle
  # machine and several times that on 2 loaded cores (the suite runs 2 workers).
  deadline = time.time() + 600
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
  out = subprocess.run(_cmd(w, *_PREEMPTED_RUN, f"--stop_at={saved[0] + 2}"),
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  assert f"resumed from step {saved[0]}" in out.stdout
  assert _steps(w)[-1] == saved[0] + 2
  assert json.load(open(os.path.join(w, "result.json")))["step"] == saved[0] + 2
  assert glob.glob(os.path.join(w, "tensorboard", "events.out.tfevents.*"))


# Issue #12: bad values are reported before anything is built, in one line naming the
# field, with exit code 2 (liveinterp/common/cli.py). Before: a traceback with exit code 1
# from wherever the value was first used ("negative dimensions", a grain message, a raw
# JAX IndivisibleError after compiling), or no message at all (seq_len=4096 on micro was
# killed by the OS at 17 GB).
BAD_RUNS = [
    ("demo", ["--config.train.batch_size=3"],  # 2 CPU devices, both data-parallel
     "train.batch_size=3 is not divisible by the 2 data-parallel devices"),
    ("demo", ["--config.data.seq_len=4096"], "data.seq_len=4096 exceeds llm.max_len=512"),
    ("codec", ["--config.data.codec_crop_ms=-5"], "data.codec_crop_ms=-5: must be positive"),
    ("sft", ["--config.audio.sample_rate=-16000"], "audio.sample_rate=-16000: must be "
                                                   "positive"),
    ("sft", ["--config.data.data_dir={tmp}"],
     "data.data_dir='{tmp}' does not hold the corpus build liveinterp_corpus/zh_en_micro "
     "(data.pair='zh-en', data.build='micro'; no prepared build at "
     "{tmp}/liveinterp_corpus/zh_en_micro); create it with: python -m data_pipelines.build "
     "--pair=zh-en --size=micro --data_dir={tmp}"),
    ("rl1", ["--config.data.data_dir={tmp}/none"], "data.data_dir='{tmp}/none' does not "
                                                    "exist"),
    ("demo", ["--config.train.stepz=3"], "config spec 'configs/micro.py:demo': override "
                                         "train.stepz: unknown field 'train.stepz' (train: "
                                         "did you mean 'steps'?"),
    ("demo", ["--workdir=/dev/null/run"], "--workdir=/dev/null/run: cannot be created"),
]


def _bad_run(tmp_path, stage, extra):
  w = str(tmp_path / "run")
  args = [a.format(tmp=tmp_path) for a in extra]
  cmd = [a for a in _cmd(w, *args)
         if not (a == f"--workdir={w}" and any(x.startswith("--workdir=") for x in args))]
  cmd[3] = f"--config=configs/micro.py:{stage}"
  return w, subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                           timeout=120)


@pytest.mark.parametrize("stage,extra,msg", BAD_RUNS,
                         ids=[f"{s}:{e[0].split('.')[-1]}" for s, e, _ in BAD_RUNS])
def test_bad_config_is_one_line_and_exit_code_2_before_any_work(tmp_path, stage, extra, msg):
  w, out = _bad_run(tmp_path, stage, extra)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
  assert out.stderr.startswith(
      f"python -m liveinterp.train: error: {msg.format(tmp=tmp_path)}"), out.stderr
  assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
  assert not os.path.exists(w)  # nothing was built or written


def test_verbose_shows_the_traceback_of_a_user_error(tmp_path):
  _, out = _bad_run(tmp_path, "codec", ["--config.data.codec_crop_ms=-5", "--verbose"])
  assert out.returncode == 1 and "Traceback" in out.stderr
  assert "ConfigError: data.codec_crop_ms=-5: must be positive" in out.stderr
