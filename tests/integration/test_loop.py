"""The stage loop: TensorBoard + orbax outputs, exact resume, restore onto another mesh."""

import glob
import os

import jax
import numpy as np

from configs import micro
from liveinterp.train import loop
from tests.tiny_models import TinyLM, lm_loss


def _stage():
  def make_data(start):
    step = start
    while True:
      rng = np.random.default_rng([7, step, jax.process_index()])
      ids = rng.integers(0, 32, (8, 9)).astype(np.int32)
      yield {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
      step += 1
  return loop.Stage("toy", lambda r: TinyLM(32, 16, 32, r), lm_loss, make_data)


def _cfg(steps, **mesh):
  c = micro.get_config()
  c.train.steps = steps
  c.train.warmup_steps = 1
  c.checkpoint.every_steps = 2
  c.checkpoint.async_save = False
  for k, v in mesh.items():
    c.mesh[k] = v
  return c


def _params(workdir, steps, **mesh):
  """Final params restored from the workdir's latest checkpoint (as numpy)."""
  from liveinterp.common import checkpointing, mesh as mesh_lib, sharding
  from liveinterp.train import optimizer, train_state
  c = _cfg(steps, **mesh)
  m = mesh_lib.create_mesh(c.mesh)
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  _, abstract, _ = train_state.abstract_state(_stage().model_fn, tx, m, rules)
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  state, step = ck.restore(abstract)
  ck.close()
  return step, state


def test_outputs_and_bitwise_resume(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  full = loop.run(_cfg(6), a, _stage())
  assert full["step"] == 6 and np.isfinite(full["train/loss"])
  assert glob.glob(os.path.join(a, "tensorboard", "events.out.tfevents.*"))
  assert sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(a, "checkpoints", "*"))
                if os.path.basename(p).isdigit()) == [2, 4, 6]
  part = loop.run(_cfg(6), b, _stage(), stop_at=3)  # "killed" after step 3
  assert part["step"] == 3 and part["stopped_early"]
  resumed = loop.run(_cfg(6), b, _stage())
  assert resumed["step"] == 6
  assert resumed["train/loss"] == full["train/loss"]  # same last-interval losses, bitwise
  _, sa = _params(a, 6)
  _, sb = _params(b, 6)
  for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_onto_a_different_mesh(tmp_path):
  w = str(tmp_path / "w")
  loop.run(_cfg(2, ici_data=2, ici_fsdp=2, ici_tensor=2), w, _stage())
  step8, _ = _params(w, 2, ici_data=2, ici_fsdp=2, ici_tensor=2)
  assert step8 == 2
  # The (2, 2, 2) checkpoint continues training on a (1, 8, 1) mesh.
  out = loop.run(_cfg(4, ici_data=1, ici_fsdp=8, ici_tensor=1), w, _stage())
  assert out["step"] == 4 and np.isfinite(out["train/loss"])
  step, s = _params(w, 4, ici_data=1, ici_fsdp=8, ici_tensor=1)
  assert step == 4
  k = s.params["up"]["kernel"][...]
  assert k.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)


def test_init_from_another_run(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  loop.run(_cfg(4), a, _stage())
  c = _cfg(1)
  c.train.init_from = a
  c.train.learning_rate = 1e-12
  c.train.weight_decay = 0.0
  loop.run(c, b, _stage())
  _, sa = _params(a, 4)
  _, sb = _params(b, 1)
  for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  c.train.init_from = str(tmp_path / "nope")
  import pytest
  with pytest.raises(FileNotFoundError, match="nope"):
    loop.run(c, str(tmp_path / "c"), _stage())
