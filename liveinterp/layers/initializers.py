"""Parameter construction with logical axis names (the only way layers make params)."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[..., jax.Array]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def as_dtype(d) -> jnp.dtype:
  return DTYPES[d] if isinstance(d, str) else d


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int],
          logical_axes: Sequence[str | None], dtype=jnp.float32) -> nnx.Param:
  """An `nnx.Param` initialised by `init` and annotated with logical axis names.

  Under a mesh (`sharding.use_mesh`) the value is sharded as it is created; with no mesh
  (plain single-device use, notebooks) it is not, but the names are kept as metadata.
  """
  if len(logical_axes) != len(shape):
    raise ValueError(f"param: {len(logical_axes)} logical axes {tuple(logical_axes)} for "
                     f"shape {tuple(shape)}")
  value = init(rngs.params(), tuple(shape), as_dtype(dtype))
  mesh = jax.sharding.get_abstract_mesh()
  eager = nnx.using_eager_sharding() and mesh is not None and not mesh.empty
  return nnx.Param(value, out_sharding=tuple(logical_axes), eager_sharding=eager)


def fan_in_normal(scale: float = 1.0, fan_in_axes: Sequence[int] = (0,)) -> Initializer:
  """Truncated-normal init with variance scale/fan_in over the given input axes."""

  def init(key, shape, dtype):
    fan_in = 1
    for a in fan_in_axes:
      fan_in *= shape[a]
    std = (scale / max(1, fan_in)) ** 0.5
    return (jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
            * (std / 0.87962566)).astype(dtype)

  return init


zeros: Initializer = lambda key, shape, dtype: jnp.zeros(shape, dtype)
ones: Initializer = lambda key, shape, dtype: jnp.ones(shape, dtype)


def normal(std: float) -> Initializer:
  return lambda key, shape, dtype: (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)
