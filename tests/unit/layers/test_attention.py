"""Attention core against a float64 numpy reference (GQA, masks, fully-masked rows)."""

import numpy as np
import jax.numpy as jnp

from liveinterp.layers import attention


def _ref(q, k, v, mask):
  b, t, h, d = q.shape
  g = h // k.shape[2]
  out = np.zeros((b, t, h, d))
  for bi in range(b):
    for hi in range(h):
      kk, vv = k[bi, :, hi // g], v[bi, :, hi // g]
      logits = q[bi, :, hi] @ kk.T / np.sqrt(d)
      m = mask[bi, hi]
      logits = np.where(m, logits, -np.inf)
      mx = np.max(np.where(m, logits, -1e300), axis=-1, keepdims=True)
      p = np.where(m, np.exp(logits - mx), 0.0)
      den = p.sum(-1, keepdims=True)
      p = np.divide(p, den, out=np.zeros_like(p), where=den > 0)
      out[bi, :, hi] = p @ vv
  return out


def test_gqa_attention_matches_float64_reference():
  rng = np.random.default_rng(0)
  b, t, s, h, kh, d = 2, 5, 7, 4, 2, 8
  q, k, v = (rng.standard_normal(sh) for sh in [(b, t, h, d), (b, s, kh, d), (b, s, kh, d)])
  mask = rng.random((b, h, t, s)) > 0.3
  mask[0, 1, 2] = False  # a fully masked row must give zeros
  got = attention.dot_product_attention(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32),
                                        jnp.asarray(v, jnp.float32), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), _ref(q, k, v, mask), atol=1e-5)
  assert np.all(np.asarray(got)[0, 2, 1] == 0)


def test_causal_mask_offset():
  m = np.asarray(attention.causal_mask(2, 4, offset=2))
  np.testing.assert_array_equal(m, [[1, 1, 1, 0], [1, 1, 1, 1]])
