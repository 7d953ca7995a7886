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
  may differ from the mesh that wrote the checkpoint. `model_state` (non-param variables,
  e.g. codebook statistics) is freshly initialised: only params are read.
  """
  if mesh is None:
    mesh = mesh_lib.create_mesh(config.mesh)
  rules = sharding.rules_from_config(config.logical_axis_rules)
  with sharding.use_mesh(mesh, rules):
    abstract_model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
    graphdef, abs_params, _ = train_state.split_model(abstract_model)
    shardings = sharding.named_shardings(abs_params, mesh)
  abs_params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abs_params, shardings)
  ckpt = checkpointing.Checkpointer(checkpoint_dir(workdir))
  try:
    params = ckpt.restore_params(abs_params, step=step)
  finally:
    ckpt.close()
  with sharding.use_mesh(mesh, rules):
    model = model_fn(nnx.Rngs(0))
  _, _, model_state = train_state.split_model(model)
  return graphdef, params, model_state


def load_model(model_fn, workdir: str, config, mesh=None, step=None) -> nnx.Module:
  graphdef, params, model_state = load_params(model_fn, workdir, config, mesh, step)
  return nnx.merge(graphdef, params, model_state)
