"""GAE against an independent float64 numpy loop (DESIGN.md §5)."""

import jax
import numpy as np
import pytest

from liveinterp.rl.gae import gae


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
