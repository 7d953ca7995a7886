"""Config loading and validation: `load(spec, overrides)` is the one way a config is read
(a size name, `configs/<size>.py[:stage]`, any config file or a run's config.json, with
`"a.b=v"` overrides parsed as `--config.a.b=v` is; see "Loading" at the end of this file),
and one function, `validate`, rejects bad values with a message naming the field.

Everything downstream may assume a validated config. `validate(config, num_devices=N)`
also checks the mesh against the device count and the batch against the data-parallel
devices. `check_inputs(config)` checks what a stage will read from disk (the corpus
build, the tokenizer, `train.init_from`); entry points call both before building
anything (issue #12), so a bad value is reported by name instead of surfacing later as an
unrelated error.

Valid but suspicious settings warn (`warnings.warn(..., ConfigWarning)`, so a test can
`pytest.warns` and a run can filter them) instead of failing: e.g. a stream stage whose
training sequences never reach the LLM's attention window (`check_window_regime`).
"""

from __future__ import annotations

import math
import numbers
import os
import re
import warnings

from liveinterp.common import axes, files

STAGES = ("demo", "codec", "asr_judge", "pretrain", "sft", "rl1", "rl2")
DTYPES = ("float32", "bfloat16")
NUM_SPECIAL_TOKENS = 32  # control tokens reserved by the tokenizer (<text>, <speech>, ...)
# Stages that train on simultaneous streams, the input the streaming decoder serves.
STREAM_STAGES = ("sft", "rl1", "rl2")
# Stages that read the corpus build (`data.data_dir`), and of those the ones that also
# read the tokenizer (`tokenizer.model_path`).
DATA_STAGES = ("codec", "asr_judge", "pretrain", "sft", "rl1", "rl2")
TOKENIZER_STAGES = ("pretrain", "sft", "rl1", "rl2")
# The TFDS dataset the stages read (data_pipelines.pipelines.open_corpus); its config is
# `<src>_<tgt>_<build>` (data_pipelines.tfds_builders.liveinterp_corpus.config_name,
# checked equal by tests/unit/test_configs.py: importing it here would load TFDS).
CORPUS_DATASET = "liveinterp_corpus"
# `data.corpus` (when the config has it; default CORPUS_DATASET) selects another prepared
# TFDS build by name: a full `dataset/config` name, or one of these short names whose
# TFDS config follows from `data.pair` (the user-corpus builders of
# data_pipelines/tfds_builders).
CORPUS_ALIASES = {
    "cvss": "liveinterp_cvss/c_{src}_{tgt}", "cvss_c": "liveinterp_cvss/c_{src}_{tgt}",
    "cvss_t": "liveinterp_cvss/t_{src}_{tgt}", "covost2": "liveinterp_covost2/{src}_{tgt}",
}


def corpus_name(c) -> str:
  """The TFDS name (`dataset/config`) of the build the stages read (`data.corpus`)."""
  corpus = c.data.get("corpus", CORPUS_DATASET) or CORPUS_DATASET
  if not isinstance(corpus, str):
    raise ConfigError(f"data.corpus={corpus!r}: expected a TFDS build name")
  if "/" in corpus:
    return corpus
  if corpus == CORPUS_DATASET:
    return f"{CORPUS_DATASET}/{c.data.pair.replace('-', '_')}_{c.data.build}"
  if corpus in CORPUS_ALIASES:
    src, tgt = c.data.pair.split("-")
    return CORPUS_ALIASES[corpus].format(src=src, tgt=tgt)
  raise ConfigError(f"data.corpus={corpus!r}: expected {CORPUS_DATASET!r}, one of "
                    f"{sorted(CORPUS_ALIASES)} or a full TFDS name 'dataset/config'")


class ConfigError(ValueError):
  """A config value is invalid; the message names the field."""


class ConfigWarning(UserWarning):
  """A config is valid but trains on something other than what inference runs."""


def _positive(c, path: str):
  node = c
  for p in path.split("."):
    node = node[p]
  vals = node if isinstance(node, (tuple, list)) else (node,)
  for v in vals:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
      raise ConfigError(f"{path}={node!r}: must be positive")


def _nonneg_int(c, path: str):
  v = _get(c, path)
  if not isinstance(v, int) or isinstance(v, bool) or v < 0:
    raise ConfigError(f"{path}={v!r}: must be an integer >= 0")


def _get(c, path):
  node = c
  for p in path.split("."):
    node = node[p]
  return node


def _nonfinite(node, path: str = ""):
  """(path, value) of the first NaN/±inf number anywhere in `node` (config sections,
  lists, tuples), or None."""
  if hasattr(node, "items"):
    for k, v in node.items():
      found = _nonfinite(v, f"{path}.{k}" if path else str(k))
      if found:
        return found
  elif isinstance(node, (list, tuple)):
    for i, v in enumerate(node):
      found = _nonfinite(v, f"{path}[{i}]")
      if found:
        return found
  elif (isinstance(node, numbers.Real) and not isinstance(node, numbers.Integral)
        and not math.isfinite(node)):
    return path, node
  return None


def validate(c, num_devices: int | None = None):
  """Raises ConfigError naming the first bad field; returns `c` when all is well."""
  # First, and everywhere: NaN passes every `<= 0` / `< 0` check below (comparisons with
  # NaN are False), and `train.learning_rate=nan` trained NaN weights (issue #12).
  bad = _nonfinite(c)
  if bad:
    raise ConfigError(f"{bad[0]}={bad[1]!r}: must be a finite number")
  if c.stage not in STAGES:
    raise ConfigError(f"stage={c.stage!r}: unknown stage, expected one of {STAGES}")
  for f in ("dtype", "param_dtype"):
    if c[f] not in DTYPES:
      raise ConfigError(f"{f}={c[f]!r}: expected one of {DTYPES}")

  for path in ("audio.sample_rate", "audio.n_mels", "audio.win_ms", "audio.hop_ms",
               "audio.n_fft", "audio.max_seconds", "stream.chunk_ms",
               "stream.max_turn_tokens",
               "encoder.d_model", "encoder.num_layers", "encoder.num_heads",
               "encoder.mlp_dim", "encoder.conv_kernel", "encoder.subsample",
               "encoder.left_chunks", "adapter.stack",
               "llm.vocab_size", "llm.d_model", "llm.num_layers", "llm.num_heads",
               "llm.num_kv_heads", "llm.head_dim", "llm.mlp_dim", "llm.rope_theta",
               "llm.window", "llm.max_len",
               "codec.channels", "codec.latent_dim", "codec.codebook_size",
               "codec.num_codebooks", "codec.strides", "voice.channels", "voice.embed_dim",
               "tokenizer.text_vocab_size", "data.seq_len", "data.codec_crop_ms",
               "data.codec_ref_ms", "data.max_src_tokens",
               "train.batch_size", "train.steps", "train.learning_rate",
               "train.grad_accum_steps", "train.log_every", "train.eval_every",
               "train.eval_batches", "train.eval_examples", "train.eval_max_new_tokens",
               "checkpoint.every_steps", "checkpoint.keep"):
    _positive(c, path)
  for path in ("seed", "data.shuffle_seed", "data.worker_count"):
    _nonneg_int(c, path)
  if "judge" in c:  # the ASR-BLEU judge (models/asr_judge.py, stage asr_judge)
    for f in ("d_model", "num_layers", "num_heads", "mlp_dim", "conv_kernel", "max_seconds",
              "max_words", "eval_examples"):
      _positive(c, f"judge.{f}")
    _nonneg_int(c, "judge.train_examples")
    _nonneg_int(c, "judge.codec_clips")
    if c.judge.frame_weight < 0:
      raise ConfigError(f"judge.frame_weight={c.judge.frame_weight!r}: must be >= 0")
    if c.judge.d_model % c.judge.num_heads:
      raise ConfigError(f"judge.d_model={c.judge.d_model} is not divisible by "
                        f"judge.num_heads={c.judge.num_heads}")
  if "dilations" in c.codec:  # optional in the codec (models/codec.py has a default)
    _positive(c, "codec.dilations")
  for path in ("train.warmup_steps", "train.weight_decay", "train.grad_clip",
               "llm.sink_tokens", "encoder.dropout", "codec.commitment",
               "train.speech_weight", "train.frame_weight", "train.ctc_weight",
               "train.memory_limit_gb"):
    if _get(c, path) < 0:
      raise ConfigError(f"{path}={_get(c, path)!r}: must be >= 0")
  if c.encoder.dropout >= 1:
    raise ConfigError(f"encoder.dropout={c.encoder.dropout}: must be < 1")
  for f in ("b1", "b2"):
    if not 0 <= c.train[f] < 1:
      raise ConfigError(f"train.{f}={c.train[f]}: must be in [0, 1)")
  if not 0 <= c.train.end_lr_ratio <= 1:
    raise ConfigError(f"train.end_lr_ratio={c.train.end_lr_ratio}: must be in [0, 1]")
  if c.train.warmup_steps > c.train.steps:
    raise ConfigError(f"train.warmup_steps={c.train.warmup_steps} exceeds "
                      f"train.steps={c.train.steps}")
  # Divergence limits of the stage loop (liveinterp/train/loop.py).
  for f, lowest in (("max_consecutive_skipped", 0), ("skipped_fraction_after", 1)):
    v = c.train[f]
    if not isinstance(v, int) or isinstance(v, bool) or v < lowest:
      raise ConfigError(f"train.{f}={v!r}: must be an integer >= {lowest}")
  if not 0 <= c.train.max_skipped_fraction <= 1:
    raise ConfigError(f"train.max_skipped_fraction={c.train.max_skipped_fraction}: must be "
                      f"in [0, 1]")

  if c.encoder.d_model % c.encoder.num_heads:
    raise ConfigError(f"encoder.num_heads={c.encoder.num_heads} does not divide "
                      f"encoder.d_model={c.encoder.d_model}")
  if c.llm.num_heads % c.llm.num_kv_heads:
    raise ConfigError(f"llm.num_kv_heads={c.llm.num_kv_heads} does not divide "
                      f"llm.num_heads={c.llm.num_heads}")
  if (c.encoder.d_model // c.encoder.num_heads) % 2:
    raise ConfigError(f"encoder.d_model={c.encoder.d_model} / encoder.num_heads="
                      f"{c.encoder.num_heads} = {c.encoder.d_model // c.encoder.num_heads}: "
                      f"the head size must be even (rotary embeddings)")
  sub = c.encoder.subsample
  if sub < 2 or sub & (sub - 1):
    raise ConfigError(f"encoder.subsample={sub}: must be a power of two >= 2")
  _validate_audio(c)
  if c.llm.remat not in ("none", "full", "dots", "dots_no_batch"):
    raise ConfigError(f"llm.remat={c.llm.remat!r}: expected none|full|dots|dots_no_batch")
  if c.llm.head_dim % 2:
    raise ConfigError(f"llm.head_dim={c.llm.head_dim}: must be even (rotary embeddings)")
  if c.llm.sink_tokens >= c.llm.window:
    raise ConfigError(f"llm.sink_tokens={c.llm.sink_tokens} must be < llm.window="
                      f"{c.llm.window}")
  if c.encoder.conv_kernel % 2 == 0 and c.encoder.conv_kernel > 1:
    pass  # causal conv: any kernel size works
  frame_ms = c.audio.hop_ms * c.encoder.subsample
  if c.stream.chunk_ms % frame_ms:
    raise ConfigError(f"stream.chunk_ms={c.stream.chunk_ms} is not a multiple of the "
                      f"{frame_ms} ms encoder frame (audio.hop_ms x encoder.subsample)")
  if (c.stream.chunk_ms // frame_ms) % c.adapter.stack:
    raise ConfigError(f"adapter.stack={c.adapter.stack} does not divide the "
                      f"{c.stream.chunk_ms // frame_ms} encoder frames of a chunk")
  hop = math.prod(c.codec.strides)
  if c.audio.sample_rate % hop:
    raise ConfigError(f"codec.strides={tuple(c.codec.strides)} (hop {hop}) do not divide "
                      f"audio.sample_rate={c.audio.sample_rate}")
  crop = c.data.codec_crop_ms * c.audio.sample_rate // 1000
  if crop < hop:
    raise ConfigError(f"data.codec_crop_ms={c.data.codec_crop_ms}: {crop} samples, shorter "
                      f"than one codec frame ({hop} samples, the product of codec.strides)")
  for i, res in enumerate(c.codec.get("stft_resolutions", ())):
    if (len(res) != 3 or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0
                             for v in res)):
      raise ConfigError(f"codec.stft_resolutions[{i}]={tuple(res)!r}: expected three "
                        f"positive integers (n_fft, hop, win)")
  if c.tokenizer.get("model_type", "unigram") not in ("bpe", "unigram"):
    raise ConfigError(f"tokenizer.model_type={c.tokenizer.model_type!r}: expected 'bpe' or "
                      f"'unigram'")
  if not re.fullmatch(r"[a-z]{2,3}-[a-z]{2,3}", str(c.data.pair)):
    raise ConfigError(f"data.pair={c.data.pair!r}: expected 'src-tgt' language codes such "
                      f"as 'zh-en'")
  if not c.data.build or not isinstance(c.data.build, str):
    raise ConfigError(f"data.build={c.data.build!r}: expected the name of a corpus build "
                      f"such as 'micro' or 'tiny'")
  corpus_name(c)  # a bad data.corpus is named here
  if c.data.seq_len > c.llm.max_len:
    raise ConfigError(f"data.seq_len={c.data.seq_len} exceeds llm.max_len={c.llm.max_len}, "
                      f"the longest sequence this model size is meant to train on")
  if not isinstance(c.data.get("src_transcript", False), bool):
    raise ConfigError(f"data.src_transcript={c.data.src_transcript!r}: expected True or "
                      f"False")
  if c.data.policy not in ("alignment", "wait_k"):
    raise ConfigError(f"data.policy={c.data.policy!r}: expected 'alignment' or 'wait_k'")
  if c.data.wait_k < 1:
    raise ConfigError(f"data.wait_k={c.data.wait_k}: must be >= 1")
  for task, w in c.data.task_weights.items():
    if task not in ("asr", "st", "tts", "s2st") or w < 0:
      raise ConfigError(f"data.task_weights.{task}={w}: unknown task or negative weight")
  if c.stage == "pretrain" and not any(w > 0 for w in c.data.task_weights.values()):
    raise ConfigError(f"data.task_weights={dict(c.data.task_weights)}: pretraining needs "
                      f"at least one task with a positive weight")
  if c.data.seq_len % max(1, c.stream.chunk_ms // (c.audio.hop_ms * c.encoder.subsample
                                                   * c.adapter.stack)):
    raise ConfigError(f"data.seq_len={c.data.seq_len} must be a multiple of the audio "
                      f"slots per chunk (its audio rows are fed to the encoder by chunk)")
  spc = max(1, c.stream.chunk_ms // (c.audio.hop_ms * c.encoder.subsample * c.adapter.stack))
  if c.data.max_audio_slots <= 0 or c.data.max_audio_slots % spc:
    raise ConfigError(f"data.max_audio_slots={c.data.max_audio_slots} must be a positive "
                      f"multiple of the {spc} audio slots per chunk")
  if c.codec.quantizer not in ("vq", "rvq"):
    raise ConfigError(f"codec.quantizer={c.codec.quantizer!r}: expected 'vq' or 'rvq'")
  if c.codec.codebook_update not in ("ema", "loss"):
    raise ConfigError(f"codec.codebook_update={c.codec.codebook_update!r}: expected 'ema' "
                      f"or 'loss'")
  for f in ("stft_weight", "mel_weight", "waveform_weight", "quantizer_weight",
            "dead_code_steps"):
    if c.codec[f] < 0:
      raise ConfigError(f"codec.{f}={c.codec[f]}: must be >= 0")
  if not 0 < c.codec.ema_decay < 1:
    raise ConfigError(f"codec.ema_decay={c.codec.ema_decay}: must be in (0, 1)")
  needed = (c.tokenizer.text_vocab_size + c.codec.num_codebooks * c.codec.codebook_size
            + NUM_SPECIAL_TOKENS)
  if c.llm.vocab_size < needed:
    raise ConfigError(
        f"llm.vocab_size={c.llm.vocab_size} is smaller than text_vocab_size + speech "
        f"tokens + {NUM_SPECIAL_TOKENS} control tokens = {needed}")

  _validate_rules(c)  # before the mesh: the batch check reads the activation_batch rule
  _validate_mesh(c, num_devices)
  check_window_regime(c)
  return c


def check_window_regime(c) -> bool:
  """Warns (ConfigWarning) when a stream stage's `data.seq_len <= llm.window`; returns
  whether it warned.

  At inference every stream longer than the window runs with a ring cache that keeps the
  `llm.sink_tokens` first positions and the last `window - sink_tokens`; training
  sequences that fit in the window never show the model that regime (issue #10).
  """
  if c.stage not in STREAM_STAGES or c.data.seq_len > c.llm.window:
    return False
  warnings.warn(
      f"stage={c.stage}: data.seq_len={c.data.seq_len} <= llm.window={c.llm.window}, so "
      f"training never sees the sliding-window/sink regime (llm.sink_tokens="
      f"{c.llm.sink_tokens} + the last positions) that inference runs in on streams "
      f"longer than the window; train on sequences longer than the window or use a "
      f"shorter window", ConfigWarning, stacklevel=3)
  return True


def _validate_audio(c):
  """The log-mel frontend's conditions (liveinterp/layers/audio_frontend.py), by field."""
  a = c.audio
  samples = {}
  for f in ("win_ms", "hop_ms"):
    n = a.sample_rate * a[f] / 1000
    if n != int(n):
      raise ConfigError(f"audio.{f}={a[f]}: not a whole number of samples at "
                        f"audio.sample_rate={a.sample_rate} Hz ({n:g})")
    samples[f] = int(n)
  if samples["win_ms"] > a.n_fft:
    raise ConfigError(f"audio.win_ms={a.win_ms} ({samples['win_ms']} samples) exceeds "
                      f"audio.n_fft={a.n_fft}")
  if samples["hop_ms"] > samples["win_ms"]:
    raise ConfigError(f"audio.hop_ms={a.hop_ms} exceeds audio.win_ms={a.win_ms}")


def _axis_sizes(c, num_devices: int) -> dict[str, int] | None:
  """Mesh axis -> size (ici x dcn) on `num_devices` devices, or None when it depends on
  the slice count (a -1 in both ici_* and dcn_*), which only the mesh builder knows."""
  ici = [c.mesh[f"ici_{a}"] for a in axes.MESH_AXES]
  dcn = [c.mesh[f"dcn_{a}"] for a in axes.MESH_AXES]
  if -1 in ici and -1 in dcn:
    return None
  fixed = math.prod(s for s in ici + dcn if s != -1)
  fill = num_devices // fixed
  return {a: (fill if i == -1 else i) * (fill if d == -1 else d)
          for a, i, d in zip(axes.MESH_AXES, ici, dcn)}


def data_parallel_size(c, num_devices: int) -> int | None:
  """Devices the global batch is split over: the product of the mesh axes that the
  `activation_batch` rule maps to (the batch sharding of `sharding.data_sharding`)."""
  sizes = _axis_sizes(c, num_devices)
  if sizes is None:
    return None
  target = dict((r[0], r[1]) for r in c.logical_axis_rules).get("activation_batch")
  targets = () if target is None else ((target,) if isinstance(target, str) else target)
  return math.prod(sizes[t] for t in dict.fromkeys(targets))


def _validate_mesh(c, num_devices):
  for group in ("ici", "dcn"):
    sizes = [c.mesh[f"{group}_{a}"] for a in axes.MESH_AXES]
    for a, s in zip(axes.MESH_AXES, sizes):
      if not isinstance(s, int) or s == 0 or s < -1:
        raise ConfigError(f"mesh.{group}_{a}={s!r}: must be a positive size or -1 (fill)")
    if sum(s == -1 for s in sizes) > 1:
      raise ConfigError(f"mesh.{group}_*: at most one axis may be -1, got {sizes}")
  if c.mesh.pod_devices < 0:
    raise ConfigError(f"mesh.pod_devices={c.mesh.pod_devices}: must be >= 0")
  if num_devices is not None:
    dcn = [c.mesh[f"dcn_{a}"] for a in axes.MESH_AXES]
    ici = [c.mesh[f"ici_{a}"] for a in axes.MESH_AXES]
    fixed = math.prod(s for s in ici + dcn if s != -1)
    if -1 in ici + dcn:
      if num_devices % fixed:
        raise ConfigError(f"mesh: {num_devices} devices are not divisible by the fixed "
                          f"mesh sizes (product {fixed}) so -1 cannot fill")
    elif fixed != num_devices:
      raise ConfigError(f"mesh: product of ici_* x dcn_* sizes is {fixed} but there are "
                        f"{num_devices} devices")
    dp = data_parallel_size(c, num_devices)
    if dp and c.train.batch_size % dp:
      raise ConfigError(f"train.batch_size={c.train.batch_size} is not divisible by the {dp} "
                        f"data-parallel devices (the mesh axes the batch is split over, "
                        f"activation_batch in logical_axis_rules, on {num_devices} "
                        f"devices): use a multiple of {dp}")


def _validate_rules(c):
  seen = set()
  for i, rule in enumerate(c.logical_axis_rules):
    if len(rule) != 2:
      raise ConfigError(f"logical_axis_rules[{i}]={rule!r}: expected (logical, mesh_axes)")
    logical, target = rule
    if logical not in axes.ALL_LOGICAL_AXES:
      raise ConfigError(f"logical_axis_rules[{i}]: unknown logical axis {logical!r}")
    if logical in seen:
      raise ConfigError(f"logical_axis_rules[{i}]: logical axis {logical!r} mapped twice")
    seen.add(logical)
    targets = () if target is None else ((target,) if isinstance(target, str) else target)
    for t in targets:
      if t not in axes.MESH_AXES:
        raise ConfigError(f"logical_axis_rules[{i}]: {logical!r} -> unknown mesh axis "
                          f"{t!r}, expected one of {axes.MESH_AXES}")


def corpus_build_dir(c) -> tuple[str, str]:
  """(name, directory) of the corpus build the config names (`corpus_name`: by default
  `liveinterp_corpus/<src>_<tgt>_<build>`) under `data.data_dir`/tfds (or `data.data_dir`
  itself when it is the TFDS folder, as `pipelines.open_corpus` reads it)."""
  name = corpus_name(c)
  d = c.data.data_dir
  root = os.path.join(d, "tfds") if os.path.isdir(os.path.join(d, "tfds")) else d
  return name, os.path.join(root, name)


def check_inputs(c, *, init_from: bool = True):
  """Raises ConfigError when a file the stage will read is missing: the corpus build
  under `data.data_dir` (stages in DATA_STAGES), the tokenizer (`tokenizer.model_path`,
  TOKENIZER_STAGES) and, with `init_from`, the run `train.init_from` starts from. The
  message names the field, the path and the command that creates it. Returns `c`."""
  stage = c.stage
  d = c.data.data_dir
  build_cmd = (f"python -m data_pipelines.build --pair={c.data.pair} --size={c.data.build} "
               f"--data_dir={d or 'DIR'}")
  if corpus_name(c).split("/")[0] != CORPUS_DATASET:  # a user corpus: its own builder
    build_cmd = (f"the builder of {corpus_name(c)} (data_pipelines/tfds_builders) with "
                 f"data_dir={d or 'DIR'}/tfds")
  if stage in DATA_STAGES:
    if not d:
      raise ConfigError(f"data.data_dir is empty: stage {stage} reads the corpus build "
                        f"{c.data.pair}/{c.data.build}; create it with: {build_cmd}")
    if not os.path.isdir(d):
      raise ConfigError(f"data.data_dir={d!r} does not exist (or is not a directory); "
                        f"create the corpus build with: {build_cmd}")
    name, where = corpus_build_dir(c)
    prepared = os.path.isdir(where) and any(
        os.path.exists(os.path.join(where, v, "dataset_info.json"))
        for v in os.listdir(where))
    if not prepared:
      raise ConfigError(f"data.data_dir={d!r} does not hold the corpus build {name} "
                        f"(data.pair={c.data.pair!r}, data.build={c.data.build!r}; no "
                        f"prepared build at {where}); create it with: {build_cmd}")
  if stage in TOKENIZER_STAGES:
    prefix = c.tokenizer.model_path
    if prefix.endswith(".model"):
      prefix = prefix[:-len(".model")]
    if not prefix:
      raise ConfigError(f"tokenizer.model_path is empty: stage {stage} needs the "
                        f"tokenizer of the corpus build (its prefix, without .model), "
                        f"which is made by: {build_cmd}")
    missing = [p for p in (prefix + ".model", prefix + ".json") if not os.path.isfile(p)]
    if missing:
      raise ConfigError(f"tokenizer.model_path={c.tokenizer.model_path!r}: "
                        f"{' and '.join(missing)} not found; the tokenizer is made by: "
                        f"{build_cmd}")
  init = c.train.init_from if init_from else ""
  if init and not os.path.isdir(os.path.join(init, "checkpoints")):
    raise ConfigError(f"train.init_from={init!r}: no checkpoints/ directory there (the "
                      f"workdir of a trained stage)")
  return c


# ---------------------------------------------------------------------------------------
# Loading: the one way every entry point, benchmark and test gets a config (issue #11).
#
#   load("tiny")                      configs/tiny.py, its get_config()
#   load("tiny:sft")                  configs/tiny.py, get_config("sft")
#   load("configs/tiny.py:sft")       a path (relative to the working directory, else to
#   load("/abs/my_config.py:sft")       the repository), with an optional :stage
#   load("runs/tiny/sft/config.json") a run's saved config (no stage)
#   load("tiny:sft", ["train.steps=3", "codec.strides=(2, 4)"])   overrides
#
# The file is imported by path (the repository's config files import `configs.base`, so
# the repository root must be importable, as it is for `python -m` from the root and for
# the tests). Overrides are parsed by ml_collections' own `--config.a.b=v` machinery
# (`config_flags.DEFINE_config_dict` on a private FlagValues), so a value means exactly
# what it means to `--config.a.b=v`: by the field's existing type, int/float/bool/str,
# tuples as '(1, 2)' or '1,2', dicts as a literal. An unknown field, a value of the wrong
# type or a field type that cannot be overridden is a ConfigError naming the spec and the
# field. The command-line side (collecting `--config.*` arguments) is
# liveinterp/common/cli.py (`split_config_overrides`, `run(..., config_overrides=True)`).
# ---------------------------------------------------------------------------------------

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _resolve_spec(spec: str) -> tuple[str, str | None]:
  """(file path, stage or None) of a `load` spec; ConfigError when there is no file."""
  if not isinstance(spec, str) or not spec.strip():
    raise ConfigError(f"config spec {spec!r}: expected configs/<size>.py[:<stage>], a size "
                      f"name such as 'tiny', or a path to a config file")
  path, sep, stage = spec.partition(":")
  if sep and not stage:
    raise ConfigError(f"config spec {spec!r}: empty stage after ':'")
  bare = not path.endswith((".py", ".json")) and os.sep not in path and "/" not in path
  if bare:  # a size name: configs/<name>.py of the repository
    candidates = [os.path.join(_REPO_ROOT, "configs", f"{path}.py")]
  elif os.path.isabs(path):
    candidates = [path]
  else:
    candidates = [os.path.abspath(path), os.path.join(_REPO_ROOT, path)]
    if "/" not in path and os.sep not in path:  # `tiny.py`: also configs/tiny.py
      candidates.append(os.path.join(_REPO_ROOT, "configs", path))
  for c in candidates:
    if os.path.isfile(c):
      return c, (stage if sep else None)
  if any(os.path.isdir(c) for c in candidates):
    raise ConfigError(f"config spec {spec!r}: {path} is a directory, expected a config file")
  known = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(_REPO_ROOT, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))
  raise ConfigError(f"config spec {spec!r}: no config file {candidates[0]} (sizes in "
                    f"configs/: {', '.join(known)})")


def _import_config_module(path: str, spec: str):
  import importlib.util  # pylint: disable=g-import-not-at-top
  name = "_liveinterp_config_" + re.sub(r"\W", "_", os.path.splitext(path)[0])
  mod_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(mod_spec)
  try:
    mod_spec.loader.exec_module(module)
  except ModuleNotFoundError as e:
    hint = (" (config files import `configs.base`: run from the repository root or put it "
            "on PYTHONPATH)" if e.name and e.name.split(".")[0] == "configs" else "")
    raise ConfigError(f"config spec {spec!r}: importing {path} failed: {e}{hint}") from e
  except SyntaxError as e:
    raise ConfigError(f"config spec {spec!r}: {path} line {e.lineno}: {e.msg}") from e
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config spec {spec!r}: {path} has no get_config()")
  return module


def _call_get_config(get_config, stage, path, spec):
  import inspect  # pylint: disable=g-import-not-at-top
  if stage is not None:
    try:
      inspect.signature(get_config).bind(stage)
    except TypeError as e:
      raise ConfigError(f"config spec {spec!r}: get_config() of {path} takes no stage "
                        f"argument; drop ':{stage}'") from e
  try:
    return get_config(stage) if stage is not None else get_config()
  except ConfigError:
    raise
  except (KeyError, ValueError) as e:  # e.g. a stage the file does not define
    what = f"get_config({stage!r})" if stage is not None else "get_config()"
    raise ConfigError(f"config spec {spec!r}: {what} of {path} failed: "
                      f"{type(e).__name__}: {e}") from e


def _field_suggestions(node, name: str) -> str:
  import difflib  # pylint: disable=g-import-not-at-top
  keys = sorted(str(k) for k in node.keys())
  close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
  hint = f"did you mean {' or '.join(repr(k) for k in close)}? " if close else ""
  return f"{hint}fields there: {', '.join(keys)}"


def _check_field(c, path: str, spec: str):
  """ConfigError naming the first part of `path` that is not a field of `c`."""
  node = c
  parts = path.split(".")
  for i, p in enumerate(parts):
    where = ".".join(parts[:i]) or "the config"
    if not hasattr(node, "keys"):
      raise ConfigError(f"config spec {spec!r}: override {path}: {where} is of type "
                        f"{type(node).__name__}, not a section with fields")
    if p not in node:
      raise ConfigError(f"config spec {spec!r}: override {path}: unknown field "
                        f"{'.'.join(parts[:i + 1])!r} ({where}: "
                        f"{_field_suggestions(node, p)})")
    node = node[p]


def parse_override(item: str) -> tuple[str, str]:
  """`"a.b=v"` -> ("a.b", "v"); ConfigError for anything else."""
  if not isinstance(item, str) or "=" not in item:
    raise ConfigError(f"config override {item!r}: expected 'field.path=value'")
  path, _, value = item.partition("=")
  path = path.strip()
  if path.startswith("config."):
    path = path[len("config."):]
  if not path or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", path):
    raise ConfigError(f"config override {item!r}: {path!r} is not a field path a.b.c")
  return path, value


def apply_overrides(c, overrides=(), *, spec: str = "config"):
  """Sets `"a.b=v"` overrides on `c` in place, each value parsed by the field's type as
  `--config.a.b=v` is (ml_collections.config_flags); returns `c`."""
  overrides = [overrides] if isinstance(overrides, str) else list(overrides)
  if not overrides:
    return c
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ["liveinterp"]
  for item in overrides:
    path, value = parse_override(item)
    _check_field(c, path, spec)
    argv.append(f"--config.{path}={value}")
  fv = flags.FlagValues()
  try:
    config_flags.DEFINE_config_dict("config", c, flag_values=fv, lock_config=c.is_locked,
                                    sys_argv=argv)
    fv(argv)
  except flags.Error as e:
    msg = " ".join(str(e).split())
    msg = msg.split(" Currently supported types")[0]  # unsupported type: drop the list
    field = re.search(r"(?:--)?config\.([\w.]+)", msg)
    name = field.group(1) if field else "?"
    current = _get(c, name) if field else None
    shown = repr(current) if len(repr(current)) <= 60 else repr(current)[:57] + "..."
    raise ConfigError(f"config spec {spec!r}: override {name}: {msg} (the field is of type "
                      f"{type(current).__name__}: {shown})") from e
  return c


def load(spec: str, overrides=(), *, lock: bool = True, check: bool = True):
  """The config of `spec` (see above) with `overrides` (`"a.b=v"` strings) applied,
  locked (`lock`: no new fields) and, with `check`, validated by `validate(c)` (the
  device-count checks stay with the entry points, `validate(c, num_devices=...)`).

  The ConfigWarnings of suspicious-but-valid values are not raised here: callers that
  adjust the config afterwards (recipes.stage_config sizes sequences from the data) or
  run it validate again and warn about the values that will actually run.
  """
  path, stage = _resolve_spec(spec)
  if path.endswith(".json"):
    if stage is not None:
      raise ConfigError(f"config spec {spec!r}: a .json config takes no ':stage'")
    import json  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top
    try:
      with open(path) as f:
        c = ml_collections.ConfigDict(_from_json(json.load(f)))
    except ValueError as e:
      raise ConfigError(f"config spec {spec!r}: {path} is not a JSON config: {e}") from e
  else:
    module = _import_config_module(path, spec)
    c = _call_get_config(module.get_config, stage, path, spec)
  if not hasattr(c, "lock"):
    raise ConfigError(f"config spec {spec!r}: get_config() of {path} returned a "
                      f"{type(c).__name__}, expected an ml_collections.ConfigDict")
  if lock:
    c.lock()
  apply_overrides(c, overrides, spec=spec)
  if check:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ConfigWarning)
      validate(c)  # its messages name the field, as every entry point reports them
  return c


_LISTS = "__list_fields__"  # save(): the fields holding lists (every other sequence is a tuple)


def _tuples(node):
  if isinstance(node, dict):
    return {k: _tuples(v) for k, v in node.items()}
  if isinstance(node, list):
    return tuple(_tuples(v) for v in node)
  return node


def _from_json(d: dict) -> dict:
  """A saved config's dict with its sequence types back: JSON has only lists; the config
  files hold tuples except in the fields `save` listed under `_LISTS` (e.g.
  logical_axis_rules, a list of tuples), so the loaded config equals the one that ran
  and its tuple fields take `--config.a.b=v` overrides again."""
  lists = d.pop(_LISTS, [])
  d = _tuples(d)
  for path in lists:
    *parents, leaf = path.split(".")
    node = d
    for k in parents:
      node = node[k]
    node[leaf] = list(node[leaf])
  return d


def save(c, path: str) -> str:
  """Writes config `c` (resolved: overrides, data paths and sizes applied) as JSON to
  `path`, atomically; `load(path)` gives back an equal config. Every stage directory
  and run directory carries one, so `translate`, `evaluate` (and `export`/`serve`) need
  only the directory."""
  import json  # pylint: disable=g-import-not-at-top
  d = c.to_dict()
  lists = []

  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      elif isinstance(v, list):
        lists.append(prefix + k)
  walk(d, "")
  return files.write_json_atomic(path, {**d, _LISTS: lists}, indent=1, newline=True)
