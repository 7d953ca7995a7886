"""Device meshes from config: one code path for 1 CPU, 8 fake CPUs, N processes, a pod.

`config.mesh` holds `ici_{data,fsdp,tensor}` (within a slice) and `dcn_{...}` (across
slices, multislice); one size per group may be -1, meaning "fill with what is left".
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from liveinterp.common import axes


class MeshConfigError(ValueError):
  pass


def fill_axis_sizes(sizes: Sequence[int], total: int, prefix: str,
                    names: Sequence[str] = axes.MESH_AXES) -> list[int]:
  """Replaces one -1 in `sizes` so that their product is `total`; checks the product."""
  sizes = [int(s) for s in sizes]
  for n, s in zip(names, sizes):
    if s == 0 or s < -1:
      raise MeshConfigError(f"mesh.{prefix}_{n}={s}: must be a positive size or -1 (fill)")
  fills = [i for i, s in enumerate(sizes) if s == -1]
  if len(fills) > 1:
    raise MeshConfigError(
        f"mesh.{prefix}_*: at most one axis may be -1, got "
        + ", ".join(f"{prefix}_{names[i]}" for i in fills))
  known = math.prod(s for s in sizes if s != -1)
  if fills:
    if total % known:
      raise MeshConfigError(
          f"mesh.{prefix}_{names[fills[0]]}=-1 cannot fill: {total} devices are not "
          f"divisible by the product {known} of the other {prefix}_* sizes")
    sizes[fills[0]] = total // known
  if math.prod(sizes) != total:
    raise MeshConfigError(
        f"mesh.{prefix}_* = {dict(zip(names, sizes))} has product {math.prod(sizes)} "
        f"but there are {total} devices{' per slice' if prefix == 'ici' else ' slices'}")
  return sizes


def mesh_shape(mesh_cfg, num_devices: int, num_slices: int = 1) -> tuple[list[int], list[int]]:
  """(ici_sizes, dcn_sizes) with -1 filled, validated against the device count."""
  if num_devices % num_slices:
    raise MeshConfigError(f"{num_devices} devices do not split into {num_slices} slices")
  dcn = fill_axis_sizes([mesh_cfg[f"dcn_{a}"] for a in axes.MESH_AXES], num_slices, "dcn")
  ici = fill_axis_sizes([mesh_cfg[f"ici_{a}"] for a in axes.MESH_AXES],
                        num_devices // num_slices, "ici")
  return ici, dcn


def _num_slices(devices) -> int:
  idx = {getattr(d, "slice_index", 0) for d in devices}
  return max(1, len(idx))


def create_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the (data, fsdp, tensor) mesh with Auto axis types (logical-rule friendly).

  Multislice (`dcn_*` product > 1) uses the devices' `slice_index` on TPU; where devices
  carry no slice index (CPU/GPU processes), each process's devices are treated as a slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  dcn_product = math.prod(max(1, int(mesh_cfg[f"dcn_{a}"])) for a in axes.MESH_AXES)
  has_minus_one = any(int(mesh_cfg[f"dcn_{a}"]) == -1 for a in axes.MESH_AXES)
  if has_minus_one or dcn_product > 1:
    num_slices = _num_slices(devices)
    if num_slices == 1:
      num_slices = len({d.process_index for d in devices})
    if num_slices == 1 and not has_minus_one:
      # No slice structure to read (one CPU/GPU process): emulate `dcn_product` slices of
      # contiguous devices, so multislice meshes can be tested on fake devices.
      num_slices = dcn_product
  else:
    num_slices = 1
  ici, dcn = mesh_shape(mesh_cfg, len(devices), num_slices)
  axis_types = (AxisType.Auto,) * len(axes.MESH_AXES)
  if num_slices == 1:
    shape = tuple(i * d for i, d in zip(ici, dcn))
    if devices[0].platform == "tpu":  # physical-topology-aware order
      arr = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    else:
      # CPU/GPU: processes own contiguous blocks (row-major), so each process's
      # local batch is a contiguous slice of the global batch.
      arr = np.asarray(sorted(devices, key=lambda d: (d.process_index, d.id))).reshape(shape)
    return Mesh(arr, axes.MESH_AXES, axis_types=axis_types)
  if _num_slices(devices) == num_slices:  # real multislice (TPU): devices know their slice
    arr = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, allow_split_physical_axes=True)
  else:
    # Outer (dcn) blocks are processes (or emulated slices), inner (ici) their devices.
    by_proc = sorted(devices, key=lambda d: (d.process_index, d.id))
    blocks = np.asarray(by_proc).reshape(dcn + ici)  # [d0,d1,d2,i0,i1,i2]
    arr = blocks.transpose(0, 3, 1, 4, 2, 5).reshape([a * b for a, b in zip(dcn, ici)])
  return Mesh(arr, axes.MESH_AXES, axis_types=axis_types)
