"""orbax checkpoints of train state + grain iterator state, async, keep-N, reshardable.

Items in each step directory:
  `state` — the train state pytree (restored onto whatever sharding the abstract target
            carries, so a checkpoint written on 8 devices restores onto 4 or onto
            another process layout);
  `data`  — the grain iterator state (optional), so data order resumes exactly;
  `meta`  — JSON (stage, config name, metrics at save time).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from liveinterp.common import reporting


def _grain_args():
  from grain import checkpoint as grain_ckpt  # optional dependency of the data path
  return grain_ckpt.CheckpointSave, grain_ckpt.CheckpointRestore


class Checkpointer:
  """Thin policy layer over `ocp.CheckpointManager` (one per stage workdir)."""

  def __init__(self, directory: str, *, keep: int = 3, every_steps: int = 100,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every_steps = every_steps
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, enable_async_checkpointing=async_save,
        create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self):
    return self._manager.all_steps()

  def save(self, step: int, state: Any, data_iter: Any = None, meta: dict | None = None,
           force: bool = False) -> bool:
    """Saves when `step` is a multiple of `every_steps` (or `force`). Returns saved?"""
    if not force and step % self.every_steps:
      return False
    if step in self._manager.all_steps():
      return False
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      save_cls, _ = _grain_args()
      items["data"] = save_cls(data_iter)
    if meta is not None:
      items["meta"] = ocp.args.JsonSave(meta)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    reporting.log("checkpoint: saving step %d to %s", step, self.directory)
    return True

  def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None):
    """Restores (state, step) into `abstract_state`'s shapes and shardings, or None.

    `data_iter`, when given, has its position restored in place.
    """
    step = self.latest_step if step is None else step
    if step is None:
      return None
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      _, restore_cls = _grain_args()
      items["data"] = restore_cls(data_iter)
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    reporting.log("checkpoint: restored step %d from %s", step, self.directory)
    return out["state"], step

  def restore_params(self, abstract_params: Any, step: int | None = None,
                     abstract_model_state: Any = None):
    """Only the `params` (and, when `abstract_model_state` is given, the non-param
    `model_state`, e.g. EMA codebooks) of a saved train state — a partial restore onto
    the shardings the abstract trees carry. The optimizer state is not read. For
    initialising a stage from another stage's run and for loading models to serve.
    Returns params, or (params, model_state) when `abstract_model_state` is given."""
    step = self.latest_step if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    item = {"params": abstract_params}
    if abstract_model_state is not None:
      item["model_state"] = abstract_model_state
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, "sharding", None)), item)
    out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True)))
    reporting.log("checkpoint: restored params of step %d from %s", step, self.directory)
    if abstract_model_state is not None:
      return out["state"]["params"], out["state"]["model_state"]
    return out["state"]["params"]

  def read_meta(self, step: int | None = None) -> dict | None:
    step = self.latest_step if step is None else step
    if step is None:
      return None
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      return dict(out["meta"])
    except (KeyError, FileNotFoundError, ValueError):
      return None

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (for restoring onto a new mesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
