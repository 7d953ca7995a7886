"""Token-level PPO: losses, diagnostics and the minibatch-epoch update (DESIGN.md §5).

With ratio_t = exp(log π(a_t) − log π_old(a_t)), advantages A_t, returns R_t, values V_t
and mean_m(x) = Σ_t m_t x_t / max(Σ_t m_t, 1) over the valid (generated) tokens:

  policy_loss = mean_m( max(−A_t · ratio_t, −A_t · clip(ratio_t, 1 − ε, 1 + ε)) )
  value_loss  = mean_m( 0.5 · max((V_t − R_t)², (clip(V_t, V_old − c, V_old + c) − R_t)²) )
                (c <= 0: unclipped, 0.5 · (V_t − R_t)²)
  entropy     = mean_m( −Σ_v p_v log p_v )
  loss        = policy_coef · policy_loss + value_coef · value_loss − entropy_coef · entropy

Diagnostics: clip_fraction = mean_m(|ratio − 1| > ε); approx_kl = mean_m((ratio − 1) −
log ratio) (k3, ≥ 0); explained_variance = 1 − Var_m(R − V) / Var_m(R).

`make_update` runs `epochs` × `minibatches` optimizer steps as nested `jax.lax.scan`s,
permuting the rows each epoch (PureJaxRL's structure); it is pure and jit-able.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

# apply_fn(params, minibatch) -> (logp_bt, values_bt, entropy_bt)
ApplyFn = Callable[[Any, dict], tuple[jax.Array, jax.Array, jax.Array]]

METRICS = ("loss", "policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl",
           "grad_norm", "explained_variance")


def _valid(mask_bt: jax.Array) -> jax.Array:
  return jnp.asarray(mask_bt) > 0


def masked_mean(x_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """Σ m x / max(Σ m, 1) over valid entries (invalid entries may hold NaN/inf)."""
  valid = _valid(mask_bt)
  count = jnp.sum(valid, dtype=jnp.float32)
  return jnp.sum(jnp.where(valid, x_bt, 0.0)) / jnp.maximum(count, 1.0)


def _masked_var(x_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
  mean = masked_mean(x_bt, mask_bt)
  return masked_mean(jnp.square(x_bt - mean), mask_bt)


def whiten(x_bt: jax.Array, mask_bt: jax.Array, eps: float = 1e-8) -> jax.Array:
  """(x − mean_m(x)) / sqrt(Var_m(x) + eps) over the valid entries (population variance);
  0 on invalid entries."""
  x_bt = jnp.asarray(x_bt, jnp.float32)
  mean = masked_mean(x_bt, mask_bt)
  var = _masked_var(x_bt, mask_bt)
  return jnp.where(_valid(mask_bt), (x_bt - mean) * jax.lax.rsqrt(var + eps), 0.0)


def policy_loss(logp_bt: jax.Array, old_logp_bt: jax.Array, adv_bt: jax.Array,
                mask_bt: jax.Array, clip_eps: float) -> tuple[jax.Array, dict]:
  """Clipped surrogate (module docstring) -> (loss, {"clip_fraction", "approx_kl"})."""
  valid = _valid(mask_bt)
  log_ratio = jnp.where(valid, logp_bt - old_logp_bt, 0.0)  # masked slots may be -inf
  ratio = jnp.exp(log_ratio)
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  loss_bt = jnp.maximum(-adv_bt * ratio, -adv_bt * clipped)
  aux = {
      "clip_fraction": masked_mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32),
                                   mask_bt),
      "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask_bt),
  }
  return masked_mean(loss_bt, mask_bt), aux


def value_loss(values_bt: jax.Array, old_values_bt: jax.Array, returns_bt: jax.Array,
               mask_bt: jax.Array, clip: float) -> jax.Array:
  """Clipped value loss (module docstring); clip <= 0 means unclipped."""
  unclipped = jnp.square(values_bt - returns_bt)
  v_clipped = old_values_bt + jnp.clip(values_bt - old_values_bt, -clip, clip)
  clipped = jnp.maximum(unclipped, jnp.square(v_clipped - returns_bt))
  loss_bt = 0.5 * jnp.where(jnp.asarray(clip) > 0, clipped, unclipped)
  return masked_mean(loss_bt, mask_bt)


def entropy_of(logp_btv: jax.Array) -> jax.Array:
  """−Σ_v p_v log p_v over the last axis from log-probs [..., V] -> [...].

  -inf entries (masked vocabulary) contribute 0 (0 · −inf = 0), also in the gradient.
  """
  finite = jnp.isfinite(logp_btv)
  safe = jnp.where(finite, logp_btv, 0.0)  # keeps NaN out of the gradient
  return -jnp.sum(jnp.where(finite, jnp.exp(safe) * safe, 0.0), axis=-1)


def explained_variance(values_bt: jax.Array, returns_bt: jax.Array,
                       mask_bt: jax.Array) -> jax.Array:
  """1 − Var_m(R − V) / Var_m(R) over valid entries; 0 when Var_m(R) = 0."""
  var_r = _masked_var(returns_bt, mask_bt)
  var_err = _masked_var(returns_bt - values_bt, mask_bt)
  return jnp.where(var_r > 0, 1.0 - var_err / jnp.where(var_r > 0, var_r, 1.0), 0.0)


# ----------------------------------------------------------------------------- config

# PPOConfig field -> its name under cfg.rl
_CONFIG_NAMES = {"clip_eps": "clip_eps", "value_clip": "value_clip",
                 "value_coef": "value_coef", "entropy_coef": "entropy_coef",
                 "epochs": "ppo_epochs", "minibatches": "ppo_minibatches"}


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check(values: dict, names: dict) -> None:
  """ValueError naming the offending field (`names[field]`) for a bad value."""
  def bad(field, what):
    raise ValueError(f"{names[field]} must be {what}, got {values[field]!r}")
  for f in ("clip_eps", "value_clip", "value_coef", "entropy_coef"):
    if not _is_number(values[f]):
      bad(f, "a finite number")
  if not 0 < values["clip_eps"] < 1:
    bad("clip_eps", "in (0, 1)")
  for f in ("value_coef", "entropy_coef"):
    if values[f] < 0:
      bad(f, ">= 0")
  for f in ("epochs", "minibatches"):
    if not (isinstance(values[f], int) and not isinstance(values[f], bool)
            and values[f] >= 1):
      bad(f, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  clip_eps: float = 0.2       # ε of the clipped surrogate
  value_clip: float = 0.2     # c of the clipped value loss; <= 0: unclipped
  value_coef: float = 0.5
  entropy_coef: float = 0.0
  epochs: int = 2             # passes over the rollout batch per update
  minibatches: int = 2        # optimizer steps per epoch (B must be divisible)

  def __post_init__(self):
    _check(dataclasses.asdict(self), {f: f for f in _CONFIG_NAMES})

  @classmethod
  def from_config(cls, cfg) -> "PPOConfig":
    """From cfg.rl.{clip_eps, value_clip, value_coef, entropy_coef, ppo_epochs,
    ppo_minibatches}; a field absent from cfg.rl keeps its default. ValueError names the
    config field (e.g. "rl.ppo_epochs") of a bad value."""
    rl = cfg.rl
    values = {}
    for field, name in _CONFIG_NAMES.items():
      default = cls.__dataclass_fields__[field].default
      values[field] = rl.get(name, default) if hasattr(rl, "get") else getattr(
          rl, name, default)
    _check(values, {f: f"rl.{n}" for f, n in _CONFIG_NAMES.items()})
    return cls(**values)


# ----------------------------------------------------------------------------- update

def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _apply_mask(tree, grad_mask):
  # `where`, not a bare product, so a NaN in a frozen leaf stays out (0 · NaN = NaN).
  return jax.tree.map(lambda g, m: jnp.where(m != 0, g * m, jnp.zeros_like(g)),
                      tree, grad_mask)


def make_update(apply_fn: ApplyFn, tx: optax.GradientTransformation, pc: PPOConfig):
  """Returns `update(params, opt_state, batch, rng, policy_coef=1.0, grad_mask=None)
  -> (params, opt_state, metrics)`, pure and jit-able (not jitted here).

  batch: dict of arrays with leading axis B (divisible by pc.minibatches), with at least
    "mask", "old_logp", "old_values", "advantages", "returns" [B, T]. The advantages are
    used as given: whiten them (`whiten`) before calling if wanted — the update never
    re-whitens (per-minibatch whitening would change the estimator with the minibatch
    split). Each minibatch (all keys, row-permuted) is passed to
    `apply_fn(params, minibatch) -> (logp_bt, values_bt, entropy_bt)`, logp being the
    log-prob of the taken token under the current policy's sampling distribution.
  policy_coef: weight of the policy loss (0: value-only warm-up); may be traced.
  grad_mask: optional pytree like params of 0/1 floats multiplied into the gradients and
    into the optimizer's updates, so a 0 leaf stays exactly unchanged (no weight decay or
    momentum carry-over either).
  A minibatch step whose loss, gradient norm or new params are non-finite is skipped
  (params and opt_state unchanged).
  metrics (float32 scalars): `skipped` = number of skipped minibatch steps; the others
    (METRICS) are means over the applied minibatch steps (NaN if all were skipped), each
    computed before its step's parameter update.
  """
  m = pc.minibatches

  def loss_fn(params, mb, policy_coef):
    logp, values, entropy = apply_fn(params, mb)
    mask = mb["mask"]
    pl, aux = policy_loss(logp, mb["old_logp"], mb["advantages"], mask, pc.clip_eps)
    vl = value_loss(values, mb["old_values"], mb["returns"], mask, pc.value_clip)
    ent = masked_mean(entropy, mask)
    loss = policy_coef * pl + pc.value_coef * vl - pc.entropy_coef * ent
    aux = dict(aux, policy_loss=pl, value_loss=vl, entropy=ent,
               explained_variance=explained_variance(values, mb["returns"], mask))
    return loss, aux

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def update(params, opt_state, batch: dict, rng: jax.Array, policy_coef=1.0,
             grad_mask=None):
    b = batch["mask"].shape[0]
    if b % m:
      raise ValueError(f"make_update: batch size {b} is not divisible by "
                       f"minibatches={m}")
    policy_coef = jnp.asarray(policy_coef, jnp.float32)

    def minibatch_step(carry, mb):
      params, opt_state = carry
      (loss, aux), grads = grad_fn(params, mb, policy_coef)
      if grad_mask is not None:
        grads = _apply_mask(grads, grad_mask)
      grad_norm = optax.global_norm(grads)
      updates, new_opt_state = tx.update(grads, opt_state, params)
      if grad_mask is not None:
        updates = _apply_mask(updates, grad_mask)
      new_params = optax.apply_updates(params, updates)
      ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new_params)
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
      metrics = dict(aux, loss=loss, grad_norm=grad_norm)
      metrics = {k: jnp.asarray(metrics[k], jnp.float32) for k in METRICS}
      return ((keep(new_params, params), keep(new_opt_state, opt_state)),
              (metrics, ok))

    def epoch(carry, key):
      perm = jax.random.permutation(key, b)
      shuffled = jax.tree.map(
          lambda x: jnp.take(x, perm, axis=0).reshape((m, b // m) + x.shape[1:]), batch)
      return jax.lax.scan(minibatch_step, carry, shuffled)

    keys = jax.random.split(rng, pc.epochs)
    (params, opt_state), (metrics, ok) = jax.lax.scan(epoch, (params, opt_state), keys)
    applied = ok.astype(jnp.float32)  # [epochs, minibatches]
    n_applied = jnp.sum(applied)
    out = {k: jnp.sum(jnp.where(ok, v, 0.0)) / n_applied for k, v in metrics.items()}
    out["skipped"] = jnp.sum(1.0 - applied)
    return params, opt_state, out

  return update
