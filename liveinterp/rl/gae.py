"""Generalised advantage estimation over masked token sequences (DESIGN.md §5).

For the valid positions t_1 < t_2 < ... < t_n of a row (mask = 1), with t_{n+1} terminal:

  δ_k = r_{t_k} + γ · V_{t_{k+1}} − V_{t_k}        (V_{t_{n+1}} = last_value_b, default 0)
  A_k = δ_k + γ · λ · A_{k+1}                       (A_{n+1} = 0)
  R_k = A_k + V_{t_k}

computed by one reverse `jax.lax.scan` over time. A masked-out position (audio slot,
prompt, padding between generated tokens) is not a step of the trajectory: the carry
(next value, next advantage) passes through it unchanged, its advantage and return are 0,
and its reward is ignored (put turn rewards on valid tokens). γ = 1, λ = 1 gives
returns = reward-to-go over the valid tokens (plus last_value_b).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards_bt: jax.Array, values_bt: jax.Array, mask_bt: jax.Array, *,
        gamma: float = 1.0, lam: float = 0.95,
        last_value_b: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Returns (advantages_bt, returns_bt), float32 [B, T]; 0 where mask_bt is 0.

  rewards_bt, values_bt, mask_bt: [B, T]; last_value_b: [B] bootstrap value after the
  last valid position (None: terminal, 0).
  """
  rewards_bt = jnp.asarray(rewards_bt, jnp.float32)
  values_bt = jnp.asarray(values_bt, jnp.float32)
  valid_bt = jnp.asarray(mask_bt) > 0
  b = rewards_bt.shape[0]
  next_value_b = (jnp.zeros((b,), jnp.float32) if last_value_b is None
                  else jnp.broadcast_to(jnp.asarray(last_value_b, jnp.float32), (b,)))

  def step(carry, x):
    next_value, next_adv = carry
    r, v, valid = x
    delta = r + gamma * next_value - v
    adv = delta + gamma * lam * next_adv
    adv = jnp.where(valid, adv, 0.0)
    carry = (jnp.where(valid, v, next_value), jnp.where(valid, adv, next_adv))
    return carry, adv

  xs = (rewards_bt.T, values_bt.T, valid_bt.T)  # time-major for the scan
  _, adv_tb = jax.lax.scan(step, (next_value_b, jnp.zeros((b,), jnp.float32)), xs,
                           reverse=True)
  advantages_bt = adv_tb.T
  returns_bt = jnp.where(valid_bt, advantages_bt + values_bt, 0.0)
  return advantages_bt, returns_bt
