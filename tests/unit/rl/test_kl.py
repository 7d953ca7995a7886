"""Per-token KL and the adaptive-β controller in log space (DESIGN.md §5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from liveinterp.rl.kl import mean_kl, token_kl, update_log_beta


def test_token_and_mean_kl():
  logp = np.array([[-1.0, -2.0, -np.inf], [-0.5, -0.1, -3.0]], np.float32)
  ref = np.array([[-1.5, -1.0, -2.0], [-0.5, -0.6, -np.inf]], np.float32)
  mask = np.array([[1, 1, 0], [1, 1, 0]], np.float32)
  np.testing.assert_allclose(token_kl(logp, ref, mask), [[0.5, -1.0, 0.0], [0.0, 0.5, 0.0]])
  np.testing.assert_allclose(mean_kl(logp, ref, mask), 0.0)
  np.testing.assert_allclose(mean_kl(logp, ref, np.array([[1, 0, 0], [0, 1, 0]])), 0.5)
  assert float(mean_kl(logp, ref, np.zeros_like(mask))) == 0.0


def test_update_log_beta_step_and_clip():
  lb = jnp.float32(np.log(0.1))
  out = update_log_beta(lb, 0.11, target=0.1, kp=0.5)  # error 0.1, inside the clip
  np.testing.assert_allclose(out, np.log(0.1) + 0.05, rtol=1e-6)
  out = update_log_beta(lb, 10.0, target=0.1, kp=0.5)  # error 99 -> 0.2
  np.testing.assert_allclose(out, np.log(0.1) + 0.1, rtol=1e-6)
  out = update_log_beta(lb, 0.0, target=0.1, kp=0.5)   # error -1 -> -0.2
  np.testing.assert_allclose(out, np.log(0.1) - 0.1, rtol=1e-6)
  assert out.dtype == jnp.float32 and out.shape == ()


def test_controller_converges_on_responsive_system():
  # Observed KL falls as β rises: kl = c / β. Fixed point β* = c / target.
  c, target, kp = 0.3, 0.05, 0.1
  step = jax.jit(lambda lb: update_log_beta(lb, c / jnp.exp(lb), target=target, kp=kp))
  for lb0 in (np.log(1e-3), np.log(1e3)):
    lb = jnp.float32(lb0)
    for _ in range(2000):
      lb = step(lb)
    kl = c / float(jnp.exp(lb))
    assert abs(kl - target) / target < 0.02, (lb0, kl)


@pytest.mark.parametrize("kl", [0.0, 1e9, 0.05, np.inf, np.nan])
def test_beta_positive_finite_under_extreme_kl(kl):
  lb = jnp.float32(0.0)
  step = jax.jit(lambda lb, kl: update_log_beta(lb, kl, target=0.05, kp=0.1))
  for _ in range(100):
    lb = step(lb, jnp.float32(kl))
  beta = float(jnp.exp(lb))
  assert np.isfinite(float(lb)) and np.isfinite(beta) and beta > 0
  # each step moves log β by at most kp · 0.2
  assert abs(float(lb)) <= 100 * 0.1 * 0.2 + 1e-5
  if kl == 0.05 or np.isnan(kl):
    assert float(lb) == 0.0


def test_non_adaptive_keeps_beta_fixed():
  lb = jnp.float32(np.log(0.2))
  for kl in (0.0, 1e9, 0.05):
    assert float(update_log_beta(lb, kl, target=0.05, kp=0.1, adaptive=False)) == float(lb)


def test_bad_controller_settings():
  with pytest.raises(ValueError, match="target"):
    update_log_beta(0.0, 0.1, target=0.0, kp=0.1)
  with pytest.raises(ValueError, match="kp"):
    update_log_beta(0.0, 0.1, target=0.1, kp=-1.0)
