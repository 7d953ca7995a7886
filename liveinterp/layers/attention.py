"""Scaled dot-product attention core shared by the conformer and the LLM.

Grouped-query aware: q has H heads, k/v have K heads with H % K == 0. Softmax in float32.
Masks are boolean, True = may attend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          mask: jax.Array | None = None,
                          bias: jax.Array | None = None) -> jax.Array:
  """q [B, T, H, D], k/v [B, S, K, D], mask broadcastable to [B, H, T, S] -> [B, T, H, D].

  `bias` (e.g. relative-position logits) is added to the logits, broadcastable to
  [B, H, T, S]. Rows whose mask is all False return zeros (not NaN).
  """
  b, t, h, d = q.shape
  kh = k.shape[2]
  if h % kh:
    raise ValueError(f"{h} query heads are not a multiple of {kh} key/value heads")
  g = h // kh
  qg = q.reshape(b, t, kh, g, d)
  logits = jnp.einsum("btkgd,bskd->bkgts", qg, k,
                      preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(d))
  logits = logits.reshape(b, h, t, -1)
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    mask = jnp.broadcast_to(mask, logits.shape)
    logits = jnp.where(mask, logits, NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1)
  if mask is not None:
    probs = jnp.where(mask, probs, 0.0)
  probs = probs.reshape(b, kh, g, t, -1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
  return out.reshape(b, t, h, d)


def causal_mask(t: int, s: int | None = None, offset: int = 0) -> jax.Array:
  """[T, S] lower-triangular mask; query i (at absolute i+offset) sees keys <= i+offset."""
  s = t if s is None else s
  return jnp.arange(s)[None, :] <= (jnp.arange(t)[:, None] + offset)
