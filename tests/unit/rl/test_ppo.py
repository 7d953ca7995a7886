"""PPO losses against hand-computed values, the config, and the update on toy tasks."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from liveinterp.rl import ppo
from liveinterp.rl.gae import gae
from liveinterp.rl.ppo import (PPOConfig, entropy_of, explained_variance, make_update,
                               policy_loss, value_loss, whiten)


# --------------------------------------------------------------------------- losses

def test_policy_loss_hand_computed():
  # ratios: 1.5 (above 1+ε), 0.5 (below 1−ε), 1.1 (inside), 2.0 masked out.
  ratio = np.array([[1.5, 0.5, 1.1, 2.0]], np.float32)
  old = np.array([[-1.0, -2.0, -0.5, -0.3]], np.float32)
  logp = old + np.log(ratio)
  mask = np.array([[1, 1, 1, 0]], np.float32)
  eps = 0.2
  # A>0: above -> clipped (-1.2 A); below -> unclipped min(r, clip) = r (-0.5 A)
  loss, aux = policy_loss(logp, old, np.array([[1.0, 1.0, 1.0, 5.0]], np.float32), mask, eps)
  np.testing.assert_allclose(loss, (-1.2 - 0.5 - 1.1) / 3, rtol=1e-5)
  # A<0: above -> unclipped (1.5 |A|); below -> clipped (0.8 |A|)
  loss, aux = policy_loss(logp, old, np.array([[-2.0, -2.0, -2.0, 5.0]], np.float32), mask,
                          eps)
  np.testing.assert_allclose(loss, (2 * 1.5 + 2 * 0.8 + 2 * 1.1) / 3, rtol=1e-5)
  np.testing.assert_allclose(aux["clip_fraction"], 2 / 3, rtol=1e-6)
  k3 = (ratio - 1) - np.log(ratio)
  np.testing.assert_allclose(aux["approx_kl"], k3[0, :3].mean(), rtol=1e-5)


def test_policy_loss_ignores_inf_at_masked_positions():
  logp = np.array([[-1.0, -np.inf]], np.float32)
  loss, aux = policy_loss(logp, np.array([[-1.0, -1.0]], np.float32),
                          np.array([[1.0, 1.0]], np.float32), np.array([[1, 0]]), 0.2)
  assert float(loss) == -1.0 and float(aux["approx_kl"]) == 0.0


def test_value_loss_hand_computed():
  v = np.array([[1.0, 0.0, 0.5, 9.0]], np.float32)
  old = np.array([[0.0, 0.0, 0.4, 0.0]], np.float32)
  ret = np.array([[2.0, 1.0, 0.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1, 0]], np.float32)
  # 1: unclipped 1, clipped v=0.2 -> 3.24 -> 3.24; 2: both 1; 3: unclipped 0.25, clipped
  # v=0.5 (inside) -> 0.25.
  np.testing.assert_allclose(value_loss(v, old, ret, mask, 0.2),
                             0.5 * (3.24 + 1.0 + 0.25) / 3, rtol=1e-5)
  # clipped value closer to the return: max keeps the unclipped error.
  np.testing.assert_allclose(value_loss(np.float32([[3.0]]), np.float32([[0.0]]),
                                        np.float32([[1.0]]), np.ones((1, 1)), 0.5),
                             0.5 * 4.0, rtol=1e-6)
  np.testing.assert_allclose(value_loss(v, old, ret, mask, 0.0),
                             0.5 * (1.0 + 1.0 + 0.25) / 3, rtol=1e-5)


def test_whiten_hand_computed():
  x = np.array([[1.0, 2.0, 100.0], [3.0, -50.0, 4.0]], np.float32)
  mask = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
  # valid 1, 2, 3, 4: mean 2.5, population variance 1.25
  want = np.array([[-1.5, -0.5, 0.0], [0.5, 0.0, 1.5]]) / np.sqrt(1.25)
  out = whiten(x, mask)
  np.testing.assert_allclose(out, want, rtol=1e-5)
  valid = mask > 0
  assert abs(float(np.asarray(out)[valid].mean())) < 1e-6
  np.testing.assert_allclose(np.asarray(out)[valid].std(), 1.0, rtol=1e-5)


def test_entropy_of_hand_computed_with_masked_vocab():
  p = np.array([0.5, 0.25, 0.25, 0.0])
  with np.errstate(divide="ignore"):
    logp = np.log(p).astype(np.float32)[None, None]  # [1, 1, 4] with a -inf entry
  ent = entropy_of(jnp.asarray(logp))
  np.testing.assert_allclose(ent, [[1.5 * np.log(2)]], rtol=1e-6)
  uniform = jax.nn.log_softmax(jnp.zeros((2, 3, 7)))
  np.testing.assert_allclose(entropy_of(uniform), np.full((2, 3), np.log(7)), rtol=1e-6)
  # the gradient through a masked vocabulary is finite
  logits = jnp.array([0.0, 1.0, -jnp.inf])
  g = jax.grad(lambda z: entropy_of(jax.nn.log_softmax(z)))(logits)
  assert np.all(np.isfinite(np.asarray(g)[:2]))


def test_explained_variance_hand_computed():
  ret = np.array([[1.0, 2.0, 3.0, 4.0, 77.0]], np.float32)
  mask = np.array([[1, 1, 1, 1, 0]], np.float32)
  np.testing.assert_allclose(explained_variance(ret, ret, mask), 1.0)
  np.testing.assert_allclose(explained_variance(np.full_like(ret, 2.5), ret, mask), 0.0,
                             atol=1e-6)
  v = np.array([[1.5, 2.0, 3.0, 3.5, 0.0]], np.float32)  # errors -.5 0 0 .5: var 0.125
  np.testing.assert_allclose(explained_variance(v, ret, mask), 1 - 0.125 / 1.25, rtol=1e-5)
  assert float(explained_variance(v, np.ones_like(ret), mask)) == 0.0  # Var(R) = 0


# --------------------------------------------------------------------------- config

def test_ppo_config_from_config_and_validation():
  cfg = ml_collections.ConfigDict({"rl": {
      "clip_eps": 0.1, "value_clip": 0.0, "value_coef": 1.0, "entropy_coef": 0.01,
      "ppo_epochs": 4, "ppo_minibatches": 8}})
  pc = PPOConfig.from_config(cfg)
  assert pc == PPOConfig(clip_eps=0.1, value_clip=0.0, value_coef=1.0,
                         entropy_coef=0.01, epochs=4, minibatches=8)
  assert PPOConfig.from_config(ml_collections.ConfigDict({"rl": {}})) == PPOConfig()
  for name, bad in [("ppo_epochs", 0), ("ppo_minibatches", 1.5), ("clip_eps", 0.0),
                    ("clip_eps", float("nan")), ("value_coef", -1.0),
                    ("entropy_coef", "x")]:
    cfg = ml_collections.ConfigDict({"rl": {name: bad}})
    with pytest.raises(ValueError, match=f"rl.{name}"):
      PPOConfig.from_config(cfg)
  with pytest.raises(ValueError, match="epochs"):
    PPOConfig(epochs=0)


# --------------------------------------------------------------------------- update

def _bandit_apply(params, mb):
  logp_all = jax.nn.log_softmax(params["logits"])           # [K]
  logp = logp_all[mb["actions"]]                             # [B, 1]
  values = jnp.broadcast_to(params["value"], logp.shape)
  entropy = jnp.broadcast_to(entropy_of(logp_all), logp.shape)
  return logp, values, entropy


def _bandit_batch(params, key, rewards, b):
  actions = jax.random.categorical(key, params["logits"], shape=(b, 1))
  r = rewards[actions]
  ones = jnp.ones((b, 1), jnp.float32)
  old_logp, old_values, _ = _bandit_apply(params, {"actions": actions})
  return {"actions": actions, "mask": ones, "old_logp": old_logp,
          "old_values": old_values, "advantages": r - r.mean(), "returns": r}


@functools.lru_cache(maxsize=None)
def _bandit_update():
  """One jitted update shared by the tests below (compiles once per batch shape)."""
  tx = optax.adam(0.05)
  return tx, jax.jit(make_update(_bandit_apply, tx, PPOConfig(epochs=2, minibatches=2)))


def test_ppo_solves_bandit():
  rewards = jnp.array([0.1, 0.3, 0.5, 0.7, 1.0])
  params = {"logits": jnp.zeros(5), "value": jnp.zeros(())}
  tx, update = _bandit_update()
  opt_state = tx.init(params)
  expected = lambda p: float(jax.nn.softmax(p["logits"]) @ rewards)
  start = expected(params)
  sample = jax.jit(_bandit_batch, static_argnums=3)
  key = jax.random.PRNGKey(0)
  for _ in range(60):
    key, k_sample, k_update = jax.random.split(key, 3)
    batch = sample(params, k_sample, rewards, 64)
    params, opt_state, metrics = update(params, opt_state, batch, k_update)
  assert start < 0.6
  assert expected(params) >= 0.95 * 1.0, expected(params)
  assert float(metrics["skipped"]) == 0
  assert set(metrics) == set(ppo.METRICS) | {"skipped"}
  assert all(m.dtype == jnp.float32 and m.shape == () for m in metrics.values())


# Two-step task, T = 4 positions: [prompt (masked), a1, hole (masked), a2].
# State of a1 is 0; state of a2 is 1 + a1. Reward R[a1, a2] at a2's position.
# Greedy in a1 under the initial uniform a2 policy prefers a1 = 0 (0.6 > 0.5); the optimum
# a1 = 1, a2 = 1 (1.0) needs the learned values to propagate through GAE.
_R = jnp.array([[0.6, 0.6], [0.0, 1.0]])
_MASK = jnp.array([0.0, 1.0, 0.0, 1.0])


def _seq_apply(params, mb):
  logp_all = jax.nn.log_softmax(params["pi"][mb["states"]])              # [B, T, 2]
  logp = jnp.take_along_axis(logp_all, mb["actions"][..., None], -1)[..., 0]
  values = params["v"][mb["states"]]
  return logp, values, entropy_of(logp_all)


def _seq_batch(params, key, b):
  k1, k2 = jax.random.split(key)
  a1 = jax.random.categorical(k1, params["pi"][0], shape=(b,))
  a2 = jax.random.categorical(k2, params["pi"][1 + a1])
  zeros = jnp.zeros((b,), jnp.int32)
  states = jnp.stack([zeros, zeros, zeros, 1 + a1], axis=1)
  actions = jnp.stack([zeros, a1, zeros, a2], axis=1)
  mask = jnp.broadcast_to(_MASK, (b, 4))
  rewards = jnp.zeros((b, 4)).at[:, 3].set(_R[a1, a2]).at[:, 0].set(5.0)  # masked: ignored
  batch = {"states": states, "actions": actions, "mask": mask}
  old_logp, old_values, _ = _seq_apply(params, batch)
  adv, ret = gae(rewards, old_values, mask, gamma=1.0, lam=0.95)
  return dict(batch, old_logp=old_logp, old_values=old_values,
              advantages=whiten(adv, mask), returns=ret)


def test_ppo_solves_two_step_sequence_with_gae():
  params = {"pi": jnp.zeros((3, 2)), "v": jnp.zeros(3)}
  tx = optax.adam(0.05)
  opt_state = tx.init(params)
  update = jax.jit(make_update(_seq_apply, tx, PPOConfig(epochs=2, minibatches=2)))

  def expected(p):
    p1 = jax.nn.softmax(p["pi"][0])
    p2 = jax.nn.softmax(p["pi"][1:], axis=-1)
    return float(jnp.sum(p1[:, None] * p2 * _R))

  sample = jax.jit(_seq_batch, static_argnums=2)
  key = jax.random.PRNGKey(1)
  for _ in range(100):
    key, k_sample, k_update = jax.random.split(key, 3)
    batch = sample(params, k_sample, 64)
    params, opt_state, metrics = update(params, opt_state, batch, k_update)
  assert expected(params) >= 0.95, expected(params)
  assert float(jax.nn.softmax(params["pi"][0])[1]) > 0.9
  np.testing.assert_allclose(params["v"][2], 1.0, atol=0.1)
  assert float(metrics["skipped"]) == 0


def test_single_step_equals_manual_optax_step():
  # epochs = minibatches = 1: the update is one optimizer step on the documented loss.
  pc = PPOConfig(clip_eps=0.2, value_clip=0.1, value_coef=0.7, entropy_coef=0.03,
                 epochs=1, minibatches=1)
  params = {"logits": jnp.array([0.3, -0.2, 0.1, 0.0, 0.5]), "value": jnp.array(0.2)}
  batch = _bandit_batch(params, jax.random.PRNGKey(3), jnp.arange(5.0), 16)
  # move the params so that ratios and the value clip are active
  params = {"logits": params["logits"] * 3.0, "value": jnp.array(1.5)}
  tx = optax.sgd(0.1)

  def loss(p):
    logp, v, ent = _bandit_apply(p, batch)
    m = batch["mask"]
    pl, _ = policy_loss(logp, batch["old_logp"], batch["advantages"], m, pc.clip_eps)
    vl = value_loss(v, batch["old_values"], batch["returns"], m, pc.value_clip)
    return 0.4 * pl + pc.value_coef * vl - pc.entropy_coef * jnp.mean(ent)

  g = jax.jit(jax.grad(loss))(params)
  want = optax.apply_updates(params, tx.update(g, tx.init(params), params)[0])
  got, _, metrics = jax.jit(make_update(_bandit_apply, tx, pc))(
      params, tx.init(params), batch, jax.random.PRNGKey(0), policy_coef=0.4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               got, want)
  np.testing.assert_allclose(metrics["loss"], loss(params), rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], optax.global_norm(g), rtol=1e-5)


def test_value_only_warmup_with_grad_mask_freezes_policy():
  params = {"logits": jnp.array([0.3, -0.2, 0.1, 0.0, 0.5]), "value": jnp.zeros(())}
  batch = _bandit_batch(params, jax.random.PRNGKey(4), jnp.arange(5.0), 8)
  # weight decay and an entropy bonus would move the policy without the mask
  tx = optax.adamw(0.1, weight_decay=0.5)
  pc = PPOConfig(entropy_coef=0.1)
  update = jax.jit(make_update(_bandit_apply, tx, pc))
  grad_mask = {"logits": jnp.zeros(5), "value": jnp.ones(())}
  new, _, metrics = update(params, tx.init(params), batch, jax.random.PRNGKey(0),
                           policy_coef=0.0, grad_mask=grad_mask)
  np.testing.assert_array_equal(new["logits"], params["logits"])
  assert float(new["value"]) != 0.0
  assert float(metrics["skipped"]) == 0
  # control: without the mask the same call moves the policy
  moved, _, _ = update(params, tx.init(params), batch, jax.random.PRNGKey(0),
                       policy_coef=0.0)
  assert not np.array_equal(moved["logits"], params["logits"])


def test_nan_advantages_are_skipped_and_counted():
  params = {"logits": jnp.zeros(5), "value": jnp.zeros(())}
  batch = _bandit_batch(params, jax.random.PRNGKey(5), jnp.arange(5.0), 64)
  tx, update = _bandit_update()  # epochs = minibatches = 2
  opt_state = tx.init(params)
  bad = dict(batch, advantages=batch["advantages"].at[0, 0].set(jnp.nan))
  new, new_opt, metrics = update(params, opt_state, bad, jax.random.PRNGKey(0))
  # the NaN row lands in one minibatch per epoch: 2 of the 4 steps are skipped
  assert float(metrics["skipped"]) == 2.0
  assert np.all(np.isfinite(np.asarray(new["logits"])))
  assert np.isfinite(float(metrics["loss"]))  # means over the applied steps
  all_bad = dict(batch, advantages=jnp.full_like(batch["advantages"], jnp.nan))
  new, new_opt, metrics = update(params, opt_state, all_bad, jax.random.PRNGKey(0))
  assert float(metrics["skipped"]) == 4.0
  jax.tree.map(np.testing.assert_array_equal, new, params)
  jax.tree.map(np.testing.assert_array_equal, new_opt, opt_state)
  _, _, metrics = update(params, opt_state, batch, jax.random.PRNGKey(0))
  assert float(metrics["skipped"]) == 0.0


def test_batch_not_divisible_by_minibatches():
  params = {"logits": jnp.zeros(5), "value": jnp.zeros(())}
  batch = _bandit_batch(params, jax.random.PRNGKey(6), jnp.arange(5.0), 6)
  update = make_update(_bandit_apply, optax.sgd(0.1), PPOConfig(minibatches=4))
  with pytest.raises(ValueError, match="divisible"):
    update(params, optax.sgd(0.1).init(params), batch, jax.random.PRNGKey(0))
