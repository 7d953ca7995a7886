"""The plain types and checks the streaming decoder's callers share, free of flax and of
the networks: `DecoderState`, `StepOutputs`, the `EOT` / `PAD` ids, `check_finite`,
`select_rows` (per-row choice between two batch-major state pytrees).

`liveinterp.inference.session` (the host side) and `liveinterp.serving.loader` (the
exported decoder) need only these, so they import this module, never
`liveinterp.inference.decoder` (which builds the networks with flax). The decoder and
its jitted step (`decode_step`) use the same definitions; the old names stay importable
from `liveinterp.inference.decoder` and `decode_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from liveinterp.common.token_layout import EOT, PAD


class DecoderState(NamedTuple):
  """Everything a batch of streams carries between chunks (fixed shapes)."""
  model: Any                   # s2st.StreamState: encoder state + LLM ring cache
  codec: Any                   # codec decoder tails
  speaker_audio: jax.Array     # [B, L] last L = S + d * chunk_samples source samples
                               # (oldest first; S = speaker_samples, d = voice lag)
  speaker_fill: jax.Array      # [B] int32 how many of them are real (<= L)
  speaker: jax.Array           # [B, E] speaker embedding of the row's last speaking chunk
  pending_eot: jax.Array       # [B] bool: the last turn's <eot> is not in the cache yet
  chunks: jax.Array            # [B] int32 chunks consumed
  rng: jax.Array               # PRNG key


class StepOutputs(NamedTuple):
  """What one `step` produced per stream (fixed-size buffers + counts)."""
  valid: jax.Array        # [B] bool: the row consumed a chunk in this step
  chunk_index: jax.Array  # [B] int32: index of the row's last chunk read (0-based)
  end_ms: jax.Array       # [B] int32: its end in ms of source (= emission time); int32
                          # wraps after 24.8 days of stream, hosts use chunk_index
  tokens: jax.Array       # [B, M] int32: the whole turn (PAD after n_tokens)
  n_tokens: jax.Array     # [B]
  text: jax.Array         # [B, M] target-text ids of the turn (after <text>)
  n_text: jax.Array       # [B]
  src: jax.Array          # [B, M] source-transcript ids (after <src>)
  n_src: jax.Array        # [B]
  speech: jax.Array       # [B, M] speech ids (frame-major)
  n_speech: jax.Array     # [B]
  audio: jax.Array        # [B, F * hop] float32 decoded speech of the turn
  n_samples: jax.Array    # [B] int32 valid samples of `audio`
  # Two log-probabilities per token (0 after n_tokens), see `sampling`:
  logprob_raw: jax.Array      # [B, M] float32 log softmax(logits)[token]: the raw model
                              # distribution (no grammar mask, temperature 1, no top-p)
  logprob_sampled: jax.Array  # [B, M] float32 log q(token) under the distribution it was
                              # actually drawn from (grammar/budget mask -> temperature ->
                              # top-p; greedy: 0, a point mass). Forced tokens: what that
                              # distribution gives them (-inf outside its support).
  values: jax.Array       # [B, M] float32 value-head output where each token was chosen
  speaker: jax.Array      # [B, E] speaker embedding of this chunk's speech (a row that
                          # does not speak: its last one)
  logits: Any = None      # [B, M, V] float32 logits each token was chosen from (optional)

  @property
  def log_probs(self) -> jax.Array:
    """Former name of `logprob_raw` (kept for callers; prefer the explicit names)."""
    return self.logprob_raw


def check_finite(x: np.ndarray, what: str):
  """ValueError naming `what` when `x` is not numeric or holds NaN/Inf samples."""
  if not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"{what}: expected numeric samples, got dtype {x.dtype}")
  bad = ~np.isfinite(x)
  if bad.any():
    raise ValueError(f"{what}: {int(bad.sum())} non-finite sample(s) (NaN/Inf) in "
                     f"{x.size}; clean the input audio first")


def step_inputs(decoder, batch: int, audio_chunk_bc, valid_b=None, forced_tokens_bm=None,
                forced_len_b=None):
  """The checked device arguments of one decoder step -> (audio [B, C] f32, valid [B]
  bool, forced [B, M] i32, forced_len [B] i32), for any decoder with `chunk_samples`,
  `chunk_ms`, `sample_rate`, `max_turn_tokens` and `vocab_size` (the in-process
  `StreamingDecoder` and the exported one check their inputs alike). ValueError naming
  the bad argument: a wrong shape, non-finite host samples, forced ids out of range.
  Not forcing: forced ids 0 with length −1 (every row samples)."""
  shape = tuple(np.shape(audio_chunk_bc))
  if shape != (batch, decoder.chunk_samples):
    raise ValueError(f"audio chunk has shape {shape}, expected [{batch}, "
                     f"{decoder.chunk_samples}] ({decoder.chunk_ms} ms at "
                     f"{decoder.sample_rate} Hz for each of the {batch} streams)")
  if isinstance(audio_chunk_bc, np.ndarray):
    check_finite(audio_chunk_bc, "audio chunk")
  audio = jnp.asarray(audio_chunk_bc, jnp.float32)
  valid = (jnp.ones((batch,), bool) if valid_b is None
           else jnp.asarray(_vector(valid_b, batch, "valid_b"), bool))
  m = decoder.max_turn_tokens
  if forced_tokens_bm is None:
    if forced_len_b is not None:
      raise ValueError("forced_len_b given without forced_tokens_bm")
    return audio, valid, jnp.zeros((batch, m), jnp.int32), jnp.full((batch,), -1, jnp.int32)
  if tuple(np.shape(forced_tokens_bm)) != (batch, m):
    raise ValueError(f"forced_tokens_bm has shape {tuple(np.shape(forced_tokens_bm))}, "
                     f"expected [{batch}, {m}] (max_turn_tokens)")
  if isinstance(forced_tokens_bm, np.ndarray) and forced_tokens_bm.size and (
      forced_tokens_bm.min() < 0 or forced_tokens_bm.max() >= decoder.vocab_size):
    raise ValueError(f"forced_tokens_bm has ids outside [0, {decoder.vocab_size})")
  forced_n = (jnp.full((batch,), m, jnp.int32) if forced_len_b is None
              else jnp.asarray(_vector(forced_len_b, batch, "forced_len_b"), jnp.int32))
  return audio, valid, jnp.asarray(forced_tokens_bm, jnp.int32), forced_n


def _vector(x, batch: int, name: str):
  if tuple(np.shape(x)) != (batch,):
    raise ValueError(f"{name} has shape {tuple(np.shape(x))}, expected [{batch}]")
  return x


__all__ = ["DecoderState", "StepOutputs", "check_finite", "step_inputs", "EOT", "PAD"]


def select_rows(valid_b: jax.Array, new: Any, old: Any) -> Any:
  """Per-row choice between two state pytrees whose leaves are batch-major.

  Scalars (stream-global counters such as the encoder's frame position) advance when
  any row does.
  """
  any_valid = jnp.any(valid_b)

  def pick(n, o):
    if n.ndim == 0:
      return jnp.where(any_valid, n, o)
    return jnp.where(valid_b.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(pick, new, old)
