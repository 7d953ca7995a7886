"""Meshes from config and activation sharding through shard_logical."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from configs import base
from liveinterp.common import mesh as mesh_lib
from liveinterp.common import sharding


def _mesh_cfg(**kw):
  c = base.get_config().mesh
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.mark.parametrize("kw,shape", [
    (dict(ici_data=-1, ici_fsdp=1, ici_tensor=1), (8, 1, 1)),
    (dict(ici_data=2, ici_fsdp=2, ici_tensor=2), (2, 2, 2)),
    (dict(ici_data=1, ici_fsdp=8, ici_tensor=1), (1, 8, 1)),
    (dict(ici_data=1, ici_fsdp=-1, ici_tensor=1), (1, 8, 1)),
])
def test_mesh_shapes(kw, shape):
  m = mesh_lib.create_mesh(_mesh_cfg(**kw))
  assert tuple(m.shape.values()) == shape
  assert m.axis_names == ("data", "fsdp", "tensor")
  assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)


def test_mesh_multislice_over_processes_emulated():
  # 8 devices as 2 "slices" (dcn_data=2) of 4: data axis spans slices.
  m = mesh_lib.create_mesh(_mesh_cfg(dcn_data=2, ici_data=1, ici_fsdp=-1))
  assert tuple(m.shape.values()) == (2, 4, 1)


@pytest.mark.parametrize("kw,msg", [
    (dict(ici_data=3, ici_fsdp=1, ici_tensor=1), "product 3 but there are 8"),
    (dict(ici_data=-1, ici_fsdp=-1), "at most one axis may be -1"),
    (dict(ici_data=3, ici_fsdp=-1), "not divisible"),
    (dict(ici_tensor=0), "mesh.ici_tensor=0"),
])
def test_mesh_errors_name_the_field(kw, msg):
  with pytest.raises(mesh_lib.MeshConfigError, match=msg):
    mesh_lib.create_mesh(_mesh_cfg(**kw))


def test_shard_logical_puts_expected_spec():
  c = base.get_config()
  rules = sharding.rules_from_config(c.logical_axis_rules)
  m = mesh_lib.create_mesh(_mesh_cfg(ici_data=2, ici_fsdp=2, ici_tensor=2))
  x = jnp.ones((8, 4, 16))

  @jax.jit
  def f(x):
    return sharding.shard_logical(x * 2, ("activation_batch", "activation_length",
                                          "activation_mlp"))

  with sharding.use_mesh(m, rules):
    y = f(x)
  assert y.sharding.spec == P(("data", "fsdp"), None, "tensor")
  assert len(y.addressable_shards) == 8
  assert y.addressable_shards[0].data.shape == (2, 4, 8)


def test_logical_to_spec_drops_reused_and_size_one_axes():
  rules = (("a", ("data", "fsdp")), ("b", "fsdp"), ("c", "tensor"))
  assert sharding.logical_to_spec(("a", "b", "c"), rules) == P(("data", "fsdp"), None, "tensor")
  sizes = {"data": 1, "fsdp": 4, "tensor": 2}
  assert sharding.logical_to_spec(("a", "c"), rules, sizes) == P("fsdp", "tensor")


def test_shard_logical_is_noop_without_mesh_and_checks_rank():
  x = jnp.ones((2, 3))
  assert sharding.shard_logical(x, ("activation_batch", None)) is x
  with pytest.raises(ValueError, match="rank 2"):
    sharding.shard_logical(x, ("activation_batch",))
