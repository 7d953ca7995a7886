"""Adapter: frame stacking + MLP against numpy; masks; per-chunk streaming == full."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import micro
from liveinterp.models.adapter import Adapter


def _make(cfg=None, **kw):
  with nnx.use_eager_sharding(False):
    rngs = nnx.Rngs(jax.random.key(0, impl="unsafe_rbg"))  # cheap init compile on CPU
    if cfg is not None:
      return Adapter.from_config(cfg, rngs=rngs)
    return Adapter(rngs=rngs, **kw)


@nnx.jit
def _run(ad, x, mask=None):
  """One compiled call per shape (eager op-by-op dispatch is slow on a busy CPU)."""
  return ad(x, mask)


def _gelu(x):
  # tanh approximation, as jax.nn.gelu's default.
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def test_shapes_and_numpy_reference():
  c = micro.get_config()
  ad = _make(c)
  k, d_in, d_out = c.adapter.stack, c.encoder.d_model, c.llm.d_model
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 8, d_in))
  y, m = _run(ad, jnp.asarray(x, jnp.float32))
  assert y.shape == (3, 8 // k, d_out) and y.dtype == jnp.float32 and bool(m.all())
  w1 = np.asarray(ad.up.kernel[...], np.float64).reshape(k * d_in, -1)
  w2 = np.asarray(ad.down.kernel[...], np.float64)
  ref = _gelu(x.reshape(3, 8 // k, k * d_in) @ w1) @ w2
  if c.adapter.out_norm:  # RMSNorm to token-embedding scale (scale 1 at init)
    ref = ref / np.sqrt(np.mean(ref ** 2, axis=-1, keepdims=True) + 1e-6)
    ref = ref * np.asarray(ad.norm.scale[...], np.float64)
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-5)


def test_masks_partial_groups_and_bf16():
  ad = _make(d_in=4, d_out=6, stack=3)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 7, 4)), jnp.float32)
  mask = jnp.arange(7)[None] < jnp.asarray([[7], [4]])
  y, m = _run(ad, x, mask)
  assert y.shape == (2, 3, 6)
  np.testing.assert_array_equal(np.asarray(m), [[True, True, True], [True, True, False]])
  # Group 1 of row 1 holds frames 3..5 with only frame 3 valid: frames 4, 5 act as zeros.
  x_zeroed = x.at[1, 4:].set(0.0)
  y2, _ = _run(ad, x_zeroed)
  np.testing.assert_allclose(np.asarray(y[1, :2]), np.asarray(y2[1, :2]), atol=1e-6)
  assert float(jnp.abs(y[1, 2]).max()) == 0.0
  # Trailing partial group of row 0 (frame 6 only) equals stacking [x6, 0, 0].
  y3, _ = _run(ad, jnp.concatenate([x[:1, 6:], jnp.zeros((1, 2, 4))], 1))
  np.testing.assert_allclose(np.asarray(y[0, 2]), np.asarray(y3[0, 0]), atol=1e-6)

  # Same parameters, bf16 compute.
  with nnx.use_eager_sharding(False):
    graphdef16 = nnx.split(nnx.eval_shape(
        lambda: Adapter(4, 6, 3, dtype="bfloat16", rngs=nnx.Rngs(0))))[0]
  ad16 = nnx.merge(graphdef16, nnx.state(ad))
  assert ad16.up.kernel[...].dtype == jnp.float32
  y16, _ = _run(ad16, x, mask)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y), atol=0.1)
  with pytest.raises(ValueError, match="adapter.stack"):
    _make(d_in=4, d_out=6, stack=0)


def test_per_chunk_streaming_equals_full():
  c = micro.get_config()
  ad = _make(c)
  frames_per_chunk = c.stream.chunk_ms // (c.audio.hop_ms * c.encoder.subsample)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3 * frames_per_chunk,
                                                            c.encoder.d_model)), jnp.float32)
  full, _ = ad(x)
  step = jax.jit(lambda f: ad(f)[0])
  parts = [step(x[:, i * frames_per_chunk:(i + 1) * frames_per_chunk]) for i in range(3)]
  np.testing.assert_allclose(np.asarray(jnp.concatenate(parts, 1)), np.asarray(full),
                             atol=1e-6)
