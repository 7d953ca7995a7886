"""The stage loop shared by every training stage.

A `Stage` says what to train (model, loss, data); `run` does everything else the same way
for all of them: validate config, mesh, sharded state (fresh or restored), compile once,
step loop with a progress line, clu/TensorBoard metrics, orbax checkpoints (with data
iterator state), non-finite steps skipped, SIGTERM → save and exit cleanly.

How a run ends is in its result (`result["stopped"]`, absent when it finished) and maps to
the exit code of `python -m liveinterp.train` and the recipe (`exit_code`):
  0   finished (or stopped where `stop_at` asked);
  3   EXIT_DIVERGED: too many skipped (non-finite) steps (`train.max_consecutive_skipped`,
      `train.max_skipped_fraction`); nothing new was saved, re-running resumes from the
      last checkpoint (lower the learning rate first);
  75  EXIT_PREEMPTED (sysexits EX_TEMPFAIL): stopped by SIGTERM after saving a checkpoint;
      re-run the same command to resume (schedulers: requeue on 75).
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

from data_pipelines import pipelines
from liveinterp.common import checkpointing, config as config_lib, mesh as mesh_lib
from liveinterp.common import reporting, sharding
from liveinterp.train import optimizer, step as step_lib, train_state

EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, retry"
_SKIPPED = "train/skipped"


def exit_code(result: dict) -> int:
  """The process exit code for a run's result (module docstring)."""
  return {"diverged": EXIT_DIVERGED, "preempted": EXIT_PREEMPTED}.get(
      result.get("stopped"), 0)


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


class _DivergenceGuard:
  """Counts skipped (non-finite) steps in order and says when the run has diverged:
  `max_consecutive_skipped` in a row (0: no limit), or more than `max_skipped_fraction`
  of the steps run in this invocation once `skipped_fraction_after` have run (or, for a
  run shorter than that, all its `steps`: a short run is judged at its end)."""

  def __init__(self, train_cfg):
    self.max_run = int(train_cfg.max_consecutive_skipped)
    self.max_fraction = float(train_cfg.max_skipped_fraction)
    self.after = min(int(train_cfg.skipped_fraction_after), int(train_cfg.steps))
    self.steps = self.skipped = self.run = 0
    self.reason: str | None = None

  def update(self, flags) -> bool:
    """Feeds per-step skipped flags (oldest first); True once diverged."""
    for f in flags:
      if self.reason:
        break
      self.steps += 1
      self.skipped += int(f)
      self.run = self.run + 1 if int(f) else 0
      if self.max_run and self.run >= self.max_run:
        self.reason = (f"{self.run} steps in a row were skipped "
                       f"(train.max_consecutive_skipped={self.max_run})")
      elif self.steps >= self.after and self.skipped > self.max_fraction * self.steps:
        self.reason = (f"{self.skipped} of {self.steps} steps were skipped (more than "
                       f"train.max_skipped_fraction={self.max_fraction:g})")
    return self.reason is not None


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
  preemption would. Returns the last logged metrics (floats) plus `steps_per_second`,
  `step`, `stopped_early` and, when it did not finish, `stopped` ("diverged",
  "preempted" or "stop_at"; see `exit_code`) with the skipped-step counts."""
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
    if config.train.init_from:
      if not os.path.isdir(os.path.join(config.train.init_from, "checkpoints")):
        raise FileNotFoundError(f"train.init_from={config.train.init_from!r}: no "
                                f"checkpoints/ directory there")
      _refuse_diverged(config.train.init_from)
    _, state, _ = train_state.create_train_state(stage.model_fn, tx, mesh, rules,
                                                 seed=config.seed)
    start = 0
    if config.train.init_from:
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
  batch = pipelines.make_global_batch(first, mesh, rules)
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
  guard = _DivergenceGuard(config.train)
  unchecked: list = []  # skipped flags (on device) not yet fed to the guard
  stopped = None
  step = start
  t_loop, s_loop = time.perf_counter(), start
  try:
    while step < total:
      with sharding.use_mesh(mesh, rules):
        state, metrics = compiled(state, batch, rng)
      pending.append(metrics)
      if _SKIPPED in metrics:
        unchecked.append(metrics[_SKIPPED])
      step += 1
      log_now = step % config.train.log_every == 0 or step == total
      eval_now = stage.eval_fn is not None and (step % config.train.eval_every == 0
                                                or step == total)
      preempted = stop.agreed()
      stopping = preempted or (stop_at is not None and step >= stop_at)
      save_now = stopping or step == total or step % ckpt.every_steps == 0
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
      # The flags are read back only where the host waits anyway (log, eval, checkpoint),
      # so the steps stay asynchronous; a diverged run stops before saving anything new.
      if unchecked and (log_now or eval_now or save_now):
        diverged = guard.update(jax.device_get(unchecked))
        unchecked = []
        if diverged:
          stopped = "diverged"
          break
      if eval_now:
        model = nnx.merge(graphdef, state.params, state.model_state)
        with sharding.use_mesh(mesh, rules):
          ev = stage.eval_fn(model, step)
        if ev:
          writer.write_scalars(step, ev)
          reporting.console(f"[{stage.name}] eval @ {step}: "
                            + " | ".join(f"{k} {v:.4g}" for k, v in ev.items()))
          last.update(ev)
      meta = {"stage": stage.name, "step": step, "config": config.name}
      ckpt.save(step, state, data_iter=stage.data_iter, meta=meta,
                force=stopping or step == total)
      if stopping:
        if step < total:
          stopped = "preempted" if preempted else "stop_at"
        break
      if step < total:
        batch = pipelines.make_global_batch(next(data), mesh, rules)
  finally:
    stop.restore()
    ckpt.wait()
    last_checkpoint = ckpt.latest_step
    ckpt.close()
    writer.flush()
  elapsed = time.perf_counter() - t_loop
  last.update(stage.info)
  last["steps_per_second"] = (step - s_loop) / max(elapsed, 1e-9)
  last["step"] = step
  last["stopped_early"] = step < total or stopped == "diverged"
  if stopped:
    last["stopped"] = stopped
    last["last_checkpoint"] = last_checkpoint
  if stopped == "diverged":
    last.update({"stop_reason": guard.reason, "skipped_steps": guard.skipped,
                 "steps_run": guard.steps, "skipped_in_a_row": guard.run})
    saved = (f"the last one is step {last_checkpoint} (re-running resumes from it; remove "
             f"{workdir} to start over)" if last_checkpoint is not None
             else "there is none")
    reporting.console(
        f"[{stage.name}] STOPPED at step {step}: training diverged: {guard.reason}; a step "
        f"is skipped when its loss, gradients or updated parameters are NaN/inf. No "
        f"checkpoint was written at the stop; {saved}. Try a lower train.learning_rate "
        f"(now {config.train.learning_rate:g}) or train.grad_clip, and check the data for "
        f"bad examples. Exit code {EXIT_DIVERGED}.")
  elif stopped == "preempted":
    reporting.console(
        f"[{stage.name}] preempted at step {step}/{total}: checkpoint saved; re-run the "
        f"same command to resume. Exit code {EXIT_PREEMPTED}.")
  return last


def _refuse_diverged(run_dir: str):
  """A run that stopped as diverged does not hand its weights to another stage."""
  path = os.path.join(run_dir, "result.json")
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f).get("stopped") == "diverged":
        raise RuntimeError(f"train.init_from={run_dir!r}: that run stopped as diverged "
                           f"({path}); retrain it (e.g. with a lower learning rate) first")
