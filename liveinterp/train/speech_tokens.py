"""Speech tokens of the corpus: target speech encoded by the trained codec.

    python -m liveinterp.train.speech_tokens --config=configs/tiny.py:pretrain \\
        --codec_workdir=runs/tiny/codec --out=runs/tiny/speech_codes.npz

Runs between the codec stage and pretraining: every record's target speech (all splits)
goes through `Codec.encode`, and the codes are stored by record id in one `.npz`
(`data.codes_path`). `codes_fn_for(config)` hands the pipelines a lookup function. Audio
is encoded in length buckets (`_bucket`) so compiles stay few.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Mapping

import jax
import numpy as np
from absl import flags
from flax import nnx

SPLITS = ("train", "dev", "test", "talk")


def codes_path(config) -> str:
  return config.data.codes_path


def codes_fn_for(config) -> Callable[[Mapping], np.ndarray | None] | None:
  """Lookup record -> codes int32[T, K], or None when no codes file is configured."""
  path = codes_path(config)
  if not path or not os.path.exists(path):
    return None
  with np.load(path) as z:
    table = {k: z[k] for k in z.files}
  num_codebooks = int(config.codec.num_codebooks)
  for k, v in table.items():
    if v.ndim != 2 or v.shape[1] != num_codebooks:
      raise ValueError(f"{path}: codes of {k!r} have shape {v.shape}, expected "
                       f"[T, {num_codebooks}] (codec.num_codebooks)")
    break

  def lookup(rec):
    return table.get(str(rec["id"]))
  return lookup


def _bucket(n: int, hop: int) -> int:
  """Padded length (samples) of an utterance of `n` samples: a multiple of 32 codec frames
  up to 256 frames (0.64 s at 50 Hz), then 4 lengths per octave (the next power of two p
  in steps of p / 8), so padding costs <= 1.25x and a corpus compiles few encoder shapes.
  (Powers of two padded the laptop build's utterances, 72-218 frames, by 1.53x on average;
  multiples of 32 frames by 1.11x with 5 shapes.)"""
  frames = max(1, -(-n // hop))
  step = max(32, (1 << (frames - 1).bit_length()) // 8)
  return hop * step * -(-frames // step)


def encode_corpus(config, codec_workdir: str, out_path: str, batch: int = 8,
                  splits=SPLITS) -> dict:
  """Encodes every record's target speech; writes `out_path`; returns statistics."""
  from data_pipelines import pipelines
  from liveinterp.common import files, reporting
  from liveinterp.models import voice
  from liveinterp.common import checkpointing, config as config_lib, mesh as mesh_lib
  from liveinterp.common import sharding

  # Inference, data-parallel: the weights replicated on every device, the batch split over
  # them. (Restored as trained, fsdp-sharded, with an unsharded batch, XLA split each small
  # conv over the devices with collectives in between: 2 CPU devices encoded ~3x slower
  # than one.)
  mesh = mesh_lib.create_mesh(config.mesh)
  rules = sharding.rules_from_config(config.logical_axis_rules)
  model, _ = checkpointing.restore_model(
      lambda rngs: voice.VoiceCodec(config, rngs=rngs),
      os.path.join(codec_workdir, "checkpoints"), mesh=mesh,
      rules=config.logical_axis_rules)
  codec = model.codec
  hop = codec.hop
  graphdef, weights = nnx.split(codec)
  weights = jax.device_put(weights, jax.sharding.NamedSharding(mesh,
                                                              jax.sharding.PartitionSpec()))
  rows = sharding.data_sharding(mesh, 2, rules)
  shards = config_lib.data_parallel_size(config, mesh.size) or 1
  batch = -(-batch // shards) * shards  # every device gets whole rows
  encode = jax.jit(lambda w, x: nnx.merge(graphdef, w).encode(x))
  # encoded_frames: frames the encoder computed (batches x padded length), vs `frames`
  table, stats = {}, {"records": 0, "frames": 0, "encoded_frames": 0, "skipped_no_audio": 0}
  shapes = set()  # distinct encoder input shapes = encoder compiles
  t0 = time.time()
  for split in splits:
    try:
      source = pipelines.open_corpus(config, split)
    except Exception as e:  # a split may not exist in every build  # noqa: BLE001
      reporting.console(f"[speech_tokens] split {split}: not available ({e})")
      continue
    pending: dict[int, list] = {}

    def flush(length):
      # Always `batch` rows (the rows past the last item are silence, dropped below): a
      # bucket's leftovers at the end of a split then reuse the bucket's program instead
      # of compiling one per leftover count (rows are encoded independently).
      items = pending.pop(length)
      x = np.zeros((batch, length), np.float32)
      stats["encoded_frames"] += batch * length // hop
      shapes.add(x.shape)
      for i, (_, a) in enumerate(items):
        x[i, :a.size] = a
      with sharding.use_mesh(mesh, rules):
        codes = np.asarray(encode(weights, jax.device_put(x, rows)))
      for i, (rid, a) in enumerate(items):
        n = -(-a.size // hop)
        table[rid] = codes[i, :n].astype(np.int16 if config.codec.codebook_size < 32768
                                          else np.int32)
        stats["frames"] += n

    for i in range(len(source)):
      rec = source[i]
      a = np.asarray(rec["tgt_audio"], np.float32) / 32768.0
      if a.size == 0:
        stats["skipped_no_audio"] += 1
        continue
      length = _bucket(a.size, hop)
      pending.setdefault(length, []).append((str(rec["id"]), a))
      stats["records"] += 1
      if len(pending[length]) == batch:
        flush(length)
      if (i + 1) % 500 == 0:
        reporting.console(f"[speech_tokens] {split}: {i + 1}/{len(source)} records")
    for length in list(pending):
      flush(length)
  with files.replaced_on_success(out_path, ".npz") as tmp:
    np.savez(tmp, **table)
  stats["encoder_shapes"] = len(shapes)
  stats["seconds"] = round(time.time() - t0, 1)
  stats["codes_per_second_of_speech"] = config.audio.sample_rate / hop
  return stats


def main(argv):
  del argv
  from liveinterp.common import cli, config as config_lib, reporting
  if _CONFIG.value is None:
    raise cli.UserError("--config is required: --config=configs/<recipe>.py:pretrain")
  cfg = config_lib.load(_CONFIG.value, cli.config_overrides())
  stats = encode_corpus(cfg, _CODEC.value, _OUT.value)
  reporting.console(f"[speech_tokens] {stats} -> {_OUT.value}")


if __name__ == "__main__":
  from liveinterp.common import cli as _cli
  _CONFIG = flags.DEFINE_string("config", None, "config file[:stage] (config.load spec); "
                                "override fields with --config.a.b=v")
  _CODEC = flags.DEFINE_string("codec_workdir", None, "codec stage workdir", required=True)
  _OUT = flags.DEFINE_string("out", None, "output .npz", required=True)
  _cli.run(main, prog="python -m liveinterp.train.speech_tokens", config_overrides=True)
