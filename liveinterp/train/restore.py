"""Loading trained models from a stage's workdir (for later stages, export and serving)."""

from __future__ import annotations

import os
from typing import Callable

import jax
from flax import nnx

from liveinterp.common import checkpointing, mesh as mesh_lib, sharding
from liveinterp.train import train_state


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def load_params(model_fn: Callable[[nnx.Rngs], nnx.Module], workdir: str, config,
                mesh: jax.sharding.Mesh | None = None, step: int | None = None):
  """(graphdef, params, model_state) of the latest (or `step`) checkpoint in `workdir`.

  Restored onto `mesh` (default: a mesh over this process's devices from config), which
  may differ from the mesh that wrote the checkpoint. Both params and the non-param
  model state (e.g. EMA codebooks of the codec) are read; the optimizer state is not.
  """
  if mesh is None:
    mesh = mesh_lib.create_mesh(config.mesh)
  rules = sharding.rules_from_config(config.logical_axis_rules)
  with sharding.use_mesh(mesh, rules):
    abstract_model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
    graphdef, abs_params, abs_rest = train_state.split_model(abstract_model)
    sh_params = sharding.named_shardings(abs_params, mesh)
    sh_rest = sharding.named_shardings(abs_rest, mesh)
  as_abstract = lambda t, s: jax.tree.map(  # noqa: E731
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), t, s)
  ckpt = checkpointing.Checkpointer(checkpoint_dir(workdir))
  try:
    has_rest = bool(jax.tree.leaves(abs_rest))
    out = ckpt.restore_params(as_abstract(abs_params, sh_params), step=step,
                              abstract_model_state=as_abstract(abs_rest, sh_rest)
                              if has_rest else None)
  finally:
    ckpt.close()
  params, model_state = out if has_rest else (out, abs_rest)
  return graphdef, params, model_state


def load_model(model_fn, workdir: str, config, mesh=None, step=None) -> nnx.Module:
  graphdef, params, model_state = load_params(model_fn, workdir, config, mesh, step)
  return nnx.merge(graphdef, params, model_state)
