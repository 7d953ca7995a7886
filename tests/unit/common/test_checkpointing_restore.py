"""`checkpointing.restore_model`, the one restore function (issue #11): params AND the
non-param model state of a saved train state, onto one device or onto a mesh by logical
names, the newest step or a chosen one, a clear error when there is nothing."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType

from liveinterp.common import checkpointing
from liveinterp.layers import initializers
from liveinterp.layers.quantizer import CodebookStats
from liveinterp.train import train_state

RULES = [("embed", "fsdp"), ("mlp", "tensor"), ("codebook", None)]


class Tiny(nnx.Module):
  """A Param with logical names and a non-param statistic (like the codec's EMA)."""

  def __init__(self, rngs: nnx.Rngs):
    self.w = initializers.param(rngs, nnx.initializers.normal(1.0), (4, 6), ("embed", "mlp"))
    self.b = initializers.param(rngs, nnx.initializers.zeros, (6,), ("mlp",))
    mesh = jax.sharding.get_abstract_mesh()
    eager = nnx.using_eager_sharding() and mesh is not None and not mesh.empty
    self.stats = CodebookStats(jnp.zeros((3,)), out_sharding=("codebook",),
                               eager_sharding=eager)


def _save(directory: str, step: int, seed: int) -> Tiny:
  model = Tiny(nnx.Rngs(seed))
  model.stats[...] = jnp.arange(3.0) + step                # non-param state differs per step
  _, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(1e-3)
  state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                                 opt_state=tx.init(params), model_state=rest)
  ckpt = checkpointing.Checkpointer(directory, every_steps=1, async_save=False)
  ckpt.save(step, state, force=True)
  ckpt.close()
  return model


def _equal(a: nnx.Module, b: nnx.Module):
  la, lb = jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))
  assert len(la) == len(lb) == 3
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  directory = checkpointing.stage_checkpoint_dir(workdir, "codec")
  assert directory == os.path.join(os.path.abspath(workdir), "codec", "checkpoints")
  old = _save(directory, 2, seed=1)
  new = _save(directory, 5, seed=2)
  return directory, old, new


def test_restores_params_and_model_state_onto_one_device(saved):
  directory, old, new = saved
  model, step = checkpointing.restore_model(Tiny, directory)
  assert step == 5
  _equal(model, new)
  np.testing.assert_array_equal(np.asarray(model.stats[...]), [5.0, 6.0, 7.0])
  one = jax.local_devices()[0]
  assert all(x.devices() == {one} for x in jax.tree.leaves(nnx.state(model)))
  model, step = checkpointing.restore_model(Tiny, directory, step=2)   # a chosen step
  assert step == 2
  _equal(model, old)


def test_restores_onto_a_mesh_by_logical_names(saved):
  directory, _, new = saved
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  model, step = checkpointing.restore_model(Tiny, directory, mesh=mesh, rules=RULES)
  assert step == 5
  _equal(model, new)
  assert model.w[...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert model.b[...].sharding.spec == jax.sharding.PartitionSpec("tensor")
  assert len(model.w[...].sharding.device_set) == 8


def test_newest_step_that_restores_is_used(tmp_path):
  directory = str(tmp_path / "ckpt")
  good = _save(directory, 1, seed=3)
  _save(directory, 4, seed=4)
  for root, _, files in os.walk(os.path.join(directory, "4")):   # step 4 is truncated
    for f in files:
      with open(os.path.join(root, f), "wb"):
        pass
  model, step = checkpointing.restore_model(Tiny, directory)
  assert step == 1
  _equal(model, good)
  assert os.path.isdir(os.path.join(directory, "4"))     # another run's dir: nothing moved


def test_missing_or_empty_directory_is_a_clear_error(tmp_path):
  missing = str(tmp_path / "nope" / "checkpoints")
  with pytest.raises(FileNotFoundError, match="nope"):
    checkpointing.restore_model(Tiny, missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="empty"):
    checkpointing.restore_model(Tiny, str(empty))
