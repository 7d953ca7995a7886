"""The plain types and checks the streaming decoder's callers share, free of flax and of
the networks: `DecoderState`, `StepOutputs`, the `EOT` / `PAD` ids, `check_finite`.

`liveinterp.inference.session` (the host side) and `liveinterp.serving.loader` (the
exported decoder) need only these, so they import this module, never
`liveinterp.inference.decoder` (which builds the networks with flax). The decoder and
its jitted step (`decode_step`) use the same definitions; the old names stay importable
from `liveinterp.inference.decoder` and `decode_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from liveinterp.common.token_layout import EOT, PAD


class DecoderState(NamedTuple):
  """Everything a batch of streams carries between chunks (fixed shapes)."""
  model: Any                   # s2st.StreamState: encoder state + LLM ring cache
  codec: Any                   # codec decoder tails
  speaker_audio: jax.Array     # [B, L] last L = S + d * chunk_samples source samples
                               # (oldest first; S = speaker_samples, d = voice lag)
  speaker_fill: jax.Array      # [B] int32 how many of them are real (<= L)
  speaker: jax.Array           # [B, E] latest speaker embedding
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
  speaker: jax.Array      # [B, E] speaker embedding used for this chunk's speech
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


__all__ = ["DecoderState", "StepOutputs", "check_finite", "EOT", "PAD"]
