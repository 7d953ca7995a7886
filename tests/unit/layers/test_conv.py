"""CausalConv1d against a float64 numpy reference; streaming chunks == full signal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from liveinterp.layers import conv as conv_lib
from liveinterp.layers.conv import CausalConv1d

# (in, out, kernel, stride, dilation, groups)
CASES = [
    (4, 6, 3, 2, 1, 2),     # strided, grouped
    (6, 6, 5, 1, 2, 6),     # dilated depthwise
    (4, 4, 1, 2, 1, 1),     # kernel < stride: leading input of each window skipped
    (2, 3, 4, 3, 2, 1),     # stride 3, dilation 2
]


def _make(cin, cout, k, s, d, g, seed=0):
  with nnx.use_eager_sharding(False):
    conv = CausalConv1d(cin, cout, k, stride=s, dilation=d, groups=g,
                        rngs=nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg")))
  # Non-zero bias so that it is checked too.
  conv.bias[...] = jnp.linspace(-0.5, 0.5, cout)
  return conv


def _reference(x_btc, w_kio, b_o, stride, dilation, groups):
  """y[j] = b + sum_tap w[tap] . x[(j+1)*stride - 1 - (K-1-tap)*dilation] (0 before t=0)."""
  bsz, t, cin = x_btc.shape
  k, cin_g, cout = w_kio.shape
  cout_g = cout // groups
  y = np.zeros((bsz, t // stride, cout))
  for j in range(t // stride):
    last = (j + 1) * stride - 1
    for tap in range(k):
      idx = last - (k - 1 - tap) * dilation
      if idx < 0:
        continue
      for g in range(groups):
        xs = x_btc[:, idx, g * cin_g:(g + 1) * cin_g]
        y[:, j, g * cout_g:(g + 1) * cout_g] += xs @ w_kio[tap, :, g * cout_g:(g + 1) * cout_g]
  return y + b_o


@pytest.mark.parametrize("case", CASES)
def test_matches_float64_reference_and_streams(case):
  cin, cout, k, s, d, g = case
  conv = _make(*case)
  rng = np.random.default_rng(1)
  t = 6 * s * 2
  x = rng.standard_normal((2, t, cin))
  y = np.asarray(conv(jnp.asarray(x, jnp.float32)))
  ref = _reference(x, np.asarray(conv.kernel[...], np.float64),
                   np.asarray(conv.bias[...], np.float64), s, d, g)
  assert y.shape == (2, t // s, cout)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)

  # Chunk by chunk (uneven chunk lengths, all multiples of the stride) == full.
  state = conv.init_state(2)
  assert state["tail"].shape == (2, conv.tail_length, cin)
  outs, start = [], 0
  for n in (s, 3 * s, 2 * s, 6 * s):
    o, state = conv.extend_step(jnp.asarray(x[:, start:start + n], jnp.float32), state)
    assert state["tail"].shape == (2, conv.tail_length, cin)
    outs.append(np.asarray(o))
    start += n
  assert start == t
  np.testing.assert_allclose(np.concatenate(outs, 1), y, rtol=1e-6, atol=1e-6)


def test_tail_length_and_mask_alignment():
  conv = _make(2, 2, 3, 2, 1, 1)
  assert conv.tail_length == 1           # (3-1)*1 - (2-1)
  assert _make(2, 2, 1, 2, 1, 1).tail_length == 0
  assert _make(2, 2, 5, 1, 2, 2).tail_length == 8
  mask = jnp.asarray([[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(conv.output_mask(mask),
                                [[True, True, False, False], [True, True, True, True]])


def test_masked_inputs_are_ignored_and_future_does_not_leak():
  conv = _make(3, 4, 3, 1, 1, 1)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((1, 10, 3)), jnp.float32)
  y = conv(x)
  # Changing the future never changes the past.
  x2 = x.at[:, 6:].set(100.0)
  np.testing.assert_allclose(conv(x2)[:, :6], y[:, :6], atol=1e-6)
  # Masked frames behave as zeros.
  mask = jnp.arange(10)[None] != 3
  np.testing.assert_allclose(conv(x, mask), conv(x.at[:, 3].set(0.0)), atol=1e-6)
  assert not np.allclose(conv(x, mask), y)


def test_jit_streaming_and_bad_chunk_raises():
  conv = _make(4, 4, 4, 2, 1, 1)
  step = jax.jit(conv.extend_step)
  x = jnp.ones((1, 8, 4))
  y, st = step(x, conv.init_state(1))
  assert y.shape == (1, 4, 4) and st["tail"].shape == (1, 2, 4)
  with pytest.raises(ValueError, match="multiple of stride"):
    conv.extend_step(jnp.ones((1, 3, 4)), conv.init_state(1))
  with pytest.raises(ValueError, match="groups=3"):
    _make(4, 6, 3, 1, 1, 3)


def test_transposed_conv_matches_numpy_overlap_add():
  conv = conv_lib.CausalConvTranspose1d(3, 2, 5, 2, rngs=nnx.Rngs(0))
  conv.bias[...] = jnp.array([0.5, -1.0])
  x = np.random.default_rng(1).normal(size=(1, 4, 3))
  w = np.asarray(conv.kernel[...], np.float64)
  ref = np.zeros((1, (4 - 1) * 2 + 5, 2))
  for t in range(4):
    for k in range(5):
      ref[:, t * 2 + k] += x[:, t] @ w[k]
  got = np.asarray(conv(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(got, ref[:, :8] + [0.5, -1.0], rtol=1e-5, atol=1e-6)
  assert conv.init_state(1)["tail"].shape == (1, 3, 2)
  with pytest.raises(ValueError, match="stride <= kernel_size"):
    conv_lib.CausalConvTranspose1d(3, 2, 2, 3, rngs=nnx.Rngs(0))
