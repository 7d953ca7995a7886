"""RMSNorm and LayerNorm with logical axis names; statistics always in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes
from liveinterp.layers import initializers as inits


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, *, eps: float = 1e-6, dtype="float32",
               param_dtype="float32", rngs: nnx.Rngs):
    self.scale = inits.param(rngs, inits.ones, (dim,), (axes.NORM,), param_dtype)
    self.eps = eps
    self.dtype = inits.as_dtype(dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nnx.Module):
  def __init__(self, dim: int, *, eps: float = 1e-5, dtype="float32",
               param_dtype="float32", rngs: nnx.Rngs):
    self.scale = inits.param(rngs, inits.ones, (dim,), (axes.NORM,), param_dtype)
    self.bias = inits.param(rngs, inits.zeros, (dim,), (axes.NORM,), param_dtype)
    self.eps = eps
    self.dtype = inits.as_dtype(dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)
