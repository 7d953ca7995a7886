"""Dense layers over named axes: kernels carry logical names, compute dtype is a switch."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.layers import initializers as inits


class Dense(nnx.Module):
  """y = x @ W (+ b) contracting the last `len(in_features)` axes of x.

  `in_features`/`out_features` may be ints or tuples (e.g. out=(heads, head_dim)), and
  `kernel_axes` names every kernel axis (in axes first, then out axes).
  """

  def __init__(self, in_features: int | Sequence[int], out_features: int | Sequence[int],
               *, kernel_axes: Sequence[str | None], use_bias: bool = False,
               dtype="float32", param_dtype="float32", init_scale: float = 1.0,
               rngs: nnx.Rngs):
    self.in_features = (in_features,) if isinstance(in_features, int) else tuple(in_features)
    self.out_features = (out_features,) if isinstance(out_features, int) else tuple(out_features)
    n_in = len(self.in_features)
    shape = self.in_features + self.out_features
    self.kernel = inits.param(
        rngs, inits.fan_in_normal(init_scale, tuple(range(n_in))), shape, kernel_axes,
        param_dtype)
    self.bias = (inits.param(rngs, inits.zeros, self.out_features, kernel_axes[n_in:],
                             param_dtype) if use_bias else None)
    self.dtype = inits.as_dtype(dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    n_in = len(self.in_features)
    if x.shape[-n_in:] != self.in_features:
      raise ValueError(f"Dense expects trailing dims {self.in_features}, got {x.shape}")
    kernel = self.kernel[...].astype(self.dtype)
    x_axes = tuple(range(x.ndim - n_in, x.ndim))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel,
                            ((x_axes, tuple(range(n_in))), ((), ())))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y

  @property
  def flops_per_example(self) -> int:
    """Multiply-adds x2 of one application (per leading position)."""
    return 2 * math.prod(self.in_features) * math.prod(self.out_features)
