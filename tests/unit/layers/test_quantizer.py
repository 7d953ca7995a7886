"""Quantizers against a float64 numpy reference: codes, RVQ residuals, STE, EMA, restarts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import micro
from liveinterp.layers import quantizer as qz


def _make(cls, dim=8, k=16, q=1, **kw):
  # RBG key: its random bits compile faster on CPU than threefry's.
  return cls(dim, k, q, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), **kw)


def _randn(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# Jitted entry points: one compile per test instead of one per eager op.
_fwd = nnx.jit(lambda m, z, mask: m(z, mask))
_upd = nnx.jit(lambda m, z, mask, key: m(z, mask, update=True, key=key))
_dec = nnx.jit(lambda m, codes: m.decode(codes))


def _np_nearest(z_nd, e_kd):
  d = ((z_nd[:, None, :] - e_kd[None]) ** 2).sum(-1)
  return d.argmin(-1)


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_vq_codes_and_decode_match_float64_reference(update):
  vq = _make(qz.VectorQuantizer, dim=8, k=16, update=update)
  z = _randn((3, 7, 8), 1)
  out = _fwd(vq, z, None)
  e = np.asarray(vq.codebooks[0].embedding[...], np.float64)
  ref = _np_nearest(np.asarray(z, np.float64).reshape(-1, 8), e).reshape(3, 7)
  assert out["codes"].shape == (3, 7, 1) and out["codes"].dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(out["codes"][..., 0]), ref)
  np.testing.assert_allclose(np.asarray(out["z_q"]), e[ref], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(_dec(vq, out["codes"])), e[ref], atol=1e-6)
  commit = ((np.asarray(z, np.float64) - e[ref]) ** 2).mean()
  np.testing.assert_allclose(float(out["commitment_loss"]), commit, rtol=1e-5)
  np.testing.assert_allclose(float(out["loss"]),
                             0.25 * commit + (commit if update == "loss" else 0.0), rtol=1e-5)


def test_product_vq_quantizes_each_slice_with_its_codebook():
  vq = _make(qz.VectorQuantizer, dim=8, k=16, q=2)
  z = _randn((2, 5, 8), 2)
  codes = np.asarray(nnx.jit(lambda m, z: m.encode(z))(vq, z))
  zn = np.asarray(z, np.float64).reshape(-1, 8)
  for q in range(2):
    e = np.asarray(vq.codebooks[q].embedding[...], np.float64)
    ref = _np_nearest(zn[:, 4 * q:4 * q + 4], e)
    np.testing.assert_array_equal(codes[..., q].reshape(-1), ref)


def test_rvq_residual_decomposition_matches_reference():
  rvq = _make(qz.ResidualVectorQuantizer, dim=6, k=32, q=3)
  z = _randn((2, 9, 6), 3)
  out = _fwd(rvq, z, None)
  res = np.asarray(z, np.float64).reshape(-1, 6)
  total = np.zeros_like(res)
  for q in range(3):
    e = np.asarray(rvq.codebooks[q].embedding[...], np.float64)
    c = _np_nearest(res, e)
    np.testing.assert_array_equal(np.asarray(out["codes"][..., q]).reshape(-1), c)
    total += e[c]
    res = res - e[c]
  np.testing.assert_allclose(np.asarray(out["z_q"]).reshape(-1, 6), total, atol=1e-5)
  np.testing.assert_allclose(np.asarray(_dec(rvq, out["codes"])).reshape(-1, 6), total,
                             atol=1e-5)
  # Each stage lowers the error: z - z_q is the last residual, smaller than z.
  assert np.linalg.norm(res) < np.linalg.norm(np.asarray(z))


@pytest.mark.parametrize("cls,q", [(qz.VectorQuantizer, 1), (qz.ResidualVectorQuantizer, 3)])
def test_straight_through_gradient_is_identity(cls, q):
  m = _make(cls, dim=4, k=8, q=q)
  z, w = _randn((2, 3, 4), 4), _randn((2, 3, 4), 5)
  g = nnx.jit(lambda m, z: jax.grad(lambda z: jnp.sum(w * m(z)["z_q"]))(z))(m, z)
  np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6)


def test_commitment_gradient_and_codebook_loss_gradient():
  vq = _make(qz.VectorQuantizer, dim=4, k=8, update="loss")
  z = _randn((2, 3, 4), 6)
  e = np.asarray(vq.codebooks[0].embedding[...], np.float64)
  c = _np_nearest(np.asarray(z, np.float64).reshape(-1, 4), e)

  @nnx.jit
  def grads_of(m, z):
    return (jax.grad(lambda z: m(z)["commitment_loss"])(z),
            nnx.grad(lambda m: m(z)["codebook_loss"])(m))

  g, grads = grads_of(vq, z)
  ref = 2 * (np.asarray(z, np.float64).reshape(-1, 4) - e[c]) / z.size
  np.testing.assert_allclose(np.asarray(g).reshape(-1, 4), ref, rtol=1e-5, atol=1e-7)
  # Codebook loss pulls used codes toward their vectors (only used rows get gradient).
  ge = np.asarray(grads["codebooks"][0]["embedding"][...])
  used = np.zeros(8, bool)
  used[c] = True
  assert np.all(ge[~used] == 0) and np.all(np.abs(ge[used]).sum(-1) > 0)


def test_mask_excludes_padding_from_losses():
  vq = _make(qz.VectorQuantizer, dim=4, k=8)
  z = _randn((2, 6, 4), 7)
  mask = jnp.array([[1] * 6, [1] * 3 + [0] * 3], jnp.float32)
  z_pad = z.at[1, 3:].set(100.0)
  a = _fwd(vq, z_pad, mask)["commitment_loss"]
  b = _fwd(vq, jnp.concatenate([z[0], z[1, :3]])[None], None)["commitment_loss"]
  np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_ema_update_follows_formula():
  decay, eps, k, d = 0.9, 1e-5, 8, 4
  vq = _make(qz.VectorQuantizer, dim=d, k=k, ema_decay=decay, epsilon=eps, dead_after=0)
  cb = vq.codebooks[0]
  e0 = np.asarray(cb.embedding[...], np.float64)
  n0 = np.asarray(cb.cluster_size[...], np.float64)
  m0 = np.asarray(cb.embed_sum[...], np.float64)
  z = _randn((2, 10, d), 8)
  mask = jnp.ones((2, 10)).at[1, 7:].set(0.0)
  out = _upd(vq, z, mask, None)
  zn = np.asarray(z, np.float64).reshape(-1, d)
  valid = np.asarray(mask).reshape(-1) > 0
  c = _np_nearest(zn, e0)
  np.testing.assert_array_equal(np.asarray(out["codes"]).reshape(-1), c)
  onehot = np.eye(k)[c] * valid[:, None]
  n = decay * n0 + (1 - decay) * onehot.sum(0)
  m = decay * m0 + (1 - decay) * onehot.T @ zn
  tot = n.sum()
  e = m / ((n + eps) / (tot + k * eps) * tot)[:, None]
  np.testing.assert_allclose(np.asarray(cb.cluster_size[...]), n, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(cb.embed_sum[...]), m, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(cb.embedding[...]), e, rtol=1e-4, atol=1e-5)
  # The output used the codebook *before* the update.
  np.testing.assert_allclose(np.asarray(out["z_q"]).reshape(-1, d), e0[c], atol=1e-5)
  # Used codes moved toward the mean of their vectors.
  for j in np.unique(c[valid]):
    target = zn[valid & (c == j)].mean(0)
    assert np.linalg.norm(e[j] - target) < np.linalg.norm(e0[j] - target)
  counts = onehot.sum(0)
  np.testing.assert_array_equal(np.asarray(cb.unused_steps[...]), (counts == 0).astype(int))


def test_ema_codebook_is_state_not_param():
  vq = _make(qz.ResidualVectorQuantizer, dim=4, k=8, q=2)
  assert len(jax.tree.leaves(nnx.state(vq, nnx.Param))) == 0
  stats = nnx.state(vq, qz.CodebookStats)
  assert len(jax.tree.leaves(stats)) == 2 * 4  # embedding, cluster_size, embed_sum, unused
  vq_loss = _make(qz.VectorQuantizer, dim=4, k=8, update="loss")
  assert len(jax.tree.leaves(nnx.state(vq_loss, nnx.Param))) == 1


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_dead_code_restart_replaces_unused_codes_with_batch_vectors(update):
  k, d = 8, 4
  vq = _make(qz.VectorQuantizer, dim=d, k=k, update=update, dead_after=2)
  cb = vq.codebooks[0]
  e0 = np.asarray(cb.embedding[...])
  # Every valid vector sits next to code 0, so codes 1..7 are never used; padding rows
  # carry a marker value that must never be picked.
  z = jnp.asarray(e0[0])[None, None] + 0.01 * _randn((2, 5, d), 9)
  mask = jnp.ones((2, 5)).at[:, 4].set(0.0)
  z = z.at[:, 4].set(1e3)
  _upd(vq, z, mask, jax.random.key(10))
  np.testing.assert_array_equal(np.asarray(cb.unused_steps[...]), [0] + [1] * 7)
  e1 = np.asarray(cb.embedding[...])
  np.testing.assert_allclose(e1[1:], e0[1:], rtol=1e-5)  # not dead yet (ema: unused rows fixed)
  _upd(vq, z, mask, jax.random.key(11))
  e2 = np.asarray(cb.embedding[...])
  valid_rows = np.asarray(z)[:, :4].reshape(-1, d)
  for j in range(1, k):
    dist = np.abs(valid_rows - e2[j]).max(-1)
    assert dist.min() < 1e-6, f"code {j} was not restarted from a batch vector"
  np.testing.assert_array_equal(np.asarray(cb.unused_steps[...]), np.zeros(k))
  if update == "ema":
    np.testing.assert_allclose(np.asarray(cb.cluster_size[1:]), 1.0)


def test_no_restart_without_key():
  vq = _make(qz.VectorQuantizer, dim=4, k=8, dead_after=1)
  cb = vq.codebooks[0]
  e0 = np.asarray(cb.embedding[...])
  z = jnp.broadcast_to(jnp.asarray(e0[0]), (1, 4, 4))
  _upd(vq, z, None, None)
  np.testing.assert_allclose(np.asarray(cb.embedding[1:]), e0[1:], rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(cb.unused_steps[1:]), 1)


def test_update_inside_jit_and_grad_propagates_state():
  vq = _make(qz.VectorQuantizer, dim=4, k=8)
  z = _randn((2, 3, 4), 12)

  @nnx.jit
  def step(m, z):
    return nnx.grad(lambda m, z: m(z, update=True)["loss"], argnums=1)(m, z)

  before = np.asarray(vq.codebooks[0].cluster_size[...])
  step(vq, z)
  assert not np.allclose(np.asarray(vq.codebooks[0].cluster_size[...]), before)


def test_make_quantizer_from_config_and_bad_kind():
  c = micro.get_config().codec
  q = nnx.eval_shape(lambda: qz.make_quantizer(c, rngs=nnx.Rngs(0)))
  assert isinstance(q, qz.VectorQuantizer) and q.num_codebooks == c.num_codebooks
  assert q.codebooks[0].embedding.get_raw_value().shape == (c.codebook_size, c.latent_dim)
  c2 = micro.get_config().codec
  c2.quantizer, c2.num_codebooks, c2.codebook_update = "rvq", 2, "loss"
  r = nnx.eval_shape(lambda: qz.make_quantizer(c2, rngs=nnx.Rngs(0)))
  assert isinstance(r, qz.ResidualVectorQuantizer) and len(r.codebooks) == 2
  assert isinstance(r.codebooks[1].embedding, nnx.Param)
  c2.quantizer = "fsq"
  with pytest.raises(ValueError, match="codec.quantizer='fsq'"):
    qz.make_quantizer(c2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="does not divide"):
    qz.VectorQuantizer(6, 8, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="update='sgd'"):
    qz.Codebook(4, 8, update="sgd", rngs=nnx.Rngs(0))
