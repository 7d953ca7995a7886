"""Speech decoding of a turn: the codec on the turn's speech frames, per row.

`decode_speech` turns a batch's speech ids `[B, M]` into audio `[B, F * hop]`, each row's
codec state advancing over exactly its own frames (frames every row has in blocks, the
ragged rest masked in the same blocks, or frame by frame), with the speaker embedding of
each speaking row computed alongside; with `DecodeSpec.codec_rows = k` only the speaking
rows run it, k at a time. Step 5 of the decoder's step (`liveinterp.inference.decoder`);
called from `decode_step._step_models`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from liveinterp.inference.stream_types import select_rows


def decode_speech(spec, codec, codec_state, speech_bm, n_frames_b, embed, speaker_be):
  """Speech ids `[B, M]` -> (audio `[B, F * hop]`, codec state, speaker embeddings `[B, E]`);
  each row's codec tails advance over exactly its `n_frames` frames.

  `embed(rows)` computes the speaker embeddings of rows `rows` (all rows when None); a
  speaking row (`n_frames > 0`) gets its new one, the others keep theirs (`speaker_be`),
  so a row's embedding does not depend on which other rows speak.
  With `spec.codec_rows = k` (0 < k < B) only the speaking rows embed and run the codec,
  gathered k at a time, speaking rows first (`_decode_speaking_rows`); otherwise all B
  rows do (`_decode_rows`), when any row speaks.
  """
  b, q, f = speech_bm.shape[0], spec.num_codebooks, spec.max_frames
  codes = spec.layout.frame_codes(speech_bm[:, :f * q], xp=jnp)       # [B, F, Q]
  if 0 < spec.codec_rows < b:
    return _decode_speaking_rows(spec, codec, codec_state, codes, n_frames_b, embed,
                                 speaker_be)
  speaking = n_frames_b > 0
  new = jax.lax.cond(jnp.any(speaking), embed, lambda: speaker_be)
  spk = jnp.where(speaking[:, None], new, speaker_be)
  audio, state = _decode_rows(spec, codec, codec_state, codes, n_frames_b, spk)
  return audio, state, spk


def _decode_speaking_rows(spec, codec, codec_state, codes, n_frames_b, embed,
                          speaker_be):
  """`_decode_rows` (and the speaker embedding) on the rows with frames only,
  k = `spec.codec_rows` at a time.

  Rows are ordered speaking first (a stable sort: row order kept); group g decodes the
  k rows at positions [g k, g k + k) of that order, the last group shifted back to end at
  B, its rows that an earlier group decoded given 0 frames (state unchanged) and their
  audio and embedding kept. Groups run while g k < the number of speaking rows, so a
  chunk where at most k rows speak costs one embedding and codec call on k rows, and one
  where none speaks, none.
  """
  b, k = codes.shape[0], spec.codec_rows
  order = jnp.argsort(n_frames_b == 0, stable=True).astype(jnp.int32)  # speaking first
  n_speaking = jnp.sum(n_frames_b > 0)
  audio = jnp.zeros((b, spec.max_frames * spec.hop), jnp.float32)

  def group(c):
    g, state, audio, spk = c
    start = jnp.minimum(g * k, b - k)
    rows = jax.lax.dynamic_slice_in_dim(order, start, k)               # [k]
    fresh = start + jnp.arange(k) >= g * k  # not decoded by an earlier group
    n_k = jnp.where(fresh, n_frames_b[rows], 0)
    spk_k = jnp.where((n_k > 0)[:, None], embed(rows), spk[rows])
    y, new = _decode_rows(spec, codec, jax.tree.map(lambda x: x[rows], state),
                          codes[rows], n_k, spk_k)
    state = jax.tree.map(lambda full, x: full.at[rows].set(x), state, new)
    audio = audio.at[rows].set(jnp.where(fresh[:, None], y, audio[rows]))
    return g + 1, state, audio, spk.at[rows].set(spk_k)

  _, state, audio, spk = jax.lax.while_loop(lambda c: c[0] * k < n_speaking, group,
                                            (jnp.int32(0), codec_state, audio, speaker_be))
  return audio, state, spk


def _decode_rows(spec, codec, codec_state, codes, n_frames_b, spk_be):
  """Frame codes `[B, F, Q]` -> audio `[B, F * hop]` for every row.

  Frames every row has are decoded in blocks (`spec.codec_blocks`, largest first: one
  codec call on k frames costs far less than k calls on one). The rest, frames only some
  rows have, with `spec.codec_tail == "masked"` in the same blocks over the union, each
  row's state advancing over its own frames (`Codec.decode_step_rows`); with "frames"
  one frame per iteration with per-row validity (the previous path, kept for the
  benchmark's before/after). All give the same audio (the codec decoder is causal with
  exact streaming state).
  """
  b, f = codes.shape[0], spec.max_frames
  hop = spec.hop
  audio = jnp.zeros((b, f * hop), jnp.float32)
  n_common = jnp.min(n_frames_b)
  start = jnp.int32(0)
  state = codec_state

  for k in spec.codec_blocks:
    if k > f:
      continue

    def block(c, k=k):
      i, st, audio = c
      frames = jax.lax.dynamic_slice_in_dim(codes, i, k, axis=1)       # [B, k, Q]
      y, st = codec.decode_step(frames, spk_be, st)
      audio = jax.lax.dynamic_update_slice_in_dim(audio, y.astype(jnp.float32), i * hop,
                                                  axis=1)
      return i + k, st, audio

    start, state, audio = jax.lax.while_loop(
        lambda c, k=k: c[0] + k <= n_common, block, (start, state, audio))

  if spec.codec_tail == "masked":
    # The ragged rest in the same blocks over the union of the rows' frames: each row's
    # codec state advances over exactly its own frames (`Codec.decode_step_rows`), so
    # rows of different lengths cost one batched call per block, not one per frame.
    n_max = jnp.max(n_frames_b)
    sizes = tuple(k for k in spec.codec_blocks if k <= f) + (1,)
    for k in sizes:

      def ragged(c, k=k):
        i, st, audio = c
        frames = jax.lax.dynamic_slice_in_dim(codes, i, k, axis=1)     # [B, k, Q]
        y, st = codec.decode_step_rows(frames, spk_be, st, n_frames_b - i)
        audio = jax.lax.dynamic_update_slice_in_dim(audio, y, i * hop, axis=1)
        return i + k, st, audio

      # Larger blocks while they hold only frames some row has; the smallest block runs
      # past n_max (masked) while it fits the buffer; single frames finish the rest.
      over = k == sizes[-2] if len(sizes) > 1 else True
      start, state, audio = jax.lax.while_loop(
          lambda c, k=k, over=over: (c[0] < n_max) & (c[0] + k <= f)
          & (over | (c[0] + k <= n_max)), ragged, (start, state, audio))
    return audio, state

  def frame(c):
    i, st, audio = c
    y, new = codec.decode_step(jax.lax.dynamic_slice_in_dim(codes, i, 1, axis=1), spk_be, st)
    ok = i < n_frames_b
    st = select_rows(ok, new, st)
    y = jnp.where(ok[:, None], y.astype(jnp.float32), 0.0)
    audio = jax.lax.dynamic_update_slice_in_dim(audio, y, i * hop, axis=1)
    return i + 1, st, audio

  _, state, audio = jax.lax.while_loop(
      lambda c: c[0] < jnp.max(n_frames_b), frame, (start, state, audio))
  return audio, state
