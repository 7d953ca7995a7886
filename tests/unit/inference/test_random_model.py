"""`loading.random_model`: the layers' own initializers in one jitted program
(init="real"), or numpy draws by parameter name (init="fill")."""

import jax
import numpy as np
import pytest
from flax import nnx

from liveinterp.inference import loading


class _Small(nnx.Module):
  """Two layers with different initializers and a non-parameter variable."""

  def __init__(self, rngs: nnx.Rngs):
    self.dense = nnx.Linear(6, 5, rngs=rngs)
    self.embed = nnx.Embed(7, 5, rngs=rngs)
    self.norm = nnx.LayerNorm(5, rngs=rngs)
    self.count = nnx.BatchStat(np.zeros((), np.int32))


def test_real_init_is_the_layers_own_initialisation():
  got = loading.random_model(_Small, seed=4, init="real")
  with nnx.use_eager_sharding(False):
    want = _Small(nnx.Rngs(4))
  for a, b in zip(jax.tree.leaves(nnx.state(got)), jax.tree.leaves(nnx.state(want))):
    # jitted vs eager: the same draws, scaled with a last-bit rounding difference
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  other = loading.random_model(_Small, seed=5, init="real")
  assert not np.array_equal(other.dense.kernel[...], got.dense.kernel[...])
  assert float(np.abs(np.asarray(got.dense.bias[...])).max()) == 0.0  # zeros init


def test_fill_init_keeps_the_structure_and_bad_init_is_named():
  got = loading.random_model(_Small, seed=4, init="fill")
  assert got.dense.kernel[...].shape == (6, 5) and int(got.count[...]) == 0
  np.testing.assert_array_equal(np.asarray(got.norm.scale[...]), 1.0)
  with pytest.raises(ValueError, match="init='bogus'"):
    loading.random_model(_Small, init="bogus")
