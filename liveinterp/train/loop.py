"""The stage loop shared by every training stage.

A `Stage` says what to train (model, loss, data); `run` does everything else the same way
for all of them: validate config, mesh, sharded state (fresh or restored), compile once,
step loop with a progress line, clu/TensorBoard metrics, orbax checkpoints (with data
iterator state), non-finite steps skipped, SIGTERM → save and exit cleanly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from liveinterp.common import checkpointing, config as config_lib, mesh as mesh_lib
from liveinterp.common import reporting, sharding
from liveinterp.train import optimizer, step as step_lib, train_state


@dataclasses.dataclass
class Stage:
  """What a stage trains.

  make_data(start_step) returns an iterator of *process-local* numpy batches (dicts of
  arrays with the local batch first) beginning at `start_step`; when the iterator has
  grain state, `data_iter` is it (then it is checkpointed and restored instead).
  """
  name: str
  model_fn: Callable[[nnx.Rngs], nnx.Module]
  loss_fn: step_lib.LossFn
  make_data: Callable[[int], Iterator[dict]]
  data_iter: Any = None
  eval_fn: Callable[[nnx.Module, int], dict] | None = None
  info: dict = dataclasses.field(default_factory=dict)  # merged into the run's result


class _StopFlag:
  def __init__(self):
    self.requested = False
    self._old = None

  def install(self):
    def handler(signum, frame):
      del frame
      reporting.console(f"signal {signum}: saving a checkpoint and stopping")
      self.requested = True
    try:
      self._old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
      self._old = None

  def restore(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def agreed(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.max(flags))


def _global_batch(local: dict, mesh, rules) -> dict:
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(
        sharding.data_sharding(mesh, x.ndim, rules), x)
  return {k: put(v) for k, v in local.items()}


def _flatten_config(c, prefix=""):
  out = {}
  for k, v in c.items():
    key = f"{prefix}{k}"
    if hasattr(v, "items"):
      out.update(_flatten_config(v, key + "."))
    elif isinstance(v, (int, float, str, bool)):
      out[key] = v
  return out


def run(config, workdir: str, stage: Stage, stop_at: int | None = None) -> dict:
  """Trains `stage` to `config.train.steps`, resuming from `workdir` if it holds a
  checkpoint. `stop_at` ends this run early at that step (with a checkpoint), as a
  preemption would. Returns the last logged metrics (floats) plus `steps_per_second`."""
  config_lib.validate(config, num_devices=jax.device_count())
  os.makedirs(workdir, exist_ok=True)
  mesh = mesh_lib.create_mesh(config.mesh)
  rules = sharding.rules_from_config(config.logical_axis_rules)
  tx = optimizer.make_optimizer(config.train)
  schedule = optimizer.learning_rate_schedule(config.train)
  total = int(config.train.steps)

  graphdef, abstract, shardings = train_state.abstract_state(stage.model_fn, tx, mesh, rules)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    keep=config.checkpoint.keep,
                                    every_steps=config.checkpoint.every_steps,
                                    async_save=config.checkpoint.async_save)
  restored = ckpt.restore(abstract, data_iter=stage.data_iter)
  if restored is not None:
    state, start = restored
    reporting.console(f"[{stage.name}] resumed from step {start} in {ckpt.directory}")
  else:
    _, state, _ = train_state.create_train_state(stage.model_fn, tx, mesh, rules,
                                                 seed=config.seed)
    start = 0
    if config.train.init_from:
      if not os.path.isdir(os.path.join(config.train.init_from, "checkpoints")):
        raise FileNotFoundError(f"train.init_from={config.train.init_from!r}: no "
                                f"checkpoints/ directory there")
      src = checkpointing.Checkpointer(os.path.join(config.train.init_from, "checkpoints"))
      try:
        params = src.restore_params(abstract.params)
      finally:
        src.close()
      state = state.replace(params=params)
      reporting.console(f"[{stage.name}] initialised params from {config.train.init_from}")
  n_params = train_state.param_count(state.params)
  reporting.console(f"[{stage.name}] {n_params:,} parameters; mesh {dict(mesh.shape)}; "
                    f"{jax.process_count()} process(es), {jax.device_count()} devices")

  data = stage.make_data(start)
  if start >= total:
    reporting.console(f"[{stage.name}] already at step {start} >= train.steps={total}")
    ckpt.close()
    return {"step": start}

  first = next(data)
  batch = _global_batch(first, mesh, rules)
  abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  step_fn = step_lib.make_train_step(graphdef, stage.loss_fn, tx, schedule)
  t0 = time.perf_counter()
  compiled, _ = step_lib.compile_step(step_fn, abstract, shardings, abstract_batch, mesh, rules)
  reporting.console(f"[{stage.name}] compiled train step in {time.perf_counter() - t0:.1f}s")

  writer = reporting.create_writer(os.path.join(workdir, "tensorboard"))
  if start == 0:
    writer.write_hparams(_flatten_config(config))
  progress = reporting.ProgressLine(total, start, prefix=f"[{stage.name}] ")
  stop = _StopFlag()
  stop.install()
  rng = jax.random.key(config.seed)
  pending: list[dict] = []
  last: dict = {}
  skipped_total = 0
  step = start
  t_loop, s_loop = time.perf_counter(), start
  try:
    while step < total:
      with sharding.use_mesh(mesh, rules):
        state, metrics = compiled(state, batch, rng)
      pending.append(metrics)
      step += 1
      log_now = step % config.train.log_every == 0 or step == total
      if log_now:
        host = jax.device_get(pending)
        last = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        skipped = int(sum(m["train/skipped"] for m in host)) if "train/skipped" in host[0] else 0
        skipped_total += skipped
        if skipped:
          reporting.console(f"[{stage.name}] step {step}: {skipped} non-finite step(s) skipped "
                            f"({skipped_total} so far)")
        last["train/skipped_total"] = skipped_total
        writer.write_scalars(step, last)
        if jax.process_index() == 0:
          with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, **last}) + "\n")
        progress(step, {k: v for k, v in last.items()
                        if k.endswith("loss") or k.endswith("accuracy")})
        pending = []
      if stage.eval_fn is not None and (step % config.train.eval_every == 0 or step == total):
        model = nnx.merge(graphdef, state.params, state.model_state)
        with sharding.use_mesh(mesh, rules):
          ev = stage.eval_fn(model, step)
        if ev:
          writer.write_scalars(step, ev)
          reporting.console(f"[{stage.name}] eval @ {step}: "
                            + " | ".join(f"{k} {v:.4g}" for k, v in ev.items()))
          last.update(ev)
      stopping = stop.agreed() or (stop_at is not None and step >= stop_at)
      meta = {"stage": stage.name, "step": step, "config": config.name}
      ckpt.save(step, state, data_iter=stage.data_iter, meta=meta,
                force=stopping or step == total)
      if stopping:
        break
      if step < total:
        batch = _global_batch(next(data), mesh, rules)
  finally:
    stop.restore()
    ckpt.close()
    writer.flush()
  elapsed = time.perf_counter() - t_loop
  last.update(stage.info)
  last["steps_per_second"] = (step - s_loop) / max(elapsed, 1e-9)
  last["step"] = step
  last["stopped_early"] = step < total
  return last
