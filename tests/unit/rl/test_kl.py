"""Per-token KL and the adaptive-β controller in log space (DESIGN.md §5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from liveinterp.rl.kl import armed_after, mean_kl, token_kl, update_log_beta


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


# ---- arming (issue #13): β may not fall before the KL has reached the arm level ------------

def _run_controller(kls, *, arm_fraction, target=0.02, kp=0.5, lb0=np.log(0.05)):
  """(log β after each step, armed after each step) for a fixed KL sequence, as the
  trainer steps them (arm on this iteration's KL, then move β); jitted."""
  @jax.jit
  def step(lb, armed, kl):
    armed = armed_after(armed, kl, target=target, arm_fraction=arm_fraction)
    return update_log_beta(lb, kl, target=target, kp=kp, armed=armed), armed
  lb, armed, lbs, arms = jnp.float32(lb0), jnp.float32(0.0), [], []
  for kl in kls:
    lb, armed = step(lb, armed, jnp.float32(kl))
    lbs.append(float(lb))
    arms.append(float(armed))
  return np.asarray(lbs), np.asarray(arms)


def test_beta_held_until_kl_reaches_arm_level():
  # the policy starts where the reference is (KL 0) and drifts away slowly
  kls = [0.0, 0.0, 0.002, 0.006, 0.0099, 0.01, 0.004, 0.0, 0.03]
  lbs, arms = _run_controller(kls, arm_fraction=0.5)    # arm level 0.5 x 0.02 = 0.01
  np.testing.assert_array_equal(lbs[:5], np.float32(np.log(0.05)))   # β held
  np.testing.assert_array_equal(arms, [0, 0, 0, 0, 0, 1, 1, 1, 1])
  # armed at KL 0.01: from there on the old controller, including decreases
  old, _ = _run_controller(kls[5:], arm_fraction=0.0)
  np.testing.assert_allclose(lbs[5:], old, rtol=1e-6)
  assert lbs[5] < lbs[4] and lbs[7] < lbs[6] and lbs[8] > lbs[7]


def test_unarmed_controller_still_raises_beta():
  lbs, arms = _run_controller([0.05, 0.0], arm_fraction=1.0, target=0.1)
  np.testing.assert_array_equal(lbs, np.float32(np.log(0.05)))  # errors −0.5, −1: held
  assert arms.tolist() == [0, 0]
  lbs, arms = _run_controller([0.15], arm_fraction=1.0, target=0.1)
  np.testing.assert_allclose(lbs[0], np.log(0.05) + 0.5 * 0.2, rtol=1e-6)  # error +0.5 -> 0.2
  assert arms.tolist() == [1]


def test_arm_fraction_zero_reproduces_the_old_sequence():
  kls = [0.0, 0.0, 0.0006, 0.0025, 0.0063, 0.0096, 0.014, 0.023, 0.045, 0.057, 0.02]
  new, arms = _run_controller(kls, arm_fraction=0.0)
  lb, old = jnp.float32(np.log(0.05)), []
  for kl in kls:
    lb = update_log_beta(lb, kl, target=0.02, kp=0.5)
    old.append(float(lb))
  np.testing.assert_array_equal(new, old)   # bit for bit
  assert arms.tolist() == [1.0] * len(kls)


def test_armed_controller_drives_kl_to_target():
  # KL grows from 0 as the policy moves (a ramp, β has no effect yet), then falls as β
  # rises: kl = min(ramp, c / β). Fixed point β* = c / target.
  c, target, kp = 0.004, 0.02, 0.5
  lb, armed, kl_seen = jnp.float32(np.log(0.05)), jnp.float32(0.0), []
  step = jax.jit(lambda lb, armed, kl: (
      update_log_beta(lb, kl, target=target, kp=kp,
                      armed=armed_after(armed, kl, target=target, arm_fraction=0.5)),
      armed_after(armed, kl, target=target, arm_fraction=0.5)))
  for i in range(300):
    kl = min(0.002 * i, c / float(jnp.exp(lb)))
    kl_seen.append(kl)
    lb, armed = step(lb, armed, jnp.float32(kl))
    if kl < 0.01:
      assert float(armed) == 0.0 and float(lb) >= np.log(0.05) - 1e-6   # never lowered
  beta = float(jnp.exp(lb))
  assert float(armed) == 1.0 and np.isfinite(beta) and beta > 0
  assert abs(kl_seen[-1] - target) / target < 0.02
  assert beta == pytest.approx(c / target, rel=0.02)


def test_nan_kl_does_not_arm_and_bad_fraction():
  assert float(armed_after(0.0, np.nan, target=0.02, arm_fraction=0.5)) == 0.0
  assert float(armed_after(1.0, 0.0, target=0.02, arm_fraction=0.5)) == 1.0   # stays armed
  for bad in (-0.1, 1.5, np.nan):
    with pytest.raises(ValueError, match="arm_fraction"):
      armed_after(0.0, 0.0, target=0.02, arm_fraction=bad)
