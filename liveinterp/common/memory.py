"""Will a compiled step fit? Its memory, estimated before the first step (issue #12).

A config that needs more memory than the machine has used to be killed by the OS with no
message (`data.seq_len=4096` on a small config: OOM-killed at 17 GB). The trainers now
read XLA's own buffer assignment of the compiled step (`Compiled.memory_analysis()`, per
device) and compare it with what the machine offers, before any step runs:

    compiled = jax.jit(step, ...).lower(...).compile()
    memory.check_fits(compiled, what="sft", devices_per_host=jax.local_device_count(),
                      limit_fraction=0.9, override_bytes=None)

- GPU/TPU: each device has its own memory, `device.memory_stats()['bytes_limit']`.
- CPU: every (fake) device of a process shares the host's RAM, so the per-device need is
  multiplied by the local device count and compared with `/proc/meminfo` MemAvailable
  (or `os.sysconf` where there is no /proc).

Like MaxText (`train_utils.py` prints the compiled step's memory), the estimate is
arguments + outputs - aliased (donated) + temporaries + generated code. It ignores the
allocator's fragmentation and what lives outside the step (data pipeline, checkpoint
copies), hence `limit_fraction` < 1. Some backends return no analysis: then the size is
unknown, the check is skipped (never a crash) and the log line says so.
"""

from __future__ import annotations

import math
import os

from liveinterp.common.cli import UserError

_FIELDS = {  # name in the result -> attribute of CompiledMemoryStats
    "argument": "argument_size_in_bytes",
    "output": "output_size_in_bytes",
    "temp": "temp_size_in_bytes",
    "generated_code": "generated_code_size_in_bytes",
    "alias": "alias_size_in_bytes",
}


class MemoryEstimateError(UserError):
  """The compiled step needs more memory than the machine has (a user error: the fix is a
  smaller batch/sequence or more devices); reported by the CLIs in one line, exit code 2."""


def compiled_bytes(compiled) -> dict:
  """Per-device bytes of a `jax.stages.Compiled`: argument, output, temp, generated_code,
  alias, `total` (argument + output - alias + temp + generated_code), `donated` (the
  bytes of the donated arguments, e.g. the train state; None when not known) and `known`.
  A backend without the analysis, or a field it lacks, gives None there (and `total`
  None, `known` False) instead of an error."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # e.g. NotImplementedError
    stats = None
  out: dict = {}
  for name, attr in _FIELDS.items():
    v = getattr(stats, attr, None) if stats is not None else None
    out[name] = int(v) if isinstance(v, (int, float)) and v >= 0 else None
  needed = ("argument", "output", "temp")
  out["known"] = all(out[k] is not None for k in needed)
  if out["known"]:
    out["total"] = (out["argument"] + out["output"] - (out["alias"] or 0) + out["temp"]
                    + (out["generated_code"] or 0))
  else:
    out["total"] = None
  out["donated"] = _donated_bytes(compiled)
  return out


def _donated_bytes(compiled) -> int | None:
  """Per-device bytes of the donated arguments (the state of a train step), from the
  compiled step's argument avals and input shardings; None when they cannot be read."""
  try:
    import jax  # pylint: disable=g-import-not-at-top
    infos = jax.tree.leaves(compiled.args_info, is_leaf=lambda x: hasattr(x, "donated"))
    # keep None leaves (an argument with no sharding of its own, e.g. the rng key)
    shardings = jax.tree.leaves(compiled.input_shardings, is_leaf=lambda x: x is None)
    if len(infos) != len(shardings):
      return None
    total = 0
    for info, s in zip(infos, shardings):
      if not info.donated:
        continue
      aval = info._aval  # pylint: disable=protected-access
      shape = s.shard_shape(aval.shape) if s is not None else aval.shape
      total += math.prod(shape) * aval.dtype.itemsize
    return total
  except Exception:  # pylint: disable=broad-except  # an estimate's detail, never fatal
    return None


def _host_available() -> tuple[int | None, str]:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024, "/proc/meminfo MemAvailable"
  except (OSError, ValueError, IndexError):
    pass
  try:
    return (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
            "os.sysconf available pages")
  except (OSError, ValueError, AttributeError):
    return None, "unknown"


def available_bytes(device) -> tuple[int | None, str]:
  """(bytes, where the number comes from) for one device: its own memory
  (`memory_stats()['bytes_limit']`, GPU/TPU) when the backend reports it, else the host's
  available RAM, shared by all local devices. (None, 'unknown') when nothing says."""
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # CPU: None; some backends raise
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.platform} memory_stats bytes_limit"
  return _host_available()


def fmt_bytes(n: float) -> str:
  """1536 -> '1.5 KiB', 17.2 * 2**30 -> '17.2 GiB'."""
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(n) >= scale:
      return f"{n / scale:.1f} {unit}"
  return f"{int(n)} B"


def _breakdown(b: dict) -> str:
  parts = []
  if b["donated"] and b["donated"] <= b["argument"]:
    parts += [f"state {fmt_bytes(b['donated'])}",
              f"batch and other inputs {fmt_bytes(b['argument'] - b['donated'])}"]
  else:
    parts.append(f"inputs {fmt_bytes(b['argument'])}")
  parts.append(f"temporaries {fmt_bytes(b['temp'])}")
  fresh = b["output"] - (b["alias"] or 0)  # outputs not written over donated inputs
  if fresh:
    parts.append(f"new outputs {fmt_bytes(fresh)}")
  if b["generated_code"]:
    parts.append(f"code {fmt_bytes(b['generated_code'])}")
  return ", ".join(parts)


def estimate(compiled, *, what: str, devices_per_host: int, limit_fraction: float = 0.9,
             override_bytes: float | None = None, device=None, step: str = "train step",
             hint: str = "lower train.batch_size or data.seq_len, or use more devices"
             ) -> dict:
  """`compiled`'s memory against the machine's, without raising (`check_fits`' docstring).

  Returns dict(compiled_bytes(...), need=bytes compared, available=usable bytes,
  source=where that came from, fraction=the share of it counted, per_host=bool,
  devices=the multiplier, fits=bool or None if unknown, message=the error text when it
  does not fit, else None)."""
  if not 0 < limit_fraction <= 1:
    raise ValueError(f"limit_fraction={limit_fraction}: must be in (0, 1]")
  b = compiled_bytes(compiled)
  if device is None:
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.local_devices()[0]
  if override_bytes:  # the user's number, used as is (no limit_fraction)
    avail, source, fraction = int(override_bytes), "train.memory_limit_gb", 1.0
    per_host = getattr(device, "platform", "cpu") == "cpu"
  else:
    avail, source = available_bytes(device)
    fraction = limit_fraction
    per_host = "memory_stats" not in source
  n = max(1, int(devices_per_host)) if per_host else 1
  usable = None if avail is None else int(avail * fraction)
  need = None if b["total"] is None else b["total"] * n
  fits = None if need is None or usable is None else need <= usable
  message = None
  if fits is False:
    shared = (f" x {n} devices sharing this host = {fmt_bytes(need)}" if n > 1 else "")
    where = "this host" if per_host else "each device"
    message = (
        f"[{what}] not enough memory: the compiled {step} needs ~{fmt_bytes(b['total'])} "
        f"per device ({_breakdown(b)}){shared} but {where} has {fmt_bytes(usable)} "
        f"available ({source if fraction == 1 else f'{source} x {fraction:g}'}): {hint} "
        f"(train.memory_check=False skips this check)")
  return dict(b, need=need, available=usable, source=source, fraction=fraction,
              per_host=per_host, devices=n, fits=fits, message=message)


def check_fits(compiled, *, what: str, devices_per_host: int, limit_fraction: float = 0.9,
               override_bytes: float | None = None, device=None, step: str = "train step",
               hint: str = "lower train.batch_size or data.seq_len, or use more devices"
               ) -> dict:
  """Raises MemoryEstimateError when `compiled` will not fit; returns `estimate`'s dict.

  `what` names the stage in the message (`[sft] ...`), `step` the compiled function and
  `hint` the fix. `override_bytes` (> 0, e.g. `train.memory_limit_gb`) replaces what the
  machine reports, used as is. The memory is per device when the device reports its own
  (GPU/TPU); otherwise it is the host's RAM and the need is per device x
  `devices_per_host`. Only `limit_fraction` of what the machine reports is counted as
  usable. An unknown size (no analysis on this backend) passes."""
  result = estimate(compiled, what=what, devices_per_host=devices_per_host,
                    limit_fraction=limit_fraction, override_bytes=override_bytes,
                    device=device, step=step, hint=hint)
  if result["message"]:
    raise MemoryEstimateError(result["message"])
  return result


# Share of the machine's reported memory a step may plan on: the rest is for what lives
# outside the step (input pipeline, checkpoint copies, allocator slack).
LIMIT_FRACTION = 0.9


def check_step(compiled, train_cfg, *, what: str, step: str = "train step",
               hint: str = "lower train.batch_size or data.seq_len, or use more devices"
               ) -> dict:
  """The trainers' check, driven by `train.memory_check` / `train.memory_limit_gb`:
  `check_fits` with this process's local device count. With several processes they all
  raise when one of them does not fit (no process is left waiting in a collective). With
  the check off the estimate is only returned (for the log line)."""
  import jax  # pylint: disable=g-import-not-at-top
  limit_gb = float(train_cfg.get("memory_limit_gb", 0.0))
  result = estimate(compiled, what=what, devices_per_host=jax.local_device_count(),
                    limit_fraction=LIMIT_FRACTION,
                    override_bytes=limit_gb * 2**30 if limit_gb > 0 else None,
                    step=step, hint=hint)
  if not train_cfg.get("memory_check", True):
    return result
  message = result["message"]
  if jax.process_count() > 1:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    bad = np.asarray(multihost_utils.process_allgather(np.int32(message is not None)))
    if message is None and bad.any():
      message = (f"[{what}] not enough memory on process(es) "
                 f"{np.flatnonzero(bad).tolist()} (their message says how much): {hint}")
  if message:
    raise MemoryEstimateError(message)
  return result


def summary(result: dict, what: str, step: str = "step", checked: bool = True) -> str:
  """The one console line of an estimate: `[sft] step memory ~X MiB/device of Y
  available (source)`; `checked=False` adds that the check is off."""
  off = "" if checked else "; train.memory_check=False"
  if result.get("total") is None:
    return f"[{what}] {step} memory: unknown on this backend (not checked{off})"
  avail = "unknown" if result["available"] is None else fmt_bytes(result["available"])
  shared = f" x {result['devices']} devices" if result.get("devices", 1) > 1 else ""
  fraction = result.get("fraction", 1.0)
  source = result["source"] if fraction == 1 else f"{result['source']} x {fraction:g}"
  return (f"[{what}] {step} memory ~{fmt_bytes(result['total'])}/device{shared} of "
          f"{avail} available ({source}{off})")
