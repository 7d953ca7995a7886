"""RLState checkpoints (liveinterp/rl/trainer.py `restore_state`): the KL controller's
armed flag is saved and restored exactly; a checkpoint written before the flag existed
(issue #13) restores, resumes armed, and is not set aside as corrupt."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from liveinterp.common import checkpointing
from liveinterp.rl import trainer

REPL = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",)),
                                  jax.sharding.PartitionSpec())


def _fields(step=7, log_beta=-2.5):
  return dict(step=jnp.int32(step), params={"w": jnp.arange(6, dtype=jnp.float32)},
              opt_state={"mu": jnp.ones((6,), jnp.float32)},
              model_state={"ema": jnp.full((2,), 3.0, jnp.float32)},
              log_beta=jnp.float32(log_beta))


def _abstract():
  a = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=REPL)  # noqa: E731
  f = jax.tree.map(a, _fields())
  return trainer.RLState(**f, kl_armed=jax.ShapeDtypeStruct((), jnp.float32, sharding=REPL))


def _save(directory, state, step):
  ckpt = checkpointing.Checkpointer(directory, async_save=False)
  try:
    ckpt.save(step, state, force=True)
  finally:
    ckpt.close()


def _restore(directory):
  ckpt = checkpointing.Checkpointer(directory, async_save=False)
  try:
    return trainer.restore_state(ckpt, _abstract())
  finally:
    ckpt.close()


def test_armed_flag_round_trips(tmp_path):
  d = str(tmp_path / "ckpt")
  assert _restore(d) is None     # nothing saved: a fresh run
  for armed, step in ((0.0, 3), (1.0, 4)):
    _save(d, trainer.RLState(**_fields(step), kl_armed=jnp.float32(armed)), step)
    state, got = _restore(d)
    assert got == step and float(state.kl_armed) == armed
    assert state.kl_armed.sharding.is_equivalent_to(REPL, 0)
    assert float(state.log_beta) == -2.5


def test_checkpoint_without_the_flag_resumes_armed(tmp_path):
  d = str(tmp_path / "ckpt")
  _save(d, trainer._RLStateV1(**_fields(5, -3.0)), 5)  # pylint: disable=protected-access
  state, step = _restore(d)
  assert step == 5 and float(state.kl_armed) == 1.0
  want = _fields(5, -3.0)
  for k, v in want.items():
    for a, b in zip(jax.tree.leaves(getattr(state, k)), jax.tree.leaves(v)):
      np.testing.assert_array_equal(a, b)
  assert isinstance(state, trainer.RLState)
  assert os.path.isdir(os.path.join(d, "5")) and not os.path.exists(d + ".corrupt")
