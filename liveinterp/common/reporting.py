"""Process-0 reporting: clu metric writers (TensorBoard) and a console progress line."""

from __future__ import annotations

import time
from typing import Mapping

import jax
import numpy as np
from absl import logging


def log(msg: str, *args):
  """Informational line on process 0 only (console and absl log)."""
  if jax.process_index() == 0:
    text = msg % args if args else msg
    logging.info(text)
    print(text, flush=True)


def console(msg: str):
  """Console line on process 0 only (flushes: progress shows under pipes and CI)."""
  if jax.process_index() == 0:
    print(msg, flush=True)


def create_writer(logdir: str):
  """clu writer: TensorBoard summaries + logging on process 0, nothing elsewhere."""
  from clu import metric_writers  # imports tensorflow; keep it off import paths of models
  return metric_writers.create_default_writer(
      logdir, just_logging=jax.process_index() > 0, asynchronous=True)


def create_progress_action(writer, total_steps: int, every_steps: int):
  """clu ReportProgress: writes steps/s and an ETA to the log and the writer."""
  from clu import periodic_actions
  return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                         every_steps=every_steps)


class ProgressLine:
  """`step 120/200 | train/loss 2.31 | 4.2 steps/s | ETA 0:00:19` on the console."""

  def __init__(self, total_steps: int, start_step: int = 0, prefix: str = ""):
    self.total = total_steps
    self.prefix = prefix
    self._t0 = time.perf_counter()
    self._s0 = start_step

  def format(self, step: int, metrics: Mapping[str, float]) -> str:
    dt = max(time.perf_counter() - self._t0, 1e-9)
    rate = (step - self._s0) / dt
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    ms = " | ".join(f"{k} {float(v):.4g}" for k, v in metrics.items())
    return f"{self.prefix}step {step}/{self.total} | {ms} | {rate:.2f} steps/s | ETA {eta_s}"

  def __call__(self, step: int, metrics: Mapping[str, float]):
    console(self.format(step, metrics))


