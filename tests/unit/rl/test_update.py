"""The RL update on the real S2ST model and a real rollout: sharded == unsharded, value
warm-up moves only the value head, and a PPO step raises the log-probability of tokens
with positive advantage relative to those with negative advantage."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from liveinterp.common import mesh as mesh_lib, sharding
from liveinterp.models import s2st
from liveinterp.rl import gae, ppo, rollout, trainer
from tests.conftest import skip_if_not_enough_devices


def _host_batch(ro, seed=0):
  """The rollout batch plus random turn rewards on each turn's last token."""
  rng = np.random.default_rng(seed)
  b = dict(ro.batch)
  b["turn_rewards"] = (b["turn_end"] * rng.normal(size=b["turn_end"].shape)).astype(np.float32)
  return b


def _setup(micro_rollout, mesh_kw, iters=2, policy_coef=1.0, value_only=False):
  """Runs `iters` updates on one mesh; returns (params, metrics list, graphdef, score)."""
  cfg, tok, model, decoder, rs, recs, ro = micro_rollout
  c = cfg.copy_and_resolve_references()
  for k in ("ici_data", "ici_fsdp", "ici_tensor"):
    c.mesh[k] = mesh_kw.get(k, 1)
  c.rl.ppo_minibatches = 2
  c.rl.ppo_epochs = 1  # two minibatch steps per update: the scans run, compiles stay small
  n = int(np.prod(list(mesh_kw.values()))) if mesh_kw else 1
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:n])
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optax.adam(1e-3)
  graphdef, abstract, shard = trainer.abstract_state(
      lambda r: s2st.S2ST(c, rngs=r), tx, mesh, rules)
  _, params, rest = nnx.split(model, nnx.Param, ...)
  # Copies: the update donates its state, and the model is the session fixture that
  # test_rollout also reads (an aliased buffer updated in place would change its policy).
  params, rest = jax.tree.map(jnp.copy, (params, rest))
  state = trainer.initial_state(params, rest, tx, 0.1, shard, mesh, rules)
  grammar = decoder.spec.grammar
  score = jax.jit(lambda p, r, b: rollout.sequence_log_probs(
      nnx.merge(graphdef, p, r), b, grammar, 1.0, c.rl.speech_action))
  update = trainer.jit_update(trainer.make_update(graphdef, grammar, tx, c), shard)
  from data_pipelines import pipelines
  mask = (trainer.value_only_mask(abstract.params) if value_only
          else jax.tree.map(lambda x: jnp.ones(x.shape, jnp.float32), abstract.params))
  metrics = []
  with sharding.use_mesh(mesh, rules):
    batch = pipelines.make_global_batch(_host_batch(ro), mesh, rules)
    for i in range(iters):
      old_logp, old_values, _ = score(state.params, state.model_state, batch)
      # a reference that differs a little from the policy: KL and β are exercised
      ref = old_logp - 0.05 * batch["gen_mask"]
      full = dict(batch, old_logp=old_logp, old_values=old_values, ref_logp=ref,
                  kl_exact=0.05 * batch["gen_mask"])
      state, m = update(state, full, jax.random.key(i), jnp.float32(policy_coef), mask)
      metrics.append(jax.device_get(m))
  return state, metrics, graphdef, score, batch


@skip_if_not_enough_devices(8)
def test_sharded_update_equals_unsharded(micro_rollout):
  s1, m1, *_ = _setup(micro_rollout, {}, iters=1)
  s8, m8, *_ = _setup(micro_rollout, {"ici_data": 2, "ici_fsdp": 2, "ici_tensor": 2}, iters=1)
  # really sharded: some parameter is split over devices
  shards = [len({d for d in x.sharding.device_set}) for x in jax.tree.leaves(s8.params)]
  assert max(shards) == 8
  for a, b in zip(jax.tree.leaves(jax.device_get(s1.params)),
                  jax.tree.leaves(jax.device_get(s8.params))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(float(s1.log_beta), float(s8.log_beta), rtol=1e-5)
  for a, b in zip(m1, m8):
    for k in ("rl/loss", "rl/policy_loss", "rl/value_loss", "rl/kl", "rl/entropy"):
      np.testing.assert_allclose(a[k], b[k], rtol=2e-3, atol=1e-5, err_msg=k)
  # the controller moved β: KL (0.05 per token) is above the 0.02 target
  assert float(s1.log_beta) > np.log(0.1)
  assert all(m["rl/skipped"] == 0 for m in m1)


def test_value_warmup_moves_only_the_value_head(micro_rollout):
  cfg, tok, model, *_ = micro_rollout
  before = jax.device_get(nnx.split(model, nnx.Param, ...)[1])
  s, m, *_ = _setup(micro_rollout, {}, iters=1, policy_coef=0.0, value_only=True)
  after = jax.device_get(s.params)
  moved, frozen = [], []
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(before),
                          jax.tree.leaves(after)):
    name = jax.tree_util.keystr(path)
    head = "value_head" in name or "value_norm" in name
    (moved if head else frozen).append(not np.array_equal(a, b))
  assert moved and all(moved)            # value_norm and value_head changed
  assert frozen and not any(frozen)      # nothing else did, bit for bit
  assert m[0]["rl/value_loss"] > 0
  assert float(s.log_beta) == pytest.approx(np.log(0.1))  # the controller holds still
  assert float(s.kl_armed) == 0.0 and m[0]["rl/kl_armed"] == 0.0   # and is not armed


def test_ppo_step_favours_tokens_with_positive_advantage(micro_rollout):
  cfg, tok, model, decoder, rs, recs, ro = micro_rollout
  s0, _, graphdef, score, batch = _setup(micro_rollout, {}, iters=0)
  s1, m, _, _, _ = _setup(micro_rollout, {}, iters=1)
  lp0, v0, _ = jax.device_get(score(s0.params, s0.model_state, batch))
  lp1, _, _ = jax.device_get(score(s1.params, s1.model_state, batch))
  assert cfg.rl.speech_action == "stop"
  # The advantages the update used (same formula as trainer.make_update, β = 0.1).
  mask = np.asarray(trainer.policy_mask(batch, decoder.layout.speech_offset,
                                        cfg.rl.speech_action))
  assert mask.sum() == np.asarray(batch["gen_mask"]).sum()   # "stop": every token acts
  rew = np.asarray(batch["turn_rewards"]) * mask - 0.1 * 0.05 * mask
  adv, _ = gae.gae(jnp.asarray(rew), jnp.asarray(v0), jnp.asarray(mask), gamma=1.0, lam=0.95)
  adv = np.asarray(ppo.whiten(adv, jnp.asarray(mask)))
  gen = mask > 0
  d = (lp1 - lp0)[gen]
  a = adv[gen]
  assert d[a > 0.5].mean() > d[a < -0.5].mean() + 1e-3
  assert m[0]["rl/approx_kl"] >= 0
  # KL 0.05 >= kl_arm_fraction x kl_target: the controller armed (and β rose)
  assert float(s1.kl_armed) == 1.0 and m[0]["rl/kl_armed"] == 1.0
  assert float(s1.log_beta) > np.log(0.1)


def test_value_warmup_extends_while_the_value_head_explains_little(micro_rollout):
  """`in_value_warmup`: the first rl.value_warmup iterations always; then, within
  rl.value_warmup_max more, the iterations whose rollout the value head explains below
  rl.value_warmup_ev; never past that window. `value_explained_variance` is the update's
  own explained variance of old values against its returns."""
  import ml_collections
  r = ml_collections.ConfigDict(dict(value_warmup=2, value_warmup_max=3,
                                     value_warmup_ev=0.0))
  assert trainer.in_value_warmup(0, None, r) and trainer.in_value_warmup(1, 5.0, r)
  assert trainer.in_value_warmup(2, -3.0, r) and trainer.in_value_warmup(4, -0.1, r)
  assert not trainer.in_value_warmup(3, 0.2, r)        # explained well enough: PPO
  assert not trainer.in_value_warmup(5, -9.0, r)       # the window is over
  assert not trainer.in_value_warmup(2, None, r)       # not measured: no extension
  r.value_warmup_max = 0
  assert not trainer.in_value_warmup(2, -9.0, r)       # off: exactly value_warmup
  r.advantage = "group"                                # the baseline is not the head
  assert not trainer.in_value_warmup(0, None, r)
  cfg, tok, model, decoder, rs, recs, ro = micro_rollout
  s0, _, _, score, batch = _setup(micro_rollout, {}, iters=0)
  logp, values, _ = score(s0.params, s0.model_state, batch)
  full = dict(batch, old_logp=logp, old_values=values, ref_logp=logp - 0.05)
  ev = float(jax.jit(lambda b, lb: trainer.value_explained_variance(
      b, lb, decoder.layout.speech_offset, cfg))(full, s0.log_beta))
  mask = trainer.policy_mask(full, decoder.layout.speech_offset, cfg.rl.speech_action)
  kl = 0.05 * mask * np.exp(float(s0.log_beta))
  _, ret = trainer.advantages(full, mask, kl, cfg)
  assert ev == pytest.approx(float(ppo.explained_variance(values, ret, mask)), abs=1e-5)
  assert ev < 1.0


def test_update_advantages_follow_rl_advantage(micro_rollout):
  """`trainer.advantages` (what `make_update` trains on): GAE over the old values by
  default; with rl.advantage="group" the group baseline (`gae.group_advantages`),
  whitened alike, and the values play no part."""
  cfg, tok, model, decoder, rs, recs, ro = micro_rollout
  batch = {k: jnp.asarray(v) for k, v in _host_batch(ro).items()
           if k in ("turn_rewards", "turn_end", "gen_mask")}
  batch["old_values"] = jnp.asarray(
      np.random.default_rng(1).normal(size=batch["gen_mask"].shape), jnp.float32)
  mask = batch["gen_mask"].astype(jnp.float32)
  kl = 0.01 * mask
  c = cfg.copy_and_resolve_references()
  adv, ret = trainer.advantages(batch, mask, kl, c)
  want, _ = gae.gae(batch["turn_rewards"] * mask - kl, batch["old_values"], mask,
                    gamma=float(c.rl.gamma), lam=float(c.rl.lam))
  np.testing.assert_allclose(adv, ppo.whiten(want, mask), atol=1e-5)
  c.rl.advantage, c.rl.group_size = "group", 2
  adv, ret = trainer.advantages(batch, mask, kl, c)
  want, want_ret = gae.group_advantages(batch["turn_rewards"] * mask - kl, mask,
                                        batch["turn_end"], 2)
  np.testing.assert_allclose(adv, ppo.whiten(want, mask), atol=1e-5)
  np.testing.assert_allclose(ret, want_ret, atol=1e-6)
  other = dict(batch, old_values=batch["old_values"] + 3.0)
  np.testing.assert_array_equal(trainer.advantages(other, mask, kl, c)[0], adv)


def test_controller_kls_split_text_from_speech():
  """`controller_kls`: text/control tokens (ids below the speech offset) and speech steps
  averaged apart; masked positions count in neither."""
  tokens = jnp.array([[5, 7, 120, 130, 140, 6], [9, 110, 111, 3, 0, 0]])
  mask = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], jnp.float32)
  kl = jnp.array([[0.3, 0.1, 0.0, 0.02, 0.0, 0.2], [0.2, 0.02, 0.0, 0.2, 9.0, 9.0]])
  k = trainer.controller_kls(kl, mask, tokens, speech_offset=100)
  np.testing.assert_allclose(k["kl_text"], (0.3 + 0.1 + 0.2 + 0.2 + 0.2) / 5, rtol=1e-6)
  np.testing.assert_allclose(k["kl_speech"], 0.04 / 5, rtol=1e-6)
  np.testing.assert_allclose(k["kl_all"], 1.04 / 10, rtol=1e-6)
  np.testing.assert_allclose(k["text_action_share"], 0.5)
