"""Shared benchmark helpers: timing, the matmul roofline, table printing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def time_fn(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
  """Best wall time (s) of `fn()` (which must block on its result)."""
  for _ in range(warmup):
    fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def matmul_flops_per_second(n: int = 1024, dtype=jnp.float32, repeats: int = 5) -> float:
  """Measured FLOP/s of an n×n×n matmul on the default device (the roofline)."""
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (n, n), dtype)
  b = jax.random.normal(k2, (n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  t = time_fn(lambda: f(a, b).block_until_ready(), repeats=repeats)
  return 2.0 * n ** 3 / t


def environment() -> dict:
  return {"backend": jax.default_backend(), "devices": jax.device_count(),
          "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
          "machine": platform.machine(), "cpus": os.cpu_count()}


def print_table(rows: Sequence[dict], columns: Sequence[str]):
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.3g}"
    return str(v)
  cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  print("  ".join("-" * w for w in widths))
  for row in cells:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def write_json(path: str, payload: dict):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(payload, f, indent=1, default=lambda o: float(o) if np.isscalar(o) else str(o))
  print(f"wrote {path}")


def talk_frames(dec, layout) -> int:
  """Speech frames of the `talk` turn: one chunk's worth, within the turn budget."""
  hop = dec.spec.hop
  return min(dec.chunk_ms * dec.sample_rate // 1000 // hop,
             dec.max_turn_tokens // layout.num_codebooks - 4)


def forced_turn(layout, rng, n_words: int, n_frames: int, speech: bool = True) -> list:
  """The token ids of a forced turn: `<text>` + n_words text ids [+ `<speech>` + n_frames
  frames of random codes] + `<eot>` (streaming_batch's workloads, profile_decode's talk turn)."""
  from liveinterp.common import token_layout  # pylint: disable=g-import-not-at-top
  ids = [token_layout.TEXT] + [layout.text_offset + 1 + i % 50 for i in range(n_words)]
  if speech:
    ids += [token_layout.SPEECH] + [
        layout.speech_offset + int(x)
        for x in rng.integers(0, layout.codebook_size, n_frames * layout.num_codebooks)]
  return ids + [token_layout.EOT]


# ---- streams of audio (serve_load, stream_replay) ------------------------------------
def chirp(seconds: float, seed: int, rate: int) -> np.ndarray:
  """A chirp with noise, one per seed (a stream the random-weight model writes to now and
  then): float32 [seconds * rate]."""
  n = int(seconds * rate)
  t = np.arange(n) / rate
  rng = np.random.default_rng(seed)
  f0 = 150 + 40 * (seed % 8)
  x = 0.3 * np.sin(2 * np.pi * (f0 + 200 * np.sin(0.5 * t)) * t) * (0.6 + 0.4 * np.sin(3 * t))
  return (x + 0.03 * rng.standard_normal(n)).astype(np.float32)


def corpus_speech(workdir: str, seconds: float, streams: int, rate: int) -> list:
  """Per stream, `seconds` of the run's test-split source speech: utterances back to
  back (300 ms pauses), stream i starting at utterance 7 x i, float32 at `rate` (the
  corpus opened once for all)."""
  from data_pipelines import pipelines  # pylint: disable=g-import-not-at-top
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load(os.path.join(workdir, "config.json"), check=False)
  if int(cfg.audio.sample_rate) != rate:
    raise ValueError(f"{workdir}: corpus at {cfg.audio.sample_rate} Hz, decoder at {rate}")
  test = pipelines.open_corpus(cfg, "test")
  pause = np.zeros(int(0.3 * rate), np.float32)
  out = []
  for stream in range(streams):
    parts, n, i = [], 0, 7 * stream
    while n < seconds * rate:
      a = np.asarray(test[i % len(test)]["src_audio"], np.float32) / 32768.0
      parts += [a, pause]
      n += a.size + pause.size
      i += 1
    out.append(np.concatenate(parts)[:int(seconds * rate)])
  return out
