"""Pinning a benchmark process to a few CPU cores (imports nothing from JAX: it must run
before JAX starts its thread pools, so the XLA flags it sets take effect)."""

from __future__ import annotations

import os


def pin_cores(cores: int) -> list[int]:
  """Restricts this process to its last `cores` CPUs (all when `cores` <= 0 or >= the
  available count); with one core, XLA's CPU runtime is made single-threaded too.
  Returns the CPUs the process may run on."""
  avail = sorted(os.sched_getaffinity(0))
  if cores <= 0 or cores >= len(avail):
    return avail
  chosen = avail[-cores:]
  os.sched_setaffinity(0, chosen)
  if cores == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
  return chosen
