"""Fixed-size ring-buffer KV cache with attention sinks (StreamingLLM-style sliding window).

Layout (one stream per batch row):

  k          L x [B, K, Dh, W] keys (rotary already applied), compute dtype
  v          L x [B, K, W, Dh] values, compute dtype
                               one buffer per layer, heads-major, so a decode step's
                               scores (q [G, Dh] @ k [Dh, W]) and value mix
                               (p [G, W] @ v [W, Dh]) are plain matmuls batched over
                               (B, K) that read the layer's buffers as they are: keys are
                               stored transposed because a [W, Dh] key buffer is
                               transposed (packed) by the matmul on every read, 3.3x the
                               time of the scores (B=16, W=520, 4 layers: 2.4 vs 0.73 ms
                               on this CPU); a slice of a stacked [L, ...] cache, or a
                               [B, W, K, Dh] layout, is copied first (issue #14)
  slot_pos   [B, W] int32      absolute position held by each slot, -1 = empty
  length     [B] int32         tokens written so far = absolute position of the next token

`W = window` slots. Slots `[0, sink)` hold positions `0 .. sink-1` forever (the *sinks*);
slots `[sink, W)` are a ring over the later positions: position `p >= sink` lives in slot
`sink + (p - sink) % (W - sink)`. Slot positions are the same for every layer, so they are
stored once.

Visibility rule (shared by the cache and by the training mask, so both see exactly the
same keys): a query at position `q` sees the key at position `p` iff

  p <= q  and  (p < sink  or  q - p < W - sink)

i.e. the sinks plus the most recent `W - sink` positions (itself included). While
`q < W` this is plain causal attention; past it every query sees exactly `W` keys, so the
cost and memory of a step do not grow with the absolute position.

Rotary positions: keys are rotated with their *absolute* position when they are written
and never touched again. Rotary logits depend only on `q - p`, so a cached step computes
exactly what the full forward with `attention_mask(..., window, sink)` computes (that is
what the tests check). The alternative (StreamingLLM) re-positions keys by their slot
inside the cache so that positions never exceed the window; we do not, because training
then uses the very same mask and positions as inference. The price: the sinks sit at a
distance `q - p` that grows with the stream, so training sequences should be long enough
(or the position reset per utterance/segment) for the model to have seen such distances,
and float32 rotary angles lose precision beyond ~1e6 positions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from liveinterp.common import axes
from liveinterp.common.sharding import shard_logical
from liveinterp.layers.attention import NEG_INF

EMPTY = -1


class KVCache(NamedTuple):
  """Ring-buffer cache of all layers (see the module docstring for the layout)."""
  k: tuple             # L x [B, K, Dh, W] (transposed)
  v: tuple             # L x [B, K, W, Dh]
  slot_pos: jax.Array  # [B, W] int32, -1 = empty
  length: jax.Array    # [B] int32


def logical_axes() -> KVCache:
  """Logical axis names of the cache's leaves (for shardings of jitted inference steps):
  `k` and `v` give those of each layer's buffer."""
  k = (axes.CACHE_BATCH, axes.CACHE_KV_HEADS, axes.CACHE_HEAD_DIM, axes.CACHE_LENGTH)
  v = (axes.CACHE_BATCH, axes.CACHE_KV_HEADS, axes.CACHE_LENGTH, axes.CACHE_HEAD_DIM)
  return KVCache(k=k, v=v, slot_pos=(axes.CACHE_BATCH, axes.CACHE_LENGTH),
                 length=(axes.CACHE_BATCH,))


def constrain(cache: KVCache) -> KVCache:
  """Applies `shard_logical` with the cache's logical axes to every leaf."""
  names = logical_axes()
  return KVCache(k=tuple(shard_logical(x, names.k) for x in cache.k),
                 v=tuple(shard_logical(x, names.v) for x in cache.v),
                 slot_pos=shard_logical(cache.slot_pos, names.slot_pos),
                 length=shard_logical(cache.length, names.length))


def init(num_layers: int, batch: int, window: int, num_kv_heads: int, head_dim: int,
         dtype=jnp.float32) -> KVCache:
  """An empty cache: zeros for k/v, every slot position -1, length 0."""
  k_shape = (batch, num_kv_heads, head_dim, window)
  v_shape = (batch, num_kv_heads, window, head_dim)
  cache = KVCache(k=tuple(jnp.zeros(k_shape, dtype) for _ in range(num_layers)),
                  v=tuple(jnp.zeros(v_shape, dtype) for _ in range(num_layers)),
                  slot_pos=jnp.full((batch, window), EMPTY, jnp.int32),
                  length=jnp.zeros((batch,), jnp.int32))
  return constrain(cache)


def window_visible(q_pos: jax.Array, k_pos: jax.Array, window: int | None,
                   sink_tokens: int) -> jax.Array:
  """Broadcasting bool: key at `k_pos` is visible to the query at `q_pos`.

  `p <= q and (p < sink or q - p < window - sink)`; `window=None` means plain causal.
  """
  causal = k_pos <= q_pos
  if window is None:
    return causal
  recent = (q_pos - k_pos) < (window - sink_tokens)
  return causal & ((k_pos < sink_tokens) | recent)


def attention_mask(positions_bt: jax.Array, segment_ids_bt: jax.Array | None = None,
                   window: int | None = None, sink_tokens: int = 0) -> jax.Array:
  """Training mask [B, 1, T, T] (True = attend) that reproduces what the cache sees.

  Causal by index, same segment (packing), and the sink + sliding-window rule on the
  positions (`window=None`: no window). Positions restart per packed segment, so every
  segment has its own sinks.
  """
  t = positions_bt.shape[1]
  idx = jnp.arange(t)
  mask = (idx[None, :] <= idx[:, None])[None]  # [1, T, T]
  mask = mask & window_visible(positions_bt[:, :, None], positions_bt[:, None, :],
                               window, sink_tokens)
  if segment_ids_bt is not None:
    mask = mask & (segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :])
  return mask[:, None]


def slot_of(pos: jax.Array, window: int, sink_tokens: int) -> jax.Array:
  """Slot index of absolute position `pos` (sinks fixed, the rest a ring)."""
  ring = window - sink_tokens
  return jnp.where(pos < sink_tokens, pos, sink_tokens + (pos - sink_tokens) % ring)


class ExtendPlan(NamedTuple):
  """Everything a chunk of T new tokens needs, computed once for all layers."""
  positions: jax.Array   # [B, T] absolute positions of the new tokens
  write_idx: jax.Array   # [B, T] slot to write each token to; W = not written (dropped)
  cache_mask: jax.Array  # [B, 1, T, W] queries x existing cache slots
  new_mask: jax.Array    # [B, 1, T, T] queries x the chunk's own keys
  slot_pos: jax.Array    # [B, W] slot positions after the write
  length: jax.Array      # [B] length after the write


def plan_extend(slot_pos_bw: jax.Array, length_b: jax.Array, valid_bt: jax.Array,
                window: int, sink_tokens: int) -> ExtendPlan:
  """Positions, slots and masks for appending the valid tokens of a [B, T] chunk.

  Valid tokens of row b get positions `length[b], length[b]+1, ...` in order; invalid
  ones (padding of rows with fewer new tokens) are neither attended to nor written, and
  do not advance `length`. Queries attend to the cache as it was *before* the chunk plus
  the chunk itself, so a chunk longer than the ring works, and of the chunk's tokens only
  the sinks and the last `W - sink` are written (no two writes hit one slot).
  """
  valid = valid_bt.astype(bool)
  vi = valid.astype(jnp.int32)
  pos = length_b[:, None] + jnp.cumsum(vi, axis=1) - vi              # [B, T]
  new_length = length_b + jnp.sum(vi, axis=1)
  last = new_length[:, None] - 1
  keep = valid & ((pos < sink_tokens) | (pos > last - (window - sink_tokens)))
  write_idx = jnp.where(keep, slot_of(pos, window, sink_tokens), window)
  b = jnp.arange(pos.shape[0])[:, None]
  new_slot_pos = slot_pos_bw.at[b, write_idx].set(pos, mode="drop")
  cache_mask = (slot_pos_bw[:, None, :] != EMPTY) & window_visible(
      pos[:, :, None], slot_pos_bw[:, None, :], window, sink_tokens)
  t = pos.shape[1]
  idx = jnp.arange(t)
  new_mask = ((idx[None, :] <= idx[:, None])[None] & valid[:, None, :]
              & window_visible(pos[:, :, None], pos[:, None, :], window, sink_tokens))
  return ExtendPlan(positions=pos, write_idx=write_idx, cache_mask=cache_mask[:, None],
                    new_mask=new_mask[:, None], slot_pos=new_slot_pos,
                    length=new_length)


def write(cache: tuple, new_lbtkd: jax.Array, write_idx_bt: jax.Array, *,
          keys: bool) -> tuple:
  """Scatters the chunk's k (`keys=True`) or v of every layer [L, B, T, K, Dh] into the
  layers' buffers, L x [B, K, Dh, W] keys or [B, K, W, Dh] values (one scatter per
  layer; in place when nothing reads the old buffer afterwards).

  Indices equal to W (dropped tokens) are ignored; shapes never change.
  """
  b = jnp.arange(new_lbtkd.shape[1])[:, None]
  # (b, idx) index two axes: numpy puts their broadcast [B, T] first -> [B, T, K, Dh]
  if keys:
    return tuple(c.at[b, :, :, write_idx_bt].set(new_lbtkd[l].astype(c.dtype), mode="drop")
                 for l, c in enumerate(cache))
  return tuple(c.at[b, :, write_idx_bt].set(new_lbtkd[l].astype(c.dtype), mode="drop")
               for l, c in enumerate(cache))


def attend(q_bthd: jax.Array, plan: ExtendPlan, k_cache_bkdw: jax.Array,
           v_cache_bkwd: jax.Array, k_new_btkd: jax.Array,
           v_new_btkd: jax.Array) -> jax.Array:
  """Attention of the chunk's queries over [cache slots ; chunk keys] -> [B, T, H, Dh].

  One layer's cache: keys [B, K, Dh, W] (transposed), values [B, K, W, Dh].

  Same result as `dot_product_attention(q, concat(keys), concat(values), concat(masks))`
  without building the concatenation (a copy of the whole layer cache per token): the two
  score blocks [B, H, T, W] and [B, H, T, T] share one max and one normaliser, then both
  value blocks are summed. Rows that see no key return zeros (as there).
  """
  b, t, h, d = q_bthd.shape
  kh = k_cache_bkdw.shape[1]
  if h % kh:
    raise ValueError(f"{h} query heads are not a multiple of {kh} key/value heads")
  qg = q_bthd.reshape(b, t, kh, h // kh, d)
  scale = jnp.sqrt(jnp.float32(d))
  if t == 1:
    return _attend_one(qg, plan, k_cache_bkdw, v_cache_bkwd, k_new_btkd, v_new_btkd,
                       scale).reshape(b, t, h, d)

  def scores(k, mask, spec):  # [B, K, G, T, S] f32, masked entries NEG_INF
    s = jnp.einsum(spec, qg, k.astype(q_bthd.dtype),
                   preferred_element_type=jnp.float32) / scale
    mask = mask[:, :, None]  # [B, 1, 1, T, S]
    return jnp.where(mask, s, NEG_INF), mask

  p_c, p_n = _joint_softmax(*scores(k_cache_bkdw, plan.cache_mask, "btkgd,bkds->bkgts"),
                            *scores(k_new_btkd, plan.new_mask, "btkgd,bskd->bkgts"),
                            axis=-1)

  def mix(p, v, spec):
    return jnp.einsum(spec, p.astype(q_bthd.dtype), v.astype(q_bthd.dtype))

  out = (mix(p_c, v_cache_bkwd, "bkgts,bksd->btkgd")
         + mix(p_n, v_new_btkd, "bkgts,bskd->btkgd"))
  return out.reshape(b, t, h, d)


def _joint_softmax(s_c, m_c, s_n, m_n, *, axis):
  """Softmax over the union of two score blocks along `axis` (one max, one normaliser)
  -> their probabilities, 0 where masked (a row that sees no key gets all zeros)."""
  top = jax.lax.stop_gradient(jnp.maximum(jnp.max(s_c, axis=axis, keepdims=True),
                                          jnp.max(s_n, axis=axis, keepdims=True)))
  e_c, e_n = jnp.exp(s_c - top), jnp.exp(s_n - top)
  denom = jnp.sum(e_c, axis=axis, keepdims=True) + jnp.sum(e_n, axis=axis, keepdims=True)
  return jnp.where(m_c, e_c / denom, 0.0), jnp.where(m_n, e_n / denom, 0.0)


def _attend_one(qg_b1kgd, plan, k_cache_bkdw, v_cache_bkwd, k_new_b1kd, v_new_b1kd, scale):
  """`attend` of one query per row (a decode step) -> [B, 1, K, G, Dh], in float32.

  Over the cache: scores and value mix are matmuls batched over (B, K), read from the
  heads-major cache in place (the [B, W, K, Dh] layout this replaced needed either a copy
  of every layer's cache per token or products-and-sums that ran at a fraction of the
  matmul rate; keys [Dh, W]: no transpose of the key buffer per read; issue #14). The
  chunk's own key is one slot: a product and a sum."""
  f32 = jnp.float32
  q = qg_b1kgd[:, 0].astype(f32)                                  # [B, K, G, D]
  s_c = jnp.einsum("bkgd,bkdw->bkgw", q, k_cache_bkdw.astype(f32),
                   preferred_element_type=f32) / scale              # [B, K, G, W]
  m_c = plan.cache_mask                   # [B, 1, T=1, W]: broadcasts over K, G
  k_n = k_new_b1kd[:, 0].astype(f32)                                # [B, K, D]
  s_n = jnp.sum(q * k_n[:, :, None], axis=-1, keepdims=True) / scale   # [B, K, G, 1]
  m_n = plan.new_mask                     # [B, 1, 1, 1]
  s_c, s_n = jnp.where(m_c, s_c, NEG_INF), jnp.where(m_n, s_n, NEG_INF)
  p_c, p_n = _joint_softmax(s_c, m_c, s_n, m_n, axis=-1)
  out = (jnp.einsum("bkgw,bkwd->bkgd", p_c, v_cache_bkwd.astype(f32),
                    preferred_element_type=f32)
         + p_n * v_new_b1kd[:, 0].astype(f32)[:, :, None])          # [B, K, G, D]
  return out.astype(qg_b1kgd.dtype)[:, None]
