"""The stage loop shared by every training stage.

A `Stage` says what to train (model, loss, data); `run` does everything else the same way
for all of them: validate config, mesh, sharded state (fresh or restored), compile once,
step loop with a progress line, clu/TensorBoard metrics, orbax checkpoints (with data
iterator state), non-finite steps skipped, SIGTERM → save and exit cleanly.

Resuming (after a kill -9, or from an older step when the latest checkpoint is corrupt:
`checkpointing.Checkpointer.restore`) replays the steps after the restored checkpoint.
Their metrics are written once: before the first step, process 0 drops the rows with
step > the restored step from `metrics.jsonl` and the events with step > it from the
TensorBoard event files already in `tensorboard/` (earlier rows and events are kept as
they are); the resumed run then writes a new event file as usual, so TensorBoard and
`metrics.jsonl` hold one value per step.

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
import glob
import io
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
from liveinterp.common import files, memory, reporting, sharding
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
  # Before the first step: will it fit? (issue #12; before, the OS killed it silently)
  try:
    mem = memory.check_step(compiled, config.train, what=stage.name)
  except memory.MemoryEstimateError:
    ckpt.close()
    raise
  reporting.console(memory.summary(mem, stage.name,
                                   checked=config.train.get("memory_check", True)))

  if jax.process_index() == 0:
    _drop_metrics_after(workdir, start)
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
        writer.write_scalars(step, dict(last))  # async writer: it reads the dict later
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
          writer.write_scalars(step, dict(ev))
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
    last_checkpoint = close_outputs(ckpt, writer)
  last.update(stage.info)
  return finish_result(last, name=stage.name, step=step, total=total,
                       steps_per_second=(step - s_loop) / max(
                           time.perf_counter() - t_loop, 1e-9),
                       stopped=stopped, last_checkpoint=last_checkpoint, guard=guard,
                       workdir=workdir, learning_rate=config.train.learning_rate)


def close_outputs(ckpt, writer) -> int | None:
  """Ends a run's outputs: waits for pending checkpoint saves (a failed async save, e.g.
  a full disk, raises here once, in one line), always stops orbax's threads and flushes
  the metrics writer. Returns the last saved step."""
  try:
    ckpt.wait()
    return ckpt.latest_step
  finally:
    ckpt.close()
    writer.flush()


def finish_result(last: dict, *, name: str, step: int, total: int,
                  steps_per_second: float, stopped: str | None,
                  last_checkpoint: int | None, guard: _DivergenceGuard, workdir: str,
                  learning_rate: float) -> dict:
  """The run's result (`run`'s docstring: step, speed, how it stopped) and the console
  line that explains a stop (diverged, preempted). Shared by every trainer."""
  last["steps_per_second"] = steps_per_second
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
        f"[{name}] STOPPED at step {step}: training diverged: {guard.reason}; a step "
        f"is skipped when its loss, gradients or updated parameters are NaN/inf. No "
        f"checkpoint was written at the stop; {saved}. Try a lower train.learning_rate "
        f"(now {learning_rate:g}) or train.grad_clip, and check the data for "
        f"bad examples. Exit code {EXIT_DIVERGED}.")
  elif stopped == "preempted":
    reporting.console(
        f"[{name}] preempted at step {step}/{total}: checkpoint saved; re-run the "
        f"same command to resume. Exit code {EXIT_PREEMPTED}.")
  return last


def _drop_metrics_after(workdir: str, step: int):
  """Drops what an earlier run of this workdir logged for steps after `step` (the
  checkpoint this run resumes from): rows of `metrics.jsonl` (and unreadable lines, e.g.
  one cut by a kill -9) and TensorBoard events. Files are rewritten only when something
  is dropped (atomically)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    keep, dropped = [], 0
    with open(path) as f:
      for line in f:
        try:
          row_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
          dropped += 1
          continue
        if row_step <= step:
          keep.append(line if line.endswith("\n") else line + "\n")
        else:
          dropped += 1
    if dropped:
      files.write_atomic(path, "".join(keep))
      reporting.console(f"metrics: dropped {dropped} row(s) after step {step} from {path} "
                        f"(those steps are replayed from the checkpoint)")
  for events in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    _drop_events_after(events, step)


def _drop_events_after(path: str, step: int):
  """Rewrites a TensorBoard event file without the summaries of steps after `step`."""
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.summary.writer import record_writer  # pylint: disable=g-import-not-at-top
  records, dropped = [], 0
  try:
    for raw in event_file_loader.RawEventFileLoader(path).Load():
      ev = event_pb2.Event.FromString(raw)
      if ev.step > step and ev.HasField("summary"):
        dropped += 1
      else:
        records.append(raw)
  except Exception as e:  # pylint: disable=broad-except
    # A truncated last record (kill -9 mid-write) ends the file; keep what was read.
    reporting.console(f"WARNING: {path}: read stopped at a bad record ({type(e).__name__})")
    dropped += 1
  if not dropped:
    return
  buf = io.BytesIO()
  w = record_writer.RecordWriter(buf)
  for raw in records:
    w.write(raw)
  w.flush()
  files.write_atomic(path, buf.getvalue())


def _refuse_diverged(run_dir: str):
  """A run that stopped as diverged does not hand its weights to another stage."""
  path = os.path.join(run_dir, "result.json")
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f).get("stopped") == "diverged":
        raise RuntimeError(f"train.init_from={run_dir!r}: that run stopped as diverged "
                           f"({path}); retrain it (e.g. with a lower learning rate) first")
