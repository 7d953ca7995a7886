"""The pure train step: `step(state, batch, rng) -> (state, metrics)`, one for every stage.

A stage supplies `loss_fn(model, batch, rng) -> (loss, aux_metrics)`; this module turns it
into a jitted, sharded, donated step, compiled ahead of the loop. Non-finite steps are
skipped (state unchanged) and counted in `train/skipped`: a step is non-finite when its
loss, its gradient norm, or any of the new parameters / model state it would write is
NaN or ±inf (finite gradients times a non-finite or overflowing learning rate, issue #12).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from liveinterp.common import reporting, sharding
from liveinterp.train.train_state import TrainState

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, dict]]


def make_train_step(graphdef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, prefix: str = "train"):
  """Returns the pure step function (not yet jitted)."""

  def step(state: TrainState, batch, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)

    def compute(params):
      model = nnx.merge(graphdef, params, state.model_state, copy=True)
      loss, aux = loss_fn(model, batch, rng)
      _, _, new_model_state = nnx.split(model, nnx.Param, ...)
      return loss, (aux, new_model_state)

    (loss, (aux, model_state)), grads = jax.value_and_grad(compute, has_aux=True)(
        state.params)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The new values are checked too, not only loss and gradients: a finite gradient
    # times a NaN/inf (or overflowing) learning rate would otherwise write NaN params.
    ok = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
          & all_finite(model_state))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    new_state = TrainState(step=state.step + 1, params=keep(params, state.params),
                           opt_state=keep(opt_state, state.opt_state),
                           model_state=keep(model_state, state.model_state))
    metrics = {f"{prefix}/loss": loss, f"{prefix}/grad_norm": grad_norm,
               f"{prefix}/skipped": 1 - ok.astype(jnp.int32)}
    if schedule is not None:
      metrics[f"{prefix}/lr"] = schedule(state.step)
    metrics.update({f"{prefix}/{k}": v for k, v in aux.items()})
    return new_state, metrics

  return step


def all_finite(tree) -> jax.Array:
  """True when every floating-point leaf of `tree` is finite (other leaves ignored).

  Per-leaf `all(isfinite)`, not a global norm: a norm of large but finite values can
  overflow to inf and would skip a valid step.
  """
  oks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
         if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.stack(oks).all() if oks else jnp.bool_(True)


def compile_step(step_fn, abstract_state, state_shardings, abstract_batch, mesh, rules,
                 batch_shardings=None, log_memory: bool = True):
  """jit with explicit shardings and donated state; compiled now, memory logged."""
  if batch_shardings is None:
    batch_shardings = jax.tree.map(lambda x: sharding.data_sharding(mesh, x.ndim, rules),
                                   abstract_batch)
  jitted = jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings, None),
                   out_shardings=(state_shardings, None), donate_argnums=(0,))
  with sharding.use_mesh(mesh, rules):
    compiled = jitted.lower(abstract_state, abstract_batch, jax.random.key(0)).compile()
  if log_memory:
    mem = compiled.memory_analysis()
    if mem is not None:
      reporting.log("compiled step: args %.1f MiB, outputs %.1f MiB, temps %.1f MiB "
                    "(per device)", mem.argument_size_in_bytes / 2**20,
                    mem.output_size_in_bytes / 2**20, mem.temp_size_in_bytes / 2**20)
  return compiled, batch_shardings
