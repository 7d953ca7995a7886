"""config.load: the one loader of configs (issue #11): spec forms, `a.b=v` overrides parsed
as ml_collections' `--config.a.b=v` is, errors that name the spec and the field, locking,
validation; and cli.split_config_overrides, the command-line side."""

import glob
import inspect
import json
import os
import warnings

import pytest
from absl import flags
from ml_collections import config_flags

from configs import base
from liveinterp.common import cli, config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not p.endswith("__init__.py"))
# Every stage name a recipe file's get_config(stage) is called with (liveinterp.recipe).
STAGE_NAMES = (*config_lib.STAGES, "sft_text", *base.RL_ABLATIONS)


def _module(path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("_direct_" + os.path.basename(path)[:-3],
                                                path)
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m


def _cases():
  for path in CONFIG_FILES:
    m = _module(path)
    if inspect.signature(m.get_config).parameters:
      for stage in STAGE_NAMES:
        yield path, stage
    else:
      yield path, None


@pytest.mark.parametrize("path,stage", list(_cases()),
                         ids=lambda v: os.path.basename(v) if isinstance(v, str) and
                         v.endswith(".py") else str(v))
def test_load_equals_get_config_for_every_file_and_stage(path, stage):
  direct = _module(path)
  want = direct.get_config(stage) if stage else direct.get_config()
  name = os.path.splitext(os.path.basename(path))[0]
  spec = f"{name}:{stage}" if stage else name
  got = config_lib.load(spec)
  assert got.to_dict() == want.to_dict()
  assert got.is_locked
  # the path form is the same config
  rel = os.path.relpath(path, ROOT) + (f":{stage}" if stage else "")
  assert config_lib.load(rel).to_dict() == want.to_dict()


def test_spec_forms(tmp_path, monkeypatch):
  want = _module(os.path.join(ROOT, "configs", "tiny.py")).get_config("sft").to_dict()
  for spec in ("tiny:sft", "tiny.py:sft", "configs/tiny.py:sft",
               os.path.join(ROOT, "configs", "tiny.py:sft")):
    assert config_lib.load(spec).to_dict() == want, spec
  assert config_lib.load("tiny").stage == "demo"  # get_config()'s own default
  monkeypatch.chdir(tmp_path)  # relative paths: the working directory, else the repository
  assert config_lib.load("configs/tiny.py:sft").to_dict() == want
  # A config file outside the repository (importing configs.micro), and a run's config.json.
  mine = tmp_path / "mine.py"
  mine.write_text("from configs import micro\n\n"
                  "def get_config(stage='sft'):\n"
                  "  c = micro.get_config(stage)\n"
                  "  c.train.steps, c.train.warmup_steps = 7, 1\n"
                  "  return c\n")
  c = config_lib.load(f"{mine}:pretrain")
  assert (c.stage, c.train.steps) == ("pretrain", 7)
  assert config_lib.load("mine.py").stage == "sft"
  saved = tmp_path / "config.json"
  saved.write_text(json.dumps(c.to_dict()))
  back = config_lib.load(str(saved), ["train.steps=9"])
  assert (back.stage, back.train.steps, back.llm.d_model) == ("pretrain", 9, c.llm.d_model)


def test_overrides_by_field_type():
  c = config_lib.load("tiny:sft", [
      "train.steps=300",               # int
      "train.learning_rate=3",         # float field: an int literal becomes 3.0
      "train.b1=0.8",                  # float
      "data.text_only=true",           # bool
      "data.size_from_data=False",     # bool
      "data.pair=en-zh",               # str
      "codec.strides=(2, 4, 5, 8)",    # tuple
      "encoder.left_chunks=2",
  ])
  assert c.train.steps == 300 and isinstance(c.train.steps, int)
  assert c.train.learning_rate == 3.0 and isinstance(c.train.learning_rate, float)
  assert c.train.b1 == 0.8
  assert c.data.text_only is True and c.data.size_from_data is False
  assert c.data.pair == "en-zh"
  assert c.codec.strides == (2, 4, 5, 8)
  assert c.encoder.left_chunks == 2
  # the last of repeated overrides wins
  assert config_lib.load("tiny", ["train.steps=30", "train.steps=40"]).train.steps == 40


OVERRIDES = ["--config.train.steps=50", "--config.train.learning_rate=1e-4",
             "--config.data.text_only=true", "--config.data.pair=en-zh",
             "--config.codec.strides=2,4,5,8", "--config.train.b2=0.9",
             "--config.mesh.ici_tensor=2"]


def test_overrides_mean_what_config_flags_makes_of_them():
  """The same `--config.a.b=v` arguments give the same config as ml_collections'
  DEFINE_config_file, the loader the train CLI used before."""
  spec = os.path.join(ROOT, "configs", "tiny.py:pretrain")
  argv = ["prog", f"--config={spec}", *OVERRIDES]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "cfg", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  overrides, rest = cli.split_config_overrides(OVERRIDES)
  assert not rest
  got = config_lib.load(spec, overrides)
  assert got.to_dict() == fv.config.to_dict()
  assert got.train.steps == 50  # the overrides did change something
  assert got.codec.strides == (2, 4, 5, 8)


def test_unknown_field_names_it_with_close_names():
  with pytest.raises(config_lib.ConfigError,
                     match=r"'tiny:sft'.*unknown field 'train.stepz'.*did you mean 'steps'"):
    config_lib.load("tiny:sft", ["train.stepz=3"])
  with pytest.raises(config_lib.ConfigError, match=r"unknown field 'no_such'.*fields there: "
                                                   r"adapter, audio"):
    config_lib.load("tiny", ["no_such.field=1"])
  with pytest.raises(config_lib.ConfigError, match=r"train.steps is of type int, not a "
                                                   r"section"):
    config_lib.load("tiny", ["train.steps.x=1"])


@pytest.mark.parametrize("item,pattern", [
    ("train.steps=abc", r"override train.steps: .*'abc'.*type int"),
    ("train.steps=1.5", r"override train.steps: .*'1.5'"),
    ("data.text_only=maybe", r"override data.text_only: .*type bool"),
    ("train.learning_rate=fast", r"override train.learning_rate: .*type float"),
    ("logical_axis_rules=1", r"override logical_axis_rules: .*not supported"),
    ("train.steps", r"expected 'field.path=value'"),
    ("train..steps=1", r"is not a field path"),
])
def test_wrong_type_or_form_is_a_config_error(item, pattern):
  with pytest.raises(config_lib.ConfigError, match=pattern):
    config_lib.load("tiny:sft", [item])


def test_bad_value_is_named_by_validation_unless_check_is_off():
  with pytest.raises(config_lib.ConfigError,
                     match=r"^train.learning_rate=nan: must be a finite"):
    config_lib.load("tiny:sft", ["train.learning_rate=nan"])
  c = config_lib.load("tiny:sft", ["train.learning_rate=nan"], check=False)
  assert c.train.learning_rate != c.train.learning_rate


def test_lock():
  c = config_lib.load("micro")
  with pytest.raises(AttributeError):
    c.train.new_field = 1
  c.train.steps = 4  # existing fields stay writable (stage_config fills in paths)
  unlocked = config_lib.load("micro", lock=False)
  unlocked.train.new_field = 1
  assert unlocked.train.new_field == 1
  with pytest.raises(config_lib.ConfigError, match="unknown field 'train.other'"):
    config_lib.load("micro", ["train.other=1"], lock=False)  # overrides never add fields


@pytest.mark.parametrize("spec,pattern", [
    ("base:sft", r"'base:sft': get_config\(\) of .*base.py takes no stage argument"),
    ("tiny:", r"empty stage"),
    ("tiny:nope", r"stage='nope': unknown stage"),
    ("nope", r"'nope': no config file .*sizes in configs/: 1b, 7b, base, micro"),
    ("configs/nope.py:sft", r"no config file"),
    ("configs", r"configs.py"),
    ("", r"expected configs/<size>.py"),
])
def test_bad_spec_is_a_config_error(spec, pattern):
  with pytest.raises(config_lib.ConfigError, match=pattern):
    config_lib.load(spec)


def test_file_errors_name_the_file(tmp_path):
  (tmp_path / "noget.py").write_text("X = 1\n")
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  (tmp_path / "d.py").mkdir()
  with pytest.raises(config_lib.ConfigError, match=r"noget.py has no get_config\(\)"):
    config_lib.load(str(tmp_path / "noget.py"))
  with pytest.raises(config_lib.ConfigError, match=r"broken.py line 1"):
    config_lib.load(str(tmp_path / "broken.py"))
  with pytest.raises(config_lib.ConfigError, match=r"is a directory"):
    config_lib.load(str(tmp_path / "d.py"))


def test_load_leaves_window_warnings_to_the_entry_points():
  """A stream stage whose seq_len fits the window warns when validated; load does not
  (stage_config changes seq_len after loading; the entry points validate what runs)."""
  with warnings.catch_warnings():
    warnings.simplefilter("error", config_lib.ConfigWarning)
    c = config_lib.load("small:sft")
  with pytest.warns(config_lib.ConfigWarning, match="data.seq_len"):
    config_lib.validate(c)


@pytest.mark.parametrize("argv,overrides,rest", [
    (["--config.a.b=1", "--x=2"], ["a.b=1"], ["--x=2"]),
    (["--config.a.b", "-1", "pos"], ["a.b=-1"], ["pos"]),
    (["--config.a.b", "--x"], ["a.b=true"], ["--x"]),
    (["--noconfig.a.b"], ["a.b=false"], []),
    (["-config.a=(1, 2)"], ["a=(1, 2)"], []),
    (["--config=configs/tiny.py:sft", "--config.a=x=y"], ["a=x=y"],
     ["--config=configs/tiny.py:sft"]),
    (["--", "--config.a=1"], [], ["--", "--config.a=1"]),
])
def test_split_config_overrides(argv, overrides, rest):
  assert cli.split_config_overrides(argv) == (overrides, rest)


@pytest.mark.parametrize("stage", ["codec", "pretrain", "sft_text", "sft", "rl1", "rl2"])
def test_recipe_stage_configs_take_the_overrides(tmp_path, stage):
  """`python -m liveinterp.recipe --config.a.b=v` reaches every stage's config
  (recipes.stage_config), and the run's paths are still filled in after it."""
  from liveinterp.train import stage_configs as recipes  # pylint: disable=g-import-not-at-top
  plain = recipes.stage_config("micro", stage, str(tmp_path / "run"), str(tmp_path / "d"),
                               "TOK")
  c = recipes.stage_config("micro", stage, str(tmp_path / "run"), str(tmp_path / "d"), "TOK",
                           overrides=["train.learning_rate=1e-4", "data.wait_k=5"])
  assert (c.train.learning_rate, c.data.wait_k) == (1e-4, 5)
  assert (plain.train.learning_rate, plain.data.wait_k) != (1e-4, 5)
  assert c.data.data_dir == str(tmp_path / "d") and c.tokenizer.model_path == "TOK"
  with pytest.raises(config_lib.ConfigError, match="unknown field 'train.lr'"):
    recipes.stage_config("micro", stage, "R", "D", "TOK", overrides=["train.lr=1"])


def test_recipe_asr_judge_hears_the_runs_codec(tmp_path):
  """The recipe's asr_judge takes its codec twins from the run's codec (tiny: 2000 clips);
  an explicit judge.codec_dir, or none wanted, is left as it is."""
  from liveinterp.train import stage_configs as recipes  # pylint: disable=g-import-not-at-top
  run = str(tmp_path / "run")
  c = recipes.stage_config("tiny", "asr_judge", run, "D", "TOK")
  assert c.judge.codec_clips == 2000 and c.judge.codec_dir == f"{run}/codec"
  c = recipes.stage_config("tiny", "asr_judge", run, "D", "TOK",
                           overrides=["judge.codec_dir=/elsewhere"])
  assert c.judge.codec_dir == "/elsewhere"
  c = recipes.stage_config("micro", "asr_judge", run, "D", "TOK")
  assert c.judge.codec_clips == 0 and c.judge.codec_dir == ""


def test_negated_override_takes_no_value():
  with pytest.raises(cli.UserError, match="--noconfig.a.b=1: --noconfig.* takes no value"):
    cli.split_config_overrides(["--noconfig.a.b=1"])
