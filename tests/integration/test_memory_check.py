"""A stage whose compiled train step will not fit stops before its first step with one
line naming the memory and what to lower, exit code 2 (issue #12; before: the OS killed
`data.seq_len=4096` at 17 GB with no message), in the train loop and the RL trainer.
`train.memory_limit_gb` stands in for a small machine; liveinterp/common/memory.py,
tests/unit/common/test_memory.py."""

import glob
import os
import re
import subprocess

import pytest

from tests.integration.test_rl_stage import _cmd as _rl_cmd, _env as _rl_env
from tests.integration.test_rl_stage import sft_run  # noqa: F401  # pylint: disable=unused-import
from tests.integration.test_train_cli import ROOT, _cmd
from tests.subprocess_env import subprocess_env


def test_step_that_does_not_fit_is_one_line_and_exit_code_2(tmp_path):
  w = str(tmp_path / "run")
  out = subprocess.run(_cmd(w, "--config.train.memory_limit_gb=0.001",
                            "--config.train.steps=2"),
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
  assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
  prefix = ("python -m liveinterp.train: error: [demo] not enough memory: the compiled "
            "train step needs ~")
  assert out.stderr.startswith(prefix), out.stderr
  # per device, x the 2 CPU devices of this host, against the 1 MiB (0.001 GiB) given
  assert re.search(r"per device \(state [\d.]+ [KMG]iB, batch and other inputs .*\) x 2 "
                   r"devices sharing this host = [\d.]+ [KMG]iB but this host has 1.0 MiB "
                   r"available \(train.memory_limit_gb\)", out.stderr), out.stderr
  assert "lower train.batch_size or data.seq_len" in out.stderr
  assert "compiled train step in" in out.stdout  # stopped after compiling, before step 1
  assert "step 1/" not in out.stdout and not os.path.exists(os.path.join(w, "result.json"))
  assert not [p for p in glob.glob(os.path.join(w, "checkpoints", "*"))
              if os.path.basename(p).isdigit()]


@pytest.mark.slow  # ~5 min on 2 loaded cores: the micro build, SFT weights, a rollout
def test_rl_update_that_does_not_fit_is_one_line_and_exit_code_2(sft_run, tmp_path):
  w = str(tmp_path / "rl1")
  cache = str(tmp_path / "xla_cache")
  out = subprocess.run(_rl_cmd(*sft_run, w, "--config.train.memory_limit_gb=0.001"),
                       cwd=ROOT, env=_rl_env(cache), capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
  assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
  assert out.stderr.startswith("python -m liveinterp.train: error: [rl1] not enough memory: "
                               "the compiled RL update needs ~"), out.stderr
  assert re.search(r"per device \(state [\d.]+ [KMG]iB, batch and other inputs .*\) but "
                   r"this host has 1.0 MiB available \(train.memory_limit_gb\): lower "
                   r"train.batch_size or rl.seq_len", out.stderr), out.stderr  # 1 device
  assert not [p for p in glob.glob(os.path.join(w, "checkpoints", "*"))
              if os.path.basename(p).isdigit()]  # stopped before the first update
  assert not os.path.exists(os.path.join(w, "metrics.jsonl"))
