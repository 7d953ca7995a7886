"""orbax checkpoints of train state + grain iterator state, async, keep-N, reshardable.

Items in each step directory:
  `state` — the train state pytree (restored onto whatever sharding the abstract target
            carries, so a checkpoint written on 8 devices restores onto 4 or onto
            another process layout);
  `data`  — the grain iterator state (optional), so data order resumes exactly;
  `meta`  — JSON (stage, config name, metrics at save time).

A step that does not restore (truncated or deleted files after a crash or a full disk)
is not fatal while an older one does: `restore` warns naming the bad step, moves it aside
to `<directory>.corrupt/<step>` (so the replayed steps can be saved again) and restores
the newest step that works; only when none does it raises `CheckpointRestoreError`.
A save that fails on the filesystem (a full disk, a quota, a read-only mount), in the
call or later in orbax's async thread, surfaces once as `CheckpointWriteError` (an
OSError: one line at the CLI) naming the directory and its free space.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from liveinterp.common import reporting
from liveinterp.common import sharding as sharding_lib


def _grain_args():
  from grain import checkpoint as grain_ckpt  # optional dependency of the data path
  return grain_ckpt.CheckpointSave, grain_ckpt.CheckpointRestore


class CheckpointRestoreError(RuntimeError):
  """No checkpoint step in a directory restores; the message lists each step's error."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (full disk, quota, read-only); one line at the CLI."""


def _os_error_in(e: BaseException) -> OSError | None:
  """The first OSError in `e`'s cause/context chain (orbax wraps them), or None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and not isinstance(e, CheckpointWriteError):
      return e
    e = e.__cause__ or e.__context__
  return None


def _free_space(directory: str) -> str:
  d = directory
  while d and not os.path.exists(d):
    d = os.path.dirname(d)
  try:
    free = shutil.disk_usage(d or "/").free
  except OSError:
    return "free space unknown"
  return f"{free / 2**20:.1f} MiB free"


def _short(e: BaseException, n: int = 160) -> str:
  msg = " ".join(str(e).split())
  return f"{type(e).__name__}: {msg[:n]}{'...' if len(msg) > n else ''}"


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
    self._write_failed = False
    self._saving_step: int | None = None

  @contextlib.contextmanager
  def _writing(self, what: str):
    """Turns a filesystem error of a save (now or from the async thread) into one
    CheckpointWriteError; after one, later waits do not raise it again."""
    try:
      yield
    except CheckpointWriteError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      os_err = _os_error_in(e)
      if os_err is None:
        raise
      self._write_failed = True
      reason = os_err.strerror or str(os_err) or type(os_err).__name__
      raise CheckpointWriteError(
          os_err.errno or errno.EIO,
          f"checkpoint {what} failed: {reason} ({_free_space(self.directory)} there); "
          f"free some space (or lower checkpoint.keep) and re-run to resume from the last "
          f"complete checkpoint", self.directory) from os_err

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
    self._saving_step = step
    with self._writing(f"save of step {step}"):
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    reporting.log("checkpoint: saving step %d to %s", step, self.directory)
    return True

  def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None):
    """Restores (state, step) into `abstract_state`'s shapes and shardings, or None.

    `data_iter`, when given, has its position restored in place.
    """
    def restore_one(s):
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        _, restore_cls = _grain_args()
        items["data"] = restore_cls(data_iter)
      return self._manager.restore(s, args=ocp.args.Composite(**items))["state"]

    if step is not None:
      out = restore_one(step)
    else:
      found = self._newest_that_restores(restore_one, set_aside=True)
      if found is None:
        return None
      step, out = found
    reporting.log("checkpoint: restored step %d from %s", step, self.directory)
    return out, step

  def _newest_that_restores(self, restore_one: Callable[[int], Any], *,
                            set_aside: bool) -> tuple[int, Any] | None:
    """(step, restore_one(step)) for the newest step that restores, or None when there
    are no steps. Bad steps are warned about (and, with `set_aside`, moved aside so the
    steps after the good one can be saved again); none restoring raises."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    bad: list[tuple[int, BaseException]] = []
    for s in steps:
      try:
        out = restore_one(s)
      except Exception as e:  # pylint: disable=broad-except
        bad.append((s, e))
        reporting.console(f"WARNING: checkpoint step {s} in {self.directory} does not "
                          f"restore ({_short(e)}); trying an older step")
        continue
      if bad:
        names = ", ".join(str(b) for b, _ in bad)
        moved = self._set_aside([b for b, _ in bad]) if set_aside else None
        reporting.console(
            f"WARNING: checkpoint step(s) {names} in {self.directory} are corrupt or "
            f"incomplete; resuming from step {s} instead"
            + (f" (the bad step(s) moved to {moved})" if moved else ""))
      return s, out
    if not bad:
      return None
    listing = "; ".join(f"step {s}: {_short(e, 120)}" for s, e in bad)
    raise CheckpointRestoreError(
        f"no checkpoint in {self.directory} restores ({listing}); remove the directory "
        f"to start over, or point at another run")

  def _set_aside(self, steps) -> str:
    """Moves step directories to `<directory>.corrupt/<step>` (process 0), then reloads."""
    dest = self.directory.rstrip("/") + ".corrupt"
    if jax.process_index() == 0:
      os.makedirs(dest, exist_ok=True)
      for s in steps:
        src = os.path.join(self.directory, str(s))
        if os.path.exists(src):
          target = os.path.join(dest, str(s))
          n = 1
          while os.path.exists(target):
            target = os.path.join(dest, f"{s}.{n}")
            n += 1
          os.replace(src, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("liveinterp_checkpoint_set_aside")
    self._manager.reload()
    return dest

  def restore_params(self, abstract_params: Any, step: int | None = None,
                     abstract_model_state: Any = None):
    """Only the `params` (and, when `abstract_model_state` is given, the non-param
    `model_state`, e.g. EMA codebooks) of a saved train state — a partial restore onto
    the shardings the abstract trees carry. The optimizer state is not read. For
    initialising a stage from another stage's run and for loading models to serve.
    Returns params, or (params, model_state) when `abstract_model_state` is given."""
    item = {"params": abstract_params}
    if abstract_model_state is not None:
      item["model_state"] = abstract_model_state
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, "sharding", None)), item)

    def restore_one(s):
      return self._manager.restore(s, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True)))

    if step is not None:
      out = restore_one(step)
    else:  # another run's directory: fall back past bad steps, but move nothing there
      found = self._newest_that_restores(restore_one, set_aside=False)
      if found is None:
        raise FileNotFoundError(f"no checkpoint in {self.directory}")
      step, out = found
    reporting.log("checkpoint: restored params of step %d from %s", step, self.directory)
    if abstract_model_state is not None:
      return out["state"]["params"], out["state"]["model_state"]
    return out["state"]["params"]

  def wait(self):
    """Waits for async saves; a filesystem error of one raises CheckpointWriteError
    (once: after a failed write this only waits)."""
    if self._write_failed:
      with contextlib.suppress(Exception):
        self._manager.wait_until_finished()
      return
    what = ("save" if self._saving_step is None else f"save of step {self._saving_step}")
    with self._writing(what):
      self._manager.wait_until_finished()

  def close(self):
    """Waits (raising a write error as `wait`) and always shuts orbax's threads down."""
    try:
      self.wait()
    finally:
      with contextlib.suppress(Exception):
        self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (for restoring onto a new mesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


# ---- restoring a model (later stages, evaluation, export, serving) -----------------------
def stage_checkpoint_dir(workdir: str, stage: str) -> str:
  """Where a stage's orbax checkpoints live: `<workdir>/<stage>/checkpoints`."""
  return os.path.join(os.path.abspath(workdir), stage, "checkpoints")


def restore_model(model_fn: Callable[[nnx.Rngs], nnx.Module], checkpoint_dir: str, *,
                  mesh: jax.sharding.Mesh | None = None, rules: Any = None,
                  step: int | None = None) -> tuple[nnx.Module, int]:
  """The one way to load a trained model: `(model, step)` from `checkpoint_dir`.

  Reads the `state` item written by `Checkpointer.save` (a train state) partially: the
  `params` and the non-param model state (`model_state`, e.g. the codec's EMA codebook
  statistics); neither the optimizer state nor the step counter is read. `model_fn`
  builds the model the checkpoint was trained as (nothing is computed: its structure
  comes from `nnx.eval_shape`). The arrays land on `mesh` (sharded by the variables'
  logical names under `rules`, the config's `logical_axis_rules`), or, when `mesh` is
  None, on this process's first device; the checkpoint may have been written on any
  mesh. `step` None = the newest step that restores (bad steps are skipped, not moved).
  Raises FileNotFoundError naming the directory when it holds no checkpoint.
  """
  directory = os.path.abspath(checkpoint_dir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints: {directory} does not exist")
  if mesh is None:
    with nnx.use_eager_sharding(False):
      abstract = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    sh_params, sh_rest = jax.tree.map(lambda _: one, params), jax.tree.map(lambda _: one, rest)
  else:
    with sharding_lib.use_mesh(mesh, sharding_lib.rules_from_config(rules or ())):
      abstract = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
      graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
      sh_params = sharding_lib.named_shardings(params, mesh)
      sh_rest = sharding_lib.named_shardings(rest, mesh)
  has_rest = bool(jax.tree.leaves(rest))

  def restore_at(s):
    return ckpt.restore_params(
        abstract_with_shardings(params, sh_params), step=s,
        abstract_model_state=abstract_with_shardings(rest, sh_rest) if has_rest else None)

  ckpt = Checkpointer(directory)
  try:
    if step is None:  # the newest step that restores, and which one it was
      found = ckpt._newest_that_restores(restore_at, set_aside=False)  # pylint: disable=protected-access
      if found is None:
        raise FileNotFoundError(f"no checkpoints in {directory}")
      step, out = found
    else:
      out = restore_at(int(step))
  finally:
    ckpt.close()
  params, rest = out if has_rest else (out, rest)
  return nnx.merge(graphdef, params, rest), int(step)
