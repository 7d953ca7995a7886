"""GAE against an independent float64 numpy loop (DESIGN.md §5)."""

import jax
import numpy as np
import pytest

from liveinterp.rl.gae import gae, group_advantages


def _reference(rewards, values, mask, gamma, lam, last_value=None):
  """Forward-indexed float64 loop over each row's valid positions."""
  b, t = rewards.shape
  adv = np.zeros((b, t))
  ret = np.zeros((b, t))
  for i in range(b):
    idx = [j for j in range(t) if mask[i, j]]
    boot = 0.0 if last_value is None else float(last_value[i])
    a_next = 0.0
    for k in reversed(range(len(idx))):
      j = idx[k]
      v_next = values[i, idx[k + 1]] if k + 1 < len(idx) else boot
      delta = rewards[i, j] + gamma * v_next - values[i, j]
      a_next = delta + gamma * lam * a_next
      adv[i, j] = a_next
      ret[i, j] = a_next + values[i, j]
  return adv, ret


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_last_value", [False, True])
def test_gae_matches_numpy_reference(seed, with_last_value):
  rng = np.random.default_rng(seed)
  b, t = 5, 13
  gamma, lam = rng.uniform(0.8, 1.0), rng.uniform(0.5, 1.0)
  rewards = rng.normal(size=(b, t))
  values = rng.normal(size=(b, t))
  mask = rng.random((b, t)) < 0.6  # holes everywhere, incl. leading/trailing
  mask[0] = False                  # a row with no valid position
  mask[1, :] = True                # a fully valid row
  last = rng.normal(size=(b,)) if with_last_value else None
  adv, ret = jax.jit(lambda r, v, m, lv: gae(r, v, m, gamma=gamma, lam=lam,
                                             last_value_b=lv))(
      rewards.astype(np.float32), values.astype(np.float32), mask.astype(np.float32),
      None if last is None else last.astype(np.float32))
  assert adv.dtype == np.float32 and ret.dtype == np.float32
  ref_adv, ref_ret = _reference(rewards, values, mask, gamma, lam, last)
  np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(adv)[~mask] == 0) and np.all(np.asarray(ret)[~mask] == 0)
  np.testing.assert_allclose(np.asarray(ret)[mask], (np.asarray(adv) + values)[mask],
                             rtol=1e-5, atol=1e-5)


def test_masked_positions_are_skipped_not_steps():
  # A hole between two tokens must not discount or read its (garbage) value/reward.
  r = np.array([[0.0, 99.0, 1.0]], np.float32)
  v = np.array([[0.5, -77.0, 0.25]], np.float32)
  m = np.array([[1, 0, 1]], np.float32)
  adv, ret = gae(r, v, m, gamma=0.9, lam=0.5)
  a2 = 1.0 - 0.25
  a0 = (0.0 + 0.9 * 0.25 - 0.5) + 0.9 * 0.5 * a2
  np.testing.assert_allclose(adv, [[a0, 0.0, a2]], rtol=1e-6)
  np.testing.assert_allclose(ret, [[a0 + 0.5, 0.0, 1.0]], rtol=1e-6)


def test_gamma_lambda_one_is_reward_to_go():
  rng = np.random.default_rng(7)
  b, t = 4, 9
  rewards = rng.normal(size=(b, t)).astype(np.float32)
  values = rng.normal(size=(b, t)).astype(np.float32)
  mask = rng.random((b, t)) < 0.7
  last = rng.normal(size=(b,)).astype(np.float32)
  _, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0, last_value_b=last)
  r = np.where(mask, rewards, 0.0).astype(np.float64)
  to_go = np.cumsum(r[:, ::-1], axis=1)[:, ::-1] + last[:, None]
  np.testing.assert_allclose(np.asarray(ret)[mask], to_go[mask], rtol=1e-5, atol=1e-5)


def _group_reference(rewards, mask, turn_end, g):
  """Float64 loops: per row the reward-to-go R_t over valid positions and G_k from the
  start of turn k; advantage = R_t minus the mean G_k of the group's other rows."""
  b, t = rewards.shape
  r = np.where(mask > 0, rewards, 0.0).astype(np.float64)
  turn = np.zeros((b, t), int)
  for i in range(b):
    k = 0
    for j in range(t):
      turn[i, j] = k
      k += int(turn_end[i, j])
  rtg = np.array([[r[i, j:].sum() for j in range(t)] for i in range(b)])
  gk = np.array([[r[i][turn[i] >= k].sum() for k in range(t)] for i in range(b)])
  adv = np.zeros((b, t))
  for i in range(b):
    mates = [j for j in range(i // g * g, i // g * g + g) if j != i]
    for j in range(t):
      if mask[i, j]:
        adv[i, j] = rtg[i, j] - np.mean([gk[m, turn[i, j]] for m in mates])
  return adv, np.where(mask > 0, rtg, 0.0)


@pytest.mark.parametrize("seed,g", [(0, 2), (1, 3), (2, 4)])
def test_group_advantages_match_numpy_reference(seed, g):
  rng = np.random.default_rng(seed)
  b, t = 3 * g, 17
  mask = (rng.random((b, t)) < 0.7).astype(np.float32)
  turn_end = ((rng.random((b, t)) < 0.25) & (mask > 0)).astype(np.int32)
  rewards = rng.normal(size=(b, t)).astype(np.float32)
  adv, ret = jax.jit(group_advantages, static_argnums=3)(rewards, mask, turn_end, g)
  ref_adv, ref_ret = _group_reference(rewards, mask, turn_end, g)
  np.testing.assert_allclose(np.asarray(adv), ref_adv, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ret), ref_ret, atol=1e-5)


def test_group_baseline_by_hand_and_identical_samples_get_nothing():
  # Two samples of one utterance, two turns each (ends at positions 1 and 3): rewards
  # at the turn ends. Row 0 earns 1 then 2, row 1 earns 0 then 4.
  mask = np.ones((2, 4), np.float32)
  end = np.array([[0, 1, 0, 1], [0, 1, 0, 1]], np.int32)
  rew = np.array([[0, 1, 0, 2], [0, 0, 0, 4]], np.float32)
  adv, ret = group_advantages(rew, mask, end, 2)
  # turn 0: row 0 returns 3 vs row 1's 4 -> -1; turn 1: row 0's 2 vs 4 -> -2 (and +1, +2)
  np.testing.assert_allclose(np.asarray(adv), [[-1, -1, -2, -2], [1, 1, 2, 2]])
  np.testing.assert_allclose(np.asarray(ret), [[3, 3, 2, 2], [4, 4, 4, 4]])
  same = np.array([[0, 1, 0, 2], [0, 1, 0, 2]], np.float32)
  np.testing.assert_allclose(np.asarray(group_advantages(same, mask, end, 2)[0]), 0.0)
  with pytest.raises(ValueError, match="group_size=3"):
    group_advantages(rew, mask, end, 3)


def test_within_group_share():
  from liveinterp.rl.trainer import within_group_share
  # Two utterances, easy (10, 10.5) and hard (0, 0.5): nearly all spread is between.
  x = np.array([10.0, 10.5, 0.0, 0.5])
  assert within_group_share(x, 2) == pytest.approx(0.0625 / x.var())
  assert within_group_share(x, 1) == 1.0 and within_group_share(np.ones(4), 2) == 1.0
