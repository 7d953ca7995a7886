"""Token embedding (optionally tied as the output projection) and rotary positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes
from liveinterp.layers import initializers as inits


class Embed(nnx.Module):
  def __init__(self, vocab_size: int, dim: int, *, dtype="float32", param_dtype="float32",
               rngs: nnx.Rngs):
    self.embedding = inits.param(rngs, inits.normal(1.0), (vocab_size, dim),
                                 (axes.VOCAB, axes.EMBED), param_dtype)
    self.dtype = inits.as_dtype(dtype)
    self.vocab_size = vocab_size

  def __call__(self, ids: jax.Array) -> jax.Array:
    """ids [...] int -> [..., D]."""
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    """Tied output projection: x [..., D] -> logits [..., V] (float32)."""
    emb = self.embedding[...].astype(self.dtype)
    return jnp.einsum("...d,vd->...v", x.astype(self.dtype), emb,
                      preferred_element_type=jnp.float32)


def rotary_angles(positions: jax.Array, head_dim: int, theta: float = 10000.0):
  """positions [...] -> (sin, cos) each [..., head_dim // 2] in float32."""
  half = head_dim // 2
  freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  ang = positions.astype(jnp.float32)[..., None] * freq
  return jnp.sin(ang), jnp.cos(ang)


def apply_rotary(x: jax.Array, positions: jax.Array, theta: float = 10000.0) -> jax.Array:
  """Rotary embedding on x [B, T, H, Dh] at positions [B, T] (split-half convention)."""
  sin, cos = rotary_angles(positions, x.shape[-1], theta)
  sin, cos = sin[..., None, :], cos[..., None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
