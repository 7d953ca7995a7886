"""Every config file loads through config.load (locked) and validates; bad values named."""

import glob
import os
import re

import pytest

from configs import base
from liveinterp.common import cli, config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not p.endswith("__init__.py"))


def _load(path_with_arg, overrides=()):
  """config.load of `path[:stage]` with `--config.a.b=v` overrides (unvalidated: the
  tests below validate, or expect it to fail)."""
  overrides, rest = cli.split_config_overrides(overrides)
  assert not rest
  return config_lib.load(path_with_arg, overrides, check=False)


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
  # config.load names the unknown field, with a spelling hint.
  with pytest.raises(config_lib.ConfigError, match=r"'train.stepz'.*did you mean 'steps'"):
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
    # Issue #12: fields that had no rule and failed later as unrelated errors (a
    # "negative dimensions" crop, a modulo by zero, a frontend or model ValueError) or not
    # at all (seq_len beyond max_len was killed by the OS at 17 GB on micro).
    ("data.codec_crop_ms", -5, "data.codec_crop_ms=-5: must be positive"),
    ("data.codec_crop_ms", 5, "data.codec_crop_ms=5: 80 samples, shorter than one codec "
                              "frame (320 samples"),
    ("data.codec_ref_ms", 0, "data.codec_ref_ms=0: must be positive"),
    ("data.max_src_tokens", 0, "data.max_src_tokens=0: must be positive"),
    ("data.max_audio_slots", 0, "data.max_audio_slots=0 must be a positive multiple"),
    ("data.seq_len", 4096, "data.seq_len=4096 exceeds llm.max_len=2048"),
    ("data.shuffle_seed", -1, "data.shuffle_seed=-1: must be an integer >= 0"),
    ("data.worker_count", -2, "data.worker_count=-2: must be an integer >= 0"),
    ("data.pair", "zhen", "data.pair='zhen': expected 'src-tgt'"),
    ("data.build", "", "data.build='': expected the name of a corpus build"),
    ("seed", -1, "seed=-1: must be an integer >= 0"),
    ("train.eval_every", 0, "train.eval_every=0: must be positive"),
    ("train.eval_batches", 0, "train.eval_batches=0: must be positive"),
    ("train.eval_examples", 0, "train.eval_examples=0: must be positive"),
    ("train.eval_max_new_tokens", 0, "train.eval_max_new_tokens=0: must be positive"),
    ("train.b1", -0.1, "train.b1=-0.1: must be in [0, 1)"),
    ("train.b2", 1.0, "train.b2=1.0: must be in [0, 1)"),
    ("encoder.dropout", 1.0, "encoder.dropout=1.0: must be < 1"),
    ("encoder.num_heads", 16, "encoder.num_heads=16 = 9: the head size must be even"),
    ("encoder.subsample", 3, "encoder.subsample=3: must be a power of two"),
    ("audio.win_ms", 40, "audio.win_ms=40 (640 samples) exceeds audio.n_fft=512"),
    ("audio.sample_rate", 22050, "audio.win_ms=25: not a whole number of samples at "
                                 "audio.sample_rate=22050 Hz (551.25)"),
    ("audio.hop_ms", 30, "audio.hop_ms=30 exceeds audio.win_ms=25"),
    ("codec.commitment", -1.0, "codec.commitment=-1.0: must be >= 0"),
    ("codec.dilations", (1, 0, 9), "codec.dilations=(1, 0, 9): must be positive"),
    ("codec.stft_resolutions", ((512, 0, 512),), "codec.stft_resolutions[0]="
                                                 "(512, 0, 512): expected three"),
    ("judge.num_heads", 5, "judge.d_model=144 is not divisible by judge.num_heads=5"),
    ("judge.max_seconds", 0.0, "judge.max_seconds=0.0: must be positive"),
    ("judge.train_examples", -1, "judge.train_examples=-1: must be an integer >= 0"),
    ("judge.frame_weight", -0.5, "judge.frame_weight=-0.5: must be >= 0"),
]


@pytest.mark.parametrize("field,value,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_named(field, value, msg):
  c = base.get_config()
  node = c
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=re.escape(msg)):
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


def test_pretraining_needs_a_task():
  c = base.recipe("tiny", "pretrain")
  c.data.task_weights = dict(asr=0.0, st=0.0, tts=0.0, s2st=0.0)
  with pytest.raises(config_lib.ConfigError, match="pretraining needs at least one task"):
    config_lib.validate(c)
  c.stage = "sft"  # sft does not read task_weights
  config_lib.validate(c)


def test_batch_divisible_by_data_parallel_devices():
  """Issue #12: batch_size=3 on 2 devices was a raw JAX IndivisibleError after compiling.
  The batch is split over the mesh axes of the activation_batch rule (data x fsdp)."""
  c = base.get_config()  # ici_fsdp=-1: every device is data-parallel
  c.train.batch_size = 12
  with pytest.raises(config_lib.ConfigError, match="train.batch_size=12 is not divisible by "
                     "the 8 data-parallel devices"):
    config_lib.validate(c, num_devices=8)
  config_lib.validate(c, num_devices=4)
  c.mesh.ici_tensor = 2  # fsdp fills 4 of the 8 devices; tensor does not split the batch
  assert config_lib.data_parallel_size(c, 8) == 4
  config_lib.validate(c, num_devices=8)
  c.mesh.ici_tensor, c.mesh.ici_fsdp, c.mesh.dcn_data = 1, -1, 3  # 3 slices x 4 fsdp
  assert config_lib.data_parallel_size(c, 12) == 12
  config_lib.validate(c, num_devices=12)
  c.logical_axis_rules = [r if r[0] != "activation_batch" else ("activation_batch", "data")
                          for r in c.logical_axis_rules]
  assert config_lib.data_parallel_size(c, 12) == 3
  c.train.batch_size = 6
  config_lib.validate(c, num_devices=12)


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "w").close()


@pytest.mark.parametrize("under_tfds", [True, False])
def test_check_inputs_names_the_missing_build_and_the_command(tmp_path, under_tfds):
  """Issue #12: a missing corpus build or tokenizer failed inside the stage's data
  pipeline; now it is named, with the command that creates it, before anything runs."""
  from data_pipelines.tfds_builders import liveinterp_corpus
  c = base.recipe("micro", "sft")
  c.data.build = "micro"
  cmd = "python -m data_pipelines.build --pair=zh-en --size=micro --data_dir="
  with pytest.raises(config_lib.ConfigError, match=f"data.data_dir is empty.*{re.escape(cmd)}"):
    config_lib.check_inputs(c)
  d = str(tmp_path / "data")
  c.data.data_dir = d
  with pytest.raises(config_lib.ConfigError, match=f"does not exist.*{re.escape(cmd + d)}$"):
    config_lib.check_inputs(c)
  os.makedirs(d)
  with pytest.raises(config_lib.ConfigError,
                     match=f"does not hold the corpus build liveinterp_corpus/zh_en_micro "
                           f".*{re.escape(cmd + d)}$"):
    config_lib.check_inputs(c)
  # The layout `data_pipelines.build` writes (and `pipelines.open_corpus` reads).
  root = os.path.join(d, "tfds") if under_tfds else d
  os.makedirs(root, exist_ok=True)
  name = "liveinterp_corpus/" + liveinterp_corpus.config_name("zh-en", "micro")
  assert config_lib.corpus_build_dir(c) == (name, os.path.join(root, name))
  _touch(os.path.join(root, name, "1.0.0", "dataset_info.json"))
  with pytest.raises(config_lib.ConfigError, match="tokenizer.model_path is empty"):
    config_lib.check_inputs(c)
  c.tokenizer.model_path = os.path.join(d, "tokenizer", "zh_en_micro_v256_bpe")
  with pytest.raises(config_lib.ConfigError, match="zh_en_micro_v256_bpe.model and .*"
                     "zh_en_micro_v256_bpe.json not found"):
    config_lib.check_inputs(c)
  for ext in (".model", ".json"):
    _touch(c.tokenizer.model_path + ext)
  c.train.init_from = str(tmp_path / "pretrain")
  with pytest.raises(config_lib.ConfigError, match="train.init_from=.*no checkpoints/"):
    config_lib.check_inputs(c)
  config_lib.check_inputs(c, init_from=False)
  os.makedirs(os.path.join(c.train.init_from, "checkpoints"))
  assert config_lib.check_inputs(c) is c
  c.stage = "codec"  # no tokenizer needed
  c.tokenizer.model_path = ""
  config_lib.check_inputs(c)
  c.stage, c.data.data_dir = "demo", ""  # reads no data
  config_lib.check_inputs(c)
