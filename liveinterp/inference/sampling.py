"""Token sampling for the streaming decoder: greedy, temperature, nucleus (top-p), masks.

Everything here is a pure function of fixed-shape arrays, so it runs inside the jitted
per-chunk step (`lax.while_loop` body).

- `filtered_log_probs(logits, temperature, top_p, mask)`: the exact distribution that
  `sample` draws from, as log-probabilities `[B, V]` (-inf outside its support). Order of
  operations: mask (disallowed ids removed) -> temperature -> nucleus (the smallest set of
  most probable ids whose mass reaches `top_p`; the most probable id is always kept;
  ties at the boundary are broken by id order, as a stable sort does) -> renormalise.
- `sample(logits, key, ...)`: one id per row. `temperature == 0` is greedy (the argmax of
  the masked logits). A row whose mask allows nothing yields `PAD` (0) instead of an
  arbitrary id.
- `sample_with_log_probs(...)`: the same ids plus `sampling_log_probs(...)`, the `[B, V]`
  log-probabilities of the distribution they were drawn from (greedy: a point mass on
  the masked argmax). `log_prob_of(logp, ids)` reads one id per row from it. Two
  log-probabilities of a chosen token exist and are kept apart (issue #10):
  *sampled* = under that distribution (what a PPO ratio/KL of the behaviour policy
  needs), *raw* = `token_log_probs`, log softmax of the unmasked logits at temperature 1.

The id layout (`TokenLayout`, id classes C_*) lives in `liveinterp.common.token_layout`;
the turn grammar that masks ids with it in `liveinterp.inference.grammar`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from liveinterp.common.token_layout import (AUDIO, BOS, EOS, EOT, PAD, SPEECH,  # noqa: F401
                                            SRC, TEXT)
_NEG_INF = -jnp.inf


# ---- sampling ----------------------------------------------------------------------------
def check_params(temperature: float, top_p: float):
  if not np.isfinite(temperature) or temperature < 0:
    raise ValueError(f"temperature={temperature}: must be finite and >= 0 (0 = greedy)")
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p={top_p}: must be in (0, 1]")


def apply_mask(logits_bv: jax.Array, mask_bv: jax.Array | None) -> jax.Array:
  """float32 logits with disallowed ids (`mask` False) set to -inf."""
  logits_bv = logits_bv.astype(jnp.float32)
  if mask_bv is None:
    return logits_bv
  return jnp.where(mask_bv, logits_bv, _NEG_INF)


def filtered_log_probs(logits_bv: jax.Array, temperature: float = 1.0, top_p: float = 1.0,
                       mask_bv: jax.Array | None = None) -> jax.Array:
  """Log-probabilities `[B, V]` float32 of the sampling distribution (-inf = excluded).

  `temperature` must be > 0 here (greedy has no distribution). Rows with an all-False
  mask come out all -inf.
  """
  check_params(temperature, top_p)
  if temperature == 0:
    raise ValueError("filtered_log_probs: temperature=0 is greedy and has no distribution")
  x = apply_mask(logits_bv, mask_bv) / jnp.float32(temperature)
  logp = jax.nn.log_softmax(x, axis=-1)
  if top_p < 1.0:
    order = jnp.argsort(-logp, axis=-1, stable=True)                # descending
    sorted_logp = jnp.take_along_axis(logp, order, axis=-1)
    p = jnp.exp(sorted_logp)
    before = jnp.cumsum(p, axis=-1) - p                               # mass above this id
    keep_sorted = before < jnp.float32(top_p)
    keep_sorted = keep_sorted.at[:, 0].set(True)
    keep = jnp.zeros_like(keep_sorted).at[
        jnp.arange(keep_sorted.shape[0])[:, None], order].set(keep_sorted)
    logp = jax.nn.log_softmax(jnp.where(keep, logp, _NEG_INF), axis=-1)
  if mask_bv is not None:  # log_softmax of an all -inf row is NaN, not -inf
    logp = jnp.where(jnp.any(mask_bv, axis=-1, keepdims=True), logp, _NEG_INF)
  return logp


def sampling_log_probs(logits_bv: jax.Array, temperature: float = 0.0, top_p: float = 1.0,
                       mask_bv: jax.Array | None = None) -> jax.Array:
  """Log-probabilities `[B, V]` float32 of the distribution `sample` draws from, for every
  temperature: `filtered_log_probs` when `temperature > 0`; greedy (0) is a point mass on
  the masked argmax (0 there, -inf elsewhere). Rows whose mask allows nothing: all -inf.
  """
  check_params(temperature, top_p)
  if temperature > 0:
    return filtered_log_probs(logits_bv, temperature, top_p, mask_bv)
  masked = apply_mask(logits_bv, mask_bv)
  top = jnp.argmax(masked, axis=-1)
  logp = jnp.where(jnp.arange(masked.shape[-1])[None, :] == top[:, None], 0.0, _NEG_INF)
  if mask_bv is not None:
    logp = jnp.where(jnp.any(mask_bv, axis=-1, keepdims=True), logp, _NEG_INF)
  return logp.astype(jnp.float32)


def sample_with_log_probs(logits_bv: jax.Array, key: jax.Array | None = None, *,
                          temperature: float = 0.0, top_p: float = 1.0,
                          mask_bv: jax.Array | None = None, rows: jax.Array | None = None,
                          batch: int | None = None) -> tuple[jax.Array, jax.Array]:
  """`(ids [B] int32, logp [B, V] float32)`: `sample`'s ids (same key -> same ids) and
  `sampling_log_probs(...)`, the distribution they were drawn from.

  `log_prob_of(logp, ids)` is the sampled token's log-probability under it; a PAD from a
  row with nothing allowed gets -inf. `rows` [B] / `batch`: the logits are these rows of
  a batch of `batch` rows and `key` is one key: the ids are those rows' ids of a draw
  over the whole batch (the noise of all `batch` rows is drawn, these rows' kept).
  """
  check_params(temperature, top_p)
  logp = sampling_log_probs(logits_bv, temperature, top_p, mask_bv)
  if temperature == 0:
    ids = jnp.argmax(apply_mask(logits_bv, mask_bv), axis=-1)
  else:
    if key is None:
      raise ValueError("sample: temperature > 0 needs a PRNG key")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 1:
      ids = jax.vmap(jax.random.categorical)(key, logp)  # one key per row: row b's alone
    elif rows is not None:  # jax.random.categorical's Gumbel-max over the whole batch
      noise = jax.random.gumbel(key, (batch, logp.shape[-1]), logp.dtype)[rows]
      ids = jnp.argmax(noise + logp, axis=-1)
    else:
      ids = jax.random.categorical(key, logp, axis=-1)
  if mask_bv is not None:
    ids = jnp.where(jnp.any(mask_bv, axis=-1), ids, PAD)
  return ids.astype(jnp.int32), logp


def sample(logits_bv: jax.Array, key: jax.Array | None = None, *, temperature: float = 0.0,
           top_p: float = 1.0, mask_bv: jax.Array | None = None) -> jax.Array:
  """One id per row `[B]` int32 from logits `[B, V]`.

  temperature 0: greedy argmax of the masked logits (`key` unused). Otherwise a draw from
  `filtered_log_probs(logits, temperature, top_p, mask)`. Rows with no allowed id -> PAD.
  `key`: one PRNG key, or one typed key per row (`[B]`: row b's draw uses key b alone).
  """
  return sample_with_log_probs(logits_bv, key, temperature=temperature, top_p=top_p,
                               mask_bv=mask_bv)[0]


def log_prob_of(logp_bv: jax.Array, ids_b: jax.Array) -> jax.Array:
  """`logp[b, ids[b]]` per row `[B]` float32."""
  return jnp.take_along_axis(logp_bv.astype(jnp.float32),
                             ids_b[:, None].astype(jnp.int32), axis=-1)[:, 0]


def token_log_probs(logits_bv: jax.Array, ids_b: jax.Array) -> jax.Array:
  """log softmax(logits)[id] per row `[B]` float32: the *raw* policy (no mask, temperature
  or top-p). Not the probability the token was sampled with: see `sample_with_log_probs`."""
  return log_prob_of(jax.nn.log_softmax(logits_bv.astype(jnp.float32), axis=-1), ids_b)


__all__ = ["check_params", "sample", "sample_with_log_probs", "sampling_log_probs",
           "log_prob_of", "filtered_log_probs", "apply_mask", "token_log_probs",
           "PAD", "EOT"]
