"""How a model's NNX Variables divide: trainable parameters and the rest.

One definition for training (`liveinterp.train.train_state`), restoring and serving
(`liveinterp.inference`), which must not import training code.
"""

from __future__ import annotations

from flax import nnx


def split_model(model: nnx.Module):
  """(graphdef, params, model_state) with params = nnx.Param, model_state = the rest
  (non-trainable state such as codebook EMA statistics)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, params, rest
