"""Multi-process sanity check: mesh over all processes, psum and a sharded matmul vs numpy.

Run under any launcher, e.g. `bash launch/local_multiprocess.sh 2 python -m
liveinterp.common.distributed_check --cpu_devices=2`. Each process prints one JSON line.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import base
from liveinterp.common import distributed, mesh as mesh_lib

_F: dict = {}


def _define_flags():
  """Flags only when run as a script: importing this module next to another CLI (e.g.
  liveinterp.recipe, which also has --cpu_devices) must not collide in absl's registry."""
  _F["cpu_devices"] = flags.DEFINE_integer("cpu_devices", 0,
                                           "CPU devices per process (0 = default)")
  _F["dcn_data"] = flags.DEFINE_integer("dcn_data", 1, "slices along data (1 = single slice)")


def run_checks(dcn_data: int = 1) -> dict:
  c = base.get_config().mesh
  c.dcn_data = dcn_data
  c.ici_data, c.ici_fsdp, c.ici_tensor = 1, -1, 1
  mesh = mesh_lib.create_mesh(c)
  n = jax.device_count()
  flat = NamedSharding(mesh, P(("data", "fsdp", "tensor")))

  # psum over every device of every process: each device holds its global index + 1.
  vals = np.arange(1, n + 1, dtype=np.float32)
  x = jax.make_array_from_callback((n,), flat, lambda idx: vals[idx])
  total = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, ("data", "fsdp", "tensor")),
                                mesh=mesh, in_specs=P(("data", "fsdp", "tensor")),
                                out_specs=P()))(x)

  # Sharded matmul: A rows over all devices, B replicated; compare with numpy.
  rng = np.random.default_rng(0)
  a = rng.standard_normal((4 * n, 8)).astype(np.float32)
  b = rng.standard_normal((8, 3)).astype(np.float32)
  a_sh = jax.make_array_from_callback(a.shape, NamedSharding(mesh, P(("data", "fsdp"), None)),
                                      lambda idx: a[idx])
  b_sh = jax.make_array_from_callback(b.shape, NamedSharding(mesh, P()), lambda idx: b[idx])
  prod = jax.jit(lambda a, b: jnp.sum(a @ b, axis=0),
                 out_shardings=NamedSharding(mesh, P()))(a_sh, b_sh)
  prod = np.asarray(jax.device_get(prod.addressable_data(0)))
  return {
      "process": jax.process_index(), "processes": jax.process_count(),
      "devices": n, "local_devices": jax.local_device_count(),
      "mesh": dict(mesh.shape),
      "psum": np.asarray(total.addressable_data(0)).item(),
      "psum_expected": float(vals.sum()),
      "matmul_max_err": float(np.max(np.abs(prod - (a @ b).sum(0)))),
  }


def main(argv):
  del argv
  distributed.initialize(cpu_devices=_F["cpu_devices"].value)
  print(json.dumps(run_checks(_F["dcn_data"].value)), flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
