"""Conformer encoder: shapes/dtypes, chunk mask, streaming == full, padding, FLOPs, sharding."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import micro
from liveinterp.common import mesh as mesh_lib, sharding
from liveinterp.models import adapter as adapter_lib
from liveinterp.models import conformer
from tests.conftest import skip_if_not_enough_devices


def _cfg(**encoder):
  c = micro.get_config()
  for k, v in encoder.items():
    c.encoder[k] = v
  return c


@functools.lru_cache(maxsize=None)
def _params(num_layers: int, seed: int):
  """(graphdef, params) of a micro encoder, initialised in one jit and cached.

  `unsafe_rbg` keys only to keep the init compile cheap on CPU; models take any key.
  """
  cfg = _cfg(num_layers=num_layers)
  make = lambda: conformer.ConformerEncoder(
      cfg, rngs=nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg")))
  with nnx.use_eager_sharding(False):
    graphdef = nnx.split(nnx.eval_shape(make))[0]
    params = _compile(lambda: nnx.split(make())[1])()
  return graphdef, params


def _build(cfg, seed=0):
  """Encoder for `cfg`; parameters shared by every cfg with the same num_layers and seed
  (dtype and left_chunks do not change the parameter tree)."""
  _, params = _params(int(cfg.encoder.num_layers), seed)
  with nnx.use_eager_sharding(False):
    graphdef = nnx.split(nnx.eval_shape(lambda: conformer.ConformerEncoder(
        cfg, rngs=nnx.Rngs(0))))[0]
  return nnx.merge(graphdef, params)


def _audio(b, n, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(n) / 16000.0
  tone = np.sin(2 * np.pi * rng.uniform(100, 3000, (b, 1)) * t)
  return jnp.asarray(0.2 * tone + 0.05 * rng.standard_normal((b, n)), jnp.float32)


# Tests compile with LLVM optimisation off: about half the compile time on CPU, same HLO
# (fusion, SPMD partitioning) and float32 numerics to test tolerance.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compile(fn, *args):
  """`jax.jit(fn)` compiled for `args` with `_FAST_COMPILE` (one shape signature)."""
  return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)


def _jit_method(module, name):
  """Compiled `module.<name>(*args)` with the parameters as an argument (lazy, per shape)."""
  graphdef, state = nnx.split(module)
  fn = lambda state, *args: getattr(nnx.merge(graphdef, state), name)(*args)
  cache = {}

  def call(*args):
    key = tuple((a.shape, a.dtype) for a in jax.tree.leaves(args))
    if key not in cache:
      cache[key] = _compile(fn, state, *args)
    return cache[key](state, *args)

  return call


def test_chunk_attention_mask_definition():
  m = np.asarray(conformer.chunk_attention_mask(7, 2, 1))
  for i in range(7):
    for j in range(7):
      assert m[i, j] == (i // 2 - 1 <= j // 2 <= i // 2), (i, j)


def test_shapes_dtypes_padding_mask_and_bf16_switch():
  c = _cfg()
  enc = _build(c)
  geo = conformer.stream_geometry(c)
  assert (geo["chunk_frames"], geo["chunk_samples"], geo["cache_frames"]) == (8, 5120, 32)
  run = _jit_method(enc, "encode_audio")
  x = _audio(2, 7680)
  n_short = 3840 + 640 * 3          # row 1 ends inside the second chunk (frame 9 of 12)
  mask = jnp.arange(7680)[None] < jnp.asarray([[7680], [n_short]])
  y, m = run(x, mask)
  assert y.shape == (2, 12, c.encoder.d_model) and y.dtype == jnp.float32
  assert m.shape == (2, 12) and m.dtype == jnp.bool_
  np.testing.assert_array_equal(np.asarray(m).sum(1), [12, 9])
  assert np.isfinite(np.asarray(y)).all()
  assert float(jnp.abs(y[1, 9:]).max()) == 0.0
  # Padding content is invisible to valid frames, also to frame 8 whose chunk holds the
  # padded frames 9..11 (the key mask, not causality, protects it).
  x_garbage = x.at[1, n_short:].set(3.0)
  y_garbage, _ = run(x_garbage, mask)
  np.testing.assert_allclose(np.asarray(y_garbage), np.asarray(y), atol=1e-5)
  y_nomask, _ = run(x_garbage, jnp.ones_like(mask))
  assert np.abs(np.asarray(y_nomask[1, 8]) - np.asarray(y[1, 8])).max() > 1e-3
  np.testing.assert_allclose(np.asarray(y_nomask[1, :8]), np.asarray(y[1, :8]), atol=1e-5)

  # bf16 compute with the same (float32) parameters.
  c16 = _cfg()
  c16.dtype = "bfloat16"
  enc16 = _build(c16)
  assert enc16.layers[0].ffn1.up.kernel[...].dtype == jnp.float32   # param dtype
  y16, _ = _jit_method(enc16, "encode_audio")(x, mask)
  assert y16.dtype == jnp.bfloat16
  err = np.abs(np.asarray(y16, np.float32) - np.asarray(y))
  assert err.mean() < 0.05 and err.max() < 0.5, (err.mean(), err.max())


def test_streaming_equals_full_forward_beyond_left_context():
  # 2 layers, 2 left chunks, 6 chunks: the cache shifts out frames several times.
  c = _cfg(num_layers=2, left_chunks=2)
  enc = _build(c, seed=3)
  chunks = 6
  x = _audio(2, chunks * enc.chunk_samples, seed=1)
  full, mask = _jit_method(enc, "encode_audio")(x)
  assert full.shape == (2, chunks * enc.chunk_frames, c.encoder.d_model)

  step = _jit_method(enc, "extend_step")
  state = enc.init_state(2)
  shapes0 = jax.tree.map(lambda a: (a.shape, a.dtype), state)
  assert state["layers"][0]["attn"]["k"].shape == (2, 16, 2, 16)
  outs = []
  for i in range(chunks):
    o, state = step(x[:, i * enc.chunk_samples:(i + 1) * enc.chunk_samples], state)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), state) == shapes0
    outs.append(np.asarray(o))
  assert int(state["position"]) == chunks * enc.chunk_frames
  np.testing.assert_allclose(np.concatenate(outs, 1), np.asarray(full), rtol=1e-5, atol=1e-5)

  # The mask really bounds the context: with more left chunks the late frames change.
  enc_more = _build(_cfg(num_layers=2, left_chunks=5), seed=3)
  more, _ = _jit_method(enc_more, "encode_audio")(x)
  np.testing.assert_allclose(np.asarray(more[:, :24]), np.asarray(full[:, :24]), atol=1e-5)
  assert np.abs(np.asarray(more[:, 24:]) - np.asarray(full[:, 24:])).max() > 1e-3


def _matmul_flops(jaxpr) -> int:
  """2 x MACs of every dot_general / conv in a jaxpr (recursing into sub-jaxprs)."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lc)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // rhs[out_dim]
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else (p,)):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          total += _matmul_flops(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          total += _matmul_flops(sub)
  return total


def test_flops_per_second_matches_traced_streaming_step():
  c = _cfg(num_layers=2)
  enc = _build(c, seed=3)
  graphdef, params = nnx.split(enc)
  chunk = jnp.zeros((1, enc.chunk_samples))
  jaxpr = jax.make_jaxpr(lambda p, x, s: nnx.merge(graphdef, p).extend_step(x, s))(
      params, chunk, enc.init_state(1))
  chunks_per_second = 1000.0 / c.stream.chunk_ms
  traced = _matmul_flops(jaxpr.jaxpr) * chunks_per_second
  assert conformer.flops_per_second(c) == pytest.approx(traced, rel=1e-9)
  parts = conformer.flops_breakdown(c)
  assert set(parts) >= {"frontend", "subsampling", "ffn", "attn_proj", "attn_scores"}

  with nnx.use_eager_sharding(False):
    ad = adapter_lib.Adapter.from_config(c, rngs=nnx.Rngs(0))
  g2, p2 = nnx.split(ad)
  frames = jnp.zeros((1, enc.chunk_frames, c.encoder.d_model))
  jaxpr = jax.make_jaxpr(lambda p, f: nnx.merge(g2, p)(f))(p2, frames)
  assert adapter_lib.flops_per_second(c) == pytest.approx(
      _matmul_flops(jaxpr.jaxpr) * chunks_per_second, rel=1e-9)
  # Larger presets: the encoder dominates the frontend.
  from configs import small
  s = small.get_config()
  assert conformer.flops_breakdown(s)["ffn"] > conformer.flops_breakdown(s)["frontend"]


class _EncoderAdapter(nnx.Module):
  def __init__(self, cfg, rngs):
    self.encoder = conformer.ConformerEncoder(cfg, rngs=rngs)
    self.adapter = adapter_lib.Adapter.from_config(cfg, rngs=rngs)


def _loss_fn(graphdef):
  def loss_fn(params, mel, mask):
    m = nnx.merge(graphdef, params)
    frames, fmask = m.encoder(mel, mask)
    emb, emask = m.adapter(frames, fmask)
    target = jnp.sin(jnp.arange(emb.shape[-1], dtype=jnp.float32))
    err = jnp.where(emask[..., None], emb - target, 0.0)
    return jnp.sum(err ** 2) / jnp.maximum(emask.sum(), 1)
  return loss_fn


@skip_if_not_enough_devices(8)
def test_sharded_forward_backward_equals_unsharded_and_weights_are_sharded():
  rng = np.random.default_rng(0)
  b, tm = 4, 64                                      # 2 chunks of 32 mel frames
  mel = jnp.asarray(rng.standard_normal((b, tm, 80)) * 2.0 - 10.0, jnp.float32)
  mask = jnp.arange(tm)[None] < jnp.asarray([[64], [40], [64], [13]])
  c = micro.get_config()
  make = lambda: _EncoderAdapter(c, nnx.Rngs(jax.random.key(7, impl="unsafe_rbg")))
  with nnx.use_eager_sharding(False):
    graphdef = nnx.split(nnx.eval_shape(make))[0]
    params = _compile(lambda: nnx.split(make())[1])()
  grad_fn = jax.value_and_grad(_loss_fn(graphdef))
  l1, g1 = _compile(grad_fn, params, mel, mask)(params, mel, mask)   # no mesh: 1 device

  c.mesh.update(ici_data=2, ici_fsdp=2, ici_tensor=2)
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:8])
  with sharding.use_mesh(mesh, sharding.rules_from_config(c.logical_axis_rules)):
    params8 = jax.device_put(params, sharding.named_shardings(params, mesh))
    l8, g8 = _compile(grad_fn, params8, mel, mask)(params8, mel, mask)
  m8 = nnx.merge(graphdef, params8)
  np.testing.assert_allclose(float(l8), float(l1), rtol=1e-5)
  flat1, flat8 = jax.tree.leaves(g1), jax.tree.leaves(g8)
  assert len(flat1) == len(flat8) > 20
  for a, b_ in zip(flat1, flat8):
    # Reduction order differs across shards: tolerance relative to the leaf's scale.
    scale = float(np.abs(np.asarray(a)).max())
    np.testing.assert_allclose(np.asarray(b_), np.asarray(a), rtol=1e-4, atol=1e-5 * scale)
  assert any(float(jnp.abs(g).max()) > 0 for g in flat8)

  P = jax.sharding.PartitionSpec
  blk = m8.encoder.layers[0]
  assert blk.ffn1.up.kernel[...].sharding.spec == P("fsdp", "tensor")
  assert blk.attn.query.kernel[...].sharding.spec == P("fsdp", "tensor", None)
  assert blk.attn.out.kernel[...].sharding.spec == P("tensor", None, "fsdp")
  assert blk.conv.depthwise.kernel[...].sharding.spec == P(None, None, "tensor")
  up = m8.adapter.up.kernel[...]
  assert up.sharding.spec == P(None, "fsdp", "tensor")
  assert up.addressable_shards[0].data.shape == (2, 16, 16)


def test_classic_block_norm_option_has_its_norms_and_still_streams_exactly():
  # encoder.block_norm=True: the classic conformer's closing LayerNorm per block (off by
  # default). Its parameters exist only then, and streaming still equals the full pass.
  c = _cfg(num_layers=1, block_norm=True)
  with nnx.use_eager_sharding(False):
    enc = conformer.ConformerEncoder(c, rngs=nnx.Rngs(jax.random.key(0, impl="unsafe_rbg")))
  assert enc.layers[0].out_norm is not None and _build(_cfg(num_layers=1)).layers[0].out_norm is None
  x = _audio(1, 3 * enc.chunk_samples, seed=2)
  full, _ = _jit_method(enc, "encode_audio")(x)
  np.testing.assert_allclose(np.asarray(full).std(-1)[0], 1.0, atol=1e-2)  # LN-closed
  step, state, outs = _jit_method(enc, "extend_step"), enc.init_state(1), []
  for i in range(3):
    o, state = step(x[:, i * enc.chunk_samples:(i + 1) * enc.chunk_samples], state)
    outs.append(np.asarray(o))
  np.testing.assert_allclose(np.concatenate(outs, 1), np.asarray(full), rtol=1e-5, atol=1e-5)
