"""Train state as a pytree, created directly into its shardings.

The NNX model is split into a static `graphdef`, the trainable `params` (nnx.Param) and
the rest (`model_state`: e.g. codebook EMA statistics). Shardings come from the logical
names on the Variables through `jax.eval_shape`, so nothing is materialised unsharded.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from liveinterp.common import sharding
from liveinterp.models.variables import split_model  # re-exported: train_state.split_model


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: Any
  model_state: nnx.State


def _make_init(model_fn, tx):
  def init(key):
    model = model_fn(nnx.Rngs(params=key, default=jax.random.fold_in(key, 1)))
    _, params, rest = split_model(model)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), model_state=rest)
  return init


def abstract_state(model_fn: Callable[[nnx.Rngs], nnx.Module],
                   tx: optax.GradientTransformation, mesh: jax.sharding.Mesh, rules):
  """(graphdef, abstract state carrying shardings, shardings) — allocates nothing."""
  with sharding.use_mesh(mesh, rules):
    graphdef = split_model(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))))[0]
    abstract = jax.eval_shape(_make_init(model_fn, tx), jax.random.key(0))
    shardings = sharding.named_shardings(abstract, mesh)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return graphdef, abstract, shardings


def create_train_state(model_fn: Callable[[nnx.Rngs], nnx.Module],
                       tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                       rules, seed: int = 0):
  """(graphdef, state, state_shardings), every array born in its sharding.

  Must be called with the same mesh/rules that the step is compiled under.
  """
  graphdef, _, shardings = abstract_state(model_fn, tx, mesh, rules)
  with sharding.use_mesh(mesh, rules):
    state = jax.jit(_make_init(model_fn, tx), out_shardings=shardings)(jax.random.key(seed))
  return graphdef, state, shardings


def param_count(params: nnx.State) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
