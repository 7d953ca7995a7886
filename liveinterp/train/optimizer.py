"""optax optimizer from `config.train`: AdamW, warmup + cosine, clipping, accumulation."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(train_cfg) -> optax.Schedule:
  peak = train_cfg.learning_rate
  warmup = int(train_cfg.warmup_steps)
  decay_steps = max(1, int(train_cfg.steps) - warmup)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup else peak, peak_value=peak, warmup_steps=warmup,
      decay_steps=warmup + decay_steps, end_value=peak * train_cfg.end_lr_ratio)


def _decay_mask(params):
  # No weight decay on vectors (norm scales, biases) — only on matrices and up.
  return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  tx = optax.chain(
      optax.clip_by_global_norm(train_cfg.grad_clip) if train_cfg.grad_clip > 0
      else optax.identity(),
      optax.adamw(learning_rate_schedule(train_cfg), b1=train_cfg.b1, b2=train_cfg.b2,
                  weight_decay=train_cfg.weight_decay, mask=_decay_mask),
  )
  if train_cfg.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=int(train_cfg.grad_accum_steps))
  return tx
