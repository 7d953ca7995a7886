"""Multi-process initialisation for every place liveinterp runs.

`detect_cluster(env, flags)` is pure (tested on fake environments); `initialize(...)`
applies it. Order of precedence:
  1. explicit coordinator flags (`--coordinator_address`, `--num_processes`, `--process_id`);
  2. `LIVEINTERP_COORDINATOR` / `LIVEINTERP_NUM_PROCESSES` / `LIVEINTERP_PROCESS_ID`
     (set by launch/local_multiprocess.sh);
  3. SLURM (`SLURM_JOB_ID` with more than one task): JAX's SLURM auto-detection;
  4. TPU VM pods (`TPU_WORKER_HOSTNAMES` / `MEGASCALE_COORDINATOR_ADDRESS`, several
     workers): JAX's TPU auto-detection;
  5. otherwise a single process: nothing to initialise.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax
from absl import logging


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
  kind: str                      # single | explicit | env | slurm | tpu
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None

  def initialize_kwargs(self) -> dict:
    kw = {}
    if self.coordinator_address is not None:
      kw["coordinator_address"] = self.coordinator_address
    if self.num_processes is not None:
      kw["num_processes"] = self.num_processes
    if self.process_id is not None:
      kw["process_id"] = self.process_id
    if self.local_device_ids is not None:
      kw["local_device_ids"] = list(self.local_device_ids)
    return kw


def _int(env: Mapping[str, str], key: str) -> int:
  try:
    return int(env[key])
  except ValueError as e:
    raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from e


def detect_cluster(env: Mapping[str, str] | None = None, coordinator_address: str | None = None,
                   num_processes: int | None = None, process_id: int | None = None) -> ClusterSpec:
  """Works out how this process joins its job, without side effects."""
  env = os.environ if env is None else env
  if coordinator_address or num_processes is not None or process_id is not None:
    missing = [n for n, v in (("coordinator_address", coordinator_address),
                              ("num_processes", num_processes),
                              ("process_id", process_id)) if v is None]
    if missing:
      raise ValueError(f"explicit distributed set-up needs all of coordinator_address, "
                       f"num_processes, process_id; missing {missing}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id={process_id} not in [0, num_processes={num_processes})")
    return ClusterSpec("explicit", coordinator_address, num_processes, process_id)
  if "LIVEINTERP_COORDINATOR" in env:
    n, i = _int(env, "LIVEINTERP_NUM_PROCESSES"), _int(env, "LIVEINTERP_PROCESS_ID")
    if not 0 <= i < n:
      raise ValueError(f"LIVEINTERP_PROCESS_ID={i} not in [0, LIVEINTERP_NUM_PROCESSES={n})")
    return ClusterSpec("env", env["LIVEINTERP_COORDINATOR"], n, i)
  if "SLURM_JOB_ID" in env and "SLURM_NTASKS" in env and _int(env, "SLURM_NTASKS") > 1:
    return ClusterSpec("slurm")
  workers = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  if len(workers) > 1 or "MEGASCALE_COORDINATOR_ADDRESS" in env:
    return ClusterSpec("tpu")
  return ClusterSpec("single")


_INITIALIZED = False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, cpu_devices: int | None = None) -> ClusterSpec:
  """Joins the job described by flags/environment. Call before any other JAX call.

  `cpu_devices` (tests, laptops) asks for that many CPU devices in this process.
  """
  global _INITIALIZED
  if cpu_devices:
    jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  spec = detect_cluster(None, coordinator_address, num_processes, process_id)
  if spec.kind != "single" and not _INITIALIZED:
    jax.distributed.initialize(**spec.initialize_kwargs())
    _INITIALIZED = True
  logging.info("distributed: %s; process %d of %d; %d local / %d global devices", spec.kind,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return spec


def is_main_process() -> bool:
  return jax.process_index() == 0
