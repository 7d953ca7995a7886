"""Every CLI reports a user error in one line, `python -m <module>: error: ...`, with exit
code 2 and no traceback, before doing any work (issue #12; liveinterp/common/cli.py).
The training CLI's cases are in test_train_cli.py, translate's in
tests/unit/inference/test_translate_cli.py."""

import os
import subprocess
import sys

import pytest

from tests.integration.test_train_cli import ROOT
from tests.subprocess_env import subprocess_env

CASES = [
    ("liveinterp.evaluate", ["--run_dir={tmp}/none"],
     "--run_dir={tmp}/none: no such directory"),
    ("liveinterp.evaluate", ["--run_dir={tmp}", "--config=configs/micro.py",
                             "--data_dir={tmp}/data"],
     "data.data_dir='{tmp}/data' does not exist (or is not a directory); create the corpus "
     "build with: python -m data_pipelines.build --pair=zh-en --size=micro "
     "--data_dir={tmp}/data"),
    ("liveinterp.evaluate", ["--run_dir={tmp}", "--bogus"], "Unknown command line flag "
                                                             "'bogus'"),
    ("liveinterp.evaluate", ["--run_dir={tmp}", "--stage=rl1"],  # a run of no recipe
     "--config is required: {tmp} has no rl1/config.json nor config.json"),
    ("liveinterp.recipe", ["--run_dir={tmp}/run", "--steps=data,bogus"],  # data not built
     "--steps: unknown step(s) bogus; expected some of data, codec"),
    ("liveinterp.recipe", ["--run_dir={tmp}/file/run", "--steps=codec"],
     "--run_dir={tmp}/file/run: cannot be created, {tmp}/file is not a directory"),
    ("data_pipelines.build", ["--size=micro"], "--data_dir is required"),
    ("data_pipelines.build", ["--size=micro", "--data_dir={tmp}/file/data"],
     "--data_dir={tmp}/file/data: cannot be created, {tmp}/file is not a directory"),
    ("data_pipelines.build", ["--size=micro", "--data_dir={tmp}/d",
                              "--max_sft_drop_fraction=2"],
     "--max_sft_drop_fraction=2.0: expected a fraction in [0, 1]"),
]


@pytest.mark.parametrize("module,args,msg", CASES,
                         ids=[f"{m.split('.')[-1]}:{a[-1]}" for m, a, _ in CASES])
def test_user_error_is_one_line_and_exit_code_2(tmp_path, module, args, msg):
  (tmp_path / "file").write_text("")
  fmt = dict(tmp=tmp_path)
  out = subprocess.run([sys.executable, "-m", module, *[a.format(**fmt) for a in args]],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
  assert out.stderr.startswith(f"python -m {module}: error: {msg.format(**fmt)}"), out.stderr
  assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
  assert sorted(os.listdir(tmp_path)) == ["file"]  # nothing was written


# Issue #11: every CLI that loads a config takes `--config.a.b=v` overrides, applied by
# config.load; an unknown field is one line naming it, exit code 2, before any model is
# built (and before anything is written).
BAD_OVERRIDE = "--config.no_such.field=1"
OVERRIDE_CASES = [
    ("liveinterp.train", ["--config=configs/micro.py:demo", "--workdir={tmp}/w",
                          BAD_OVERRIDE]),
    ("liveinterp.recipe", ["--run_dir={tmp}/run", "--steps=codec", BAD_OVERRIDE]),
    ("liveinterp.evaluate", ["--run_dir={tmp}", "--config=configs/micro.py:sft",
                             BAD_OVERRIDE]),
    ("liveinterp.translate", ["{tmp}/file", "--out={tmp}/o.wav", "--init=random",
                              "--config=configs/micro.py:sft", BAD_OVERRIDE]),
    ("data_pipelines.build", ["--size=micro", "--data_dir={tmp}/d", BAD_OVERRIDE]),
]


@pytest.mark.parametrize("module,args", OVERRIDE_CASES,
                         ids=[m.split(".")[-1] for m, _ in OVERRIDE_CASES])
def test_unknown_config_override_is_one_line_naming_it(tmp_path, module, args):
  (tmp_path / "file").write_text("")
  out = subprocess.run([sys.executable, "-m", module,
                        *[a.format(tmp=tmp_path) for a in args]],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
  assert out.stderr.startswith(f"python -m {module}: error: config spec "), out.stderr
  assert "override no_such.field: unknown field 'no_such'" in out.stderr, out.stderr
  assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
  assert sorted(os.listdir(tmp_path)) == ["file"]  # nothing was written


BUILD_OVERRIDE_CASES = [
    # The override reaches the model config the build uses (validated by config.load).
    (["--config.tokenizer.text_vocab_size=0"],
     "tokenizer.text_vocab_size=0: must be positive"),
    # The pair and size are the build's own flags.
    (["--config.data.pair=en-es"],
     "config spec 'micro': override data.pair: the build takes it from --pair"),
]


@pytest.mark.parametrize("args,msg", BUILD_OVERRIDE_CASES,
                         ids=[a[0].split("=")[0] for a, _ in BUILD_OVERRIDE_CASES])
def test_build_config_override_is_applied_and_checked(tmp_path, args, msg):
  """data_pipelines.build applies --config.* to its model config: a bad value is one line
  naming the field, exit code 2, before anything is written."""
  out = subprocess.run([sys.executable, "-m", "data_pipelines.build", "--size=micro",
                        f"--data_dir={tmp_path}/d", *args],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
  assert out.stderr.startswith("python -m data_pipelines.build: error: "), out.stderr
  assert msg in out.stderr, out.stderr
  assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "d")
