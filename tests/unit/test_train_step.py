"""The pure train step: sharded on a (2,2,2) mesh == unsharded; params really sharded."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import micro
from liveinterp.common import mesh as mesh_lib, sharding
from liveinterp.train import optimizer, step as step_lib, train_state
from tests.tiny_models import TinyLM, lm_loss as loss_fn


def _run(mesh_kw, steps=3):
  c = micro.get_config()
  for k, v in mesh_kw.items():
    c.mesh[k] = v
  devices = jax.devices()[: int(np.prod(list(mesh_kw.values())))] if mesh_kw else jax.devices()[:1]
  mesh = mesh_lib.create_mesh(c.mesh, devices)
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  model_fn = lambda rngs: TinyLM(64, 16, 32, rngs)
  graphdef, state, shard = train_state.create_train_state(model_fn, tx, mesh, rules, seed=1)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 64, (8, 9)).astype(np.int32)
  batch = {"inputs": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:])}
  abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  step = step_lib.make_train_step(graphdef, loss_fn, tx)
  compiled, batch_sh = step_lib.compile_step(step, abstract, shard, abstract_batch, mesh, rules)
  batch = jax.device_put(batch, batch_sh)
  losses = []
  for i in range(steps):
    state, metrics = compiled(state, batch, jax.random.key(0))
    losses.append(float(metrics["train/loss"]))
  return state, losses


def test_sharded_step_equals_unsharded_and_params_are_sharded():
  s1, l1 = _run({"ici_data": 1, "ici_fsdp": 1, "ici_tensor": 1})
  s8, l8 = _run({"ici_data": 2, "ici_fsdp": 2, "ici_tensor": 2})
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  assert l8[-1] < l8[0]
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  up = s8.params["up"]["kernel"][...]
  assert up.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert up.addressable_shards[0].data.shape == (8, 16)
  emb = s8.params["embed"]["embedding"][...]
  assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  mu = s8.opt_state[1][0].mu["up"]["kernel"][...]
  assert mu.sharding.spec == up.sharding.spec  # optimizer state follows the params


def test_nonfinite_step_is_skipped():
  c = micro.get_config()
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  graphdef, state, shard = train_state.create_train_state(
      lambda r: TinyLM(16, 8, 8, r), tx, mesh, rules)

  def bad_loss(model, batch, rng):
    loss, aux = loss_fn(model, batch, rng)
    return loss * batch["scale"], aux

  step = jax.jit(step_lib.make_train_step(graphdef, bad_loss, tx))
  ids = jnp.zeros((2, 4), jnp.int32)
  before = jax.tree.map(np.asarray, state.params)
  state, m = step(state, {"inputs": ids, "targets": ids, "scale": jnp.float32(jnp.nan)},
                  jax.random.key(0))
  assert int(m["train/skipped"]) == 1 and int(state.step) == 1
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_step_with_nonfinite_new_params_is_skipped():
  """Finite loss and gradients but a NaN learning rate: the new parameters would be
  non-finite, so the step is skipped (params and optimizer state unchanged) — before
  issue #12 only loss and gradient norm were checked and NaN params were written."""
  c = micro.get_config()
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.logical_axis_rules)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 16, (2, 5)), jnp.int32)
  batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
  c.train.learning_rate = float("nan")  # validate() rejects it now; the step must cope
  c.train.warmup_steps = 0
  tx = optimizer.make_optimizer(c.train)
  graphdef, state, _ = train_state.create_train_state(
      lambda r: TinyLM(16, 8, 8, r), tx, mesh, rules)
  before = jax.tree.map(np.asarray, (state.params, state.opt_state))
  step = jax.jit(step_lib.make_train_step(graphdef, loss_fn, tx))
  state, m = step(state, batch, jax.random.key(0))
  assert np.isfinite(float(m["train/loss"])) and np.isfinite(float(m["train/grad_norm"]))
  assert int(m["train/skipped"]) == 1 and int(state.step) == 1
  after = jax.tree.map(np.asarray, (state.params, state.opt_state))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
