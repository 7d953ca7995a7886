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


def group_advantages(rewards_bt: jax.Array, mask_bt: jax.Array, turn_end_bt: jax.Array,
                     group_size: int) -> tuple[jax.Array, jax.Array]:
  """Leave-one-out group baseline per turn (γ = 1): (advantages_bt, returns_bt) [B, T].

  Rows come in groups of `group_size` consecutive episodes of one source utterance
  (`rl.group_size`), sampled independently. A row's turns are its source chunks in order
  (turn k = the number of `turn_end` marks before the position), so turn k of every row
  of a group answers the same audio. With G_k = the reward-to-go from the start of turn
  k (the rewards at valid positions of turns >= k) and R_t the reward-to-go from
  position t, the advantage of valid position t in turn k of row i is

    A_t = R_t − mean_{j != i in the group} G_k(j)

  — the baseline is what the group's other samples went on to earn from the same point
  of the source, which does not depend on row i's actions (unbiased) and removes the
  between-utterance spread of the rewards that a value head must otherwise learn.
  Returns are R_t (the value head's target); both are 0 where `mask_bt` is 0.
  """
  rew = jnp.where(jnp.asarray(mask_bt) > 0, jnp.asarray(rewards_bt, jnp.float32), 0.0)
  valid = jnp.asarray(mask_bt) > 0
  b, t = rew.shape
  if group_size < 2 or b % group_size:
    raise ValueError(f"group_advantages: {b} rows are not groups of group_size="
                     f"{group_size} (>= 2)")
  end = jnp.asarray(turn_end_bt, jnp.int32)
  turn = jnp.cumsum(end, axis=1) - end                                   # [B, T]
  rtg = jnp.flip(jnp.cumsum(jnp.flip(rew, 1), axis=1), 1)               # R_t
  per_turn = jnp.zeros((b, t), jnp.float32).at[jnp.arange(b)[:, None], turn].add(rew)
  g = jnp.flip(jnp.cumsum(jnp.flip(per_turn, 1), axis=1), 1)            # G_k [B, K=T]
  grouped = g.reshape(b // group_size, group_size, t)
  others = (grouped.sum(axis=1, keepdims=True) - grouped) / (group_size - 1)
  baseline = jnp.take_along_axis(others.reshape(b, t), turn, axis=1)    # [B, T]
  adv = jnp.where(valid, rtg - baseline, 0.0)
  return adv, jnp.where(valid, rtg, 0.0)
