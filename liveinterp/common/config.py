"""Config validation: one function that rejects bad values with a message naming the field.

Everything downstream may assume a validated config. `validate(config, num_devices=N)`
also checks the mesh against the device count.

Valid but suspicious settings warn (`warnings.warn(..., ConfigWarning)`, so a test can
`pytest.warns` and a run can filter them) instead of failing: e.g. a stream stage whose
training sequences never reach the LLM's attention window (`check_window_regime`).
"""

from __future__ import annotations

import math
import numbers
import warnings

from liveinterp.common import axes

STAGES = ("demo", "codec", "pretrain", "sft", "rl1", "rl2")
DTYPES = ("float32", "bfloat16")
NUM_SPECIAL_TOKENS = 32  # control tokens reserved by the tokenizer (<text>, <speech>, ...)
# Stages that train on simultaneous streams, the input the streaming decoder serves.
STREAM_STAGES = ("sft", "rl1", "rl2")


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
               "tokenizer.text_vocab_size", "data.seq_len",
               "train.batch_size", "train.steps", "train.learning_rate",
               "train.grad_accum_steps", "train.log_every", "checkpoint.every_steps",
               "checkpoint.keep"):
    _positive(c, path)
  for path in ("train.warmup_steps", "train.weight_decay", "train.grad_clip",
               "llm.sink_tokens", "encoder.dropout", "data.worker_count",
               "train.speech_weight", "train.frame_weight", "train.ctc_weight"):
    if _get(c, path) < 0:
      raise ConfigError(f"{path}={_get(c, path)!r}: must be >= 0")
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
  if c.tokenizer.get("model_type", "unigram") not in ("bpe", "unigram"):
    raise ConfigError(f"tokenizer.model_type={c.tokenizer.model_type!r}: expected 'bpe' or "
                      f"'unigram'")
  if c.data.policy not in ("alignment", "wait_k"):
    raise ConfigError(f"data.policy={c.data.policy!r}: expected 'alignment' or 'wait_k'")
  if c.data.wait_k < 1:
    raise ConfigError(f"data.wait_k={c.data.wait_k}: must be >= 1")
  for task, w in c.data.task_weights.items():
    if task not in ("asr", "st", "tts", "s2st") or w < 0:
      raise ConfigError(f"data.task_weights.{task}={w}: unknown task or negative weight")
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

  _validate_mesh(c, num_devices)
  _validate_rules(c)
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
