"""KL to the reference policy and the adaptive-β controller (DESIGN.md §5).

Per token (k1 estimator, unbiased for KL(π ‖ π_ref) on tokens sampled from π):

  kl_t = (log π(a_t) − log π_ref(a_t)) · mask_t,     KL = Σ_t kl_t / max(Σ_t mask_t, 1)

The per-token reward is −β · kl_t. β is controlled proportionally in log space:

  log β ← log β + K_p · clip((KL − KL_target) / KL_target, −0.2, 0.2)

so β grows when the policy drifts past the target and shrinks below it, by at most a
factor exp(±0.2 K_p) per update; β = exp(log β) stays positive. (Ziegler et al. 2019's
β ← β · (1 + K_p e) is the linearised form.) A non-finite KL leaves log β unchanged.

Arming (issue #13): right after the value warm-up the policy has not moved yet (KL ≈ 0),
so the plain controller lowers β at every iteration (0.05 → 0.015 in 7 iterations of
runs/tiny_v3/rl2) and the KL then overshoots the target while β climbs back. The
controller is therefore *armed* once the measured KL has reached
`arm_fraction · KL_target` (`rl.kl_arm_fraction`; 0 = always armed, the old behaviour);
before that β may rise but not fall (the error is clipped at 0 from below). The armed
flag is state (`RLState.kl_armed`), checkpointed with log β.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ERROR_CLIP = 0.2


def token_kl(logp_bt: jax.Array, ref_logp_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """Per-token k1 estimate (logp − ref_logp) · mask, float32 [B, T]; 0 where masked."""
  diff = jnp.asarray(logp_bt, jnp.float32) - jnp.asarray(ref_logp_bt, jnp.float32)
  # `where`, not a product: a masked position may hold -inf log-probs (0 · inf = NaN).
  return jnp.where(jnp.asarray(mask_bt) > 0, diff, 0.0)


def mean_kl(logp_bt: jax.Array, ref_logp_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """Mean of token_kl over valid tokens, float32 scalar (0 when there are none)."""
  count = jnp.sum(jnp.asarray(mask_bt) > 0, dtype=jnp.float32)
  return jnp.sum(token_kl(logp_bt, ref_logp_bt, mask_bt)) / jnp.maximum(count, 1.0)


def armed_after(armed: jax.Array, kl: jax.Array, *, target: float,
                arm_fraction: float) -> jax.Array:
  """The armed flag after measuring `kl` (module docstring): float32 scalar 1.0 once a
  finite KL has reached `arm_fraction · target` (always with `arm_fraction` = 0), else
  `armed` (0.0 or 1.0); jit-able."""
  if not 0.0 <= arm_fraction <= 1.0:  # NaN fails too
    raise ValueError(f"armed_after: arm_fraction must be in [0, 1], got {arm_fraction}")
  armed = jnp.asarray(armed, jnp.float32)
  if arm_fraction == 0.0:
    return jnp.ones_like(armed)
  reached = jnp.asarray(kl, jnp.float32) >= jnp.float32(arm_fraction * target)  # NaN: no
  return jnp.where(reached, jnp.float32(1.0), armed)


def update_log_beta(log_beta: jax.Array, kl: jax.Array, *, target: float, kp: float,
                    adaptive: bool = True, armed: jax.Array | bool = True) -> jax.Array:
  """One controller step (module docstring); float32 scalar, jit-able.

  `target` > 0 and `kp` >= 0 are Python numbers (config values); `adaptive=False`
  returns log_beta unchanged (fixed β). While `armed` is false (0) β only rises.
  """
  if not target > 0:
    raise ValueError(f"update_log_beta: target must be > 0, got {target}")
  if not kp >= 0:
    raise ValueError(f"update_log_beta: kp must be >= 0, got {kp}")
  log_beta = jnp.asarray(log_beta, jnp.float32)
  if not adaptive:
    return log_beta
  kl = jnp.asarray(kl, jnp.float32)
  error = jnp.clip((kl - target) / target, -ERROR_CLIP, ERROR_CLIP)
  error = jnp.where(jnp.isfinite(error), error, 0.0)  # NaN KL: hold β (+inf clips to 0.2)
  error = jnp.where(jnp.asarray(armed) > 0, error, jnp.maximum(error, 0.0))
  return log_beta + jnp.float32(kp) * error
