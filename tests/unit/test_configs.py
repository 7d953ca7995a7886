"""Every config file loads through config_flags (locked) and validates; bad values named."""

import glob
import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import base
from liveinterp.common import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not p.endswith("__init__.py"))


def _load(path_with_arg, overrides=()):
  argv = ["prog", f"--config={path_with_arg}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "cfg", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_config_file_loads_and_validates(path):
  c = _load(path)
  config_lib.validate(c)
  assert c.stage in config_lib.STAGES


@pytest.mark.parametrize("stage", config_lib.STAGES)
def test_stage_argument_and_overrides(stage):
  c = _load(os.path.join(ROOT, "configs", f"tiny.py:{stage}"),
            ["--config.train.steps=70", "--config.mesh.ici_tensor=2"])
  assert c.stage == stage and c.train.steps == 70 and c.mesh.ici_tensor == 2
  config_lib.validate(c)


def test_locked_config_rejects_unknown_field():
  with pytest.raises(Exception):
    _load(os.path.join(ROOT, "configs", "tiny.py"), ["--config.train.stepz=3"])


def test_sizes_grow():
  params = []
  for size in ("micro", "tiny", "small", "1b", "7b"):
    c = base.apply_size(base.get_config(), size)
    params.append(c.llm.d_model * c.llm.num_layers)
  assert params == sorted(params)


BAD = [
    ("stage", "pretrian", "stage='pretrian': unknown stage"),
    ("dtype", "float16", "dtype='float16'"),
    ("llm.d_model", -8, "llm.d_model=-8: must be positive"),
    ("encoder.num_layers", 0, "encoder.num_layers=0: must be positive"),
    ("encoder.num_heads", 5, "encoder.num_heads=5 does not divide encoder.d_model=144"),
    ("llm.num_kv_heads", 3, "llm.num_kv_heads=3 does not divide llm.num_heads=4"),
    ("llm.remat", "some", "llm.remat='some'"),
    ("llm.head_dim", 63, "llm.head_dim=63: must be even"),
    ("llm.sink_tokens", 600, "llm.sink_tokens=600 must be < llm.window=512"),
    ("stream.chunk_ms", 650, "stream.chunk_ms=650 is not a multiple"),
    ("adapter.stack", 3, "adapter.stack=3 does not divide"),
    ("codec.strides", (3, 4, 5, 8), "do not divide audio.sample_rate"),
    ("codec.quantizer", "fsq", "codec.quantizer='fsq'"),
    ("codec.ema_decay", 1.5, "codec.ema_decay=1.5"),
    ("llm.vocab_size", 1000, "llm.vocab_size=1000 is smaller"),
    ("train.warmup_steps", 1000, "train.warmup_steps=1000 exceeds train.steps=200"),
    ("train.end_lr_ratio", 2.0, "train.end_lr_ratio=2.0"),
    ("train.grad_clip", -1.0, "train.grad_clip=-1.0: must be >= 0"),
    ("data.policy", "greedy", "data.policy='greedy'"),
    ("data.wait_k", 0, "data.wait_k=0"),
    ("data.seq_len", 250, "data.seq_len=250 must be a multiple"),
    ("mesh.ici_data", 0, "mesh.ici_data=0"),
    ("mesh.ici_data", -1, "at most one axis may be -1"),
    ("mesh.pod_devices", -4, "mesh.pod_devices=-4"),
    ("train.max_consecutive_skipped", -1, "train.max_consecutive_skipped=-1: must be an "
                                          "integer >= 0"),
    ("train.skipped_fraction_after", 0, "train.skipped_fraction_after=0"),
    ("train.max_skipped_fraction", 1.5, "train.max_skipped_fraction=1.5: must be in"),
]


@pytest.mark.parametrize("field,value,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_named(field, value, msg):
  c = base.get_config()
  node = c
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
    config_lib.validate(c)


NONFINITE = [("train.learning_rate", float("nan")), ("train.learning_rate", float("inf")),
             ("train.grad_clip", float("nan")), ("train.b2", float("-inf")),
             ("data.task_weights.st", float("nan")), ("codec.ema_decay", float("nan"))]


@pytest.mark.parametrize("field,value", NONFINITE, ids=[f"{f}={v}" for f, v in NONFINITE])
def test_nonfinite_numbers_are_rejected_anywhere(field, value):
  """Issue #12: NaN passed every `<= 0` check, so learning_rate=nan trained NaN weights."""
  c = _load(os.path.join(ROOT, "configs", "micro.py:demo"), [f"--config.{field}={value}"])
  with pytest.raises(config_lib.ConfigError, match=f"{field}={value}: must be a finite number"):
    config_lib.validate(c)


def test_mesh_product_vs_device_count():
  c = base.get_config()
  c.mesh.ici_fsdp = 2
  c.mesh.ici_tensor = 2
  config_lib.validate(c, num_devices=4)
  with pytest.raises(config_lib.ConfigError, match="product of ici_\\* x dcn_\\* sizes is 4 but "
                     "there are 8 devices"):
    config_lib.validate(c, num_devices=8)
  c.mesh.ici_fsdp = -1
  c.mesh.ici_tensor = 3
  with pytest.raises(config_lib.ConfigError, match="not divisible"):
    config_lib.validate(c, num_devices=8)


def test_bad_rules_are_named():
  c = base.get_config()
  c.logical_axis_rules = list(c.logical_axis_rules) + [("embedd", "fsdp")]
  with pytest.raises(config_lib.ConfigError, match="unknown logical axis 'embedd'"):
    config_lib.validate(c)
  c = base.get_config()
  c.logical_axis_rules = [("embed", "model")]
  with pytest.raises(config_lib.ConfigError, match="unknown mesh axis 'model'"):
    config_lib.validate(c)
