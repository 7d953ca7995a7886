"""Codec: shapes/dtypes at micro, streaming == full, losses vs numpy, training, sharding."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs import micro
from liveinterp.common import mesh as mesh_lib
from liveinterp.common import sharding
from liveinterp.layers import quantizer as qz
from liveinterp.models import codec as codec_lib
from liveinterp.models import codec_losses
from tests.conftest import skip_if_not_enough_devices

HOP = 320


def _sines(batch: int, frames: int) -> jax.Array:
  """[B, frames * hop] sinusoids of different pitch/level per row (16 kHz)."""
  t = np.arange(frames * HOP) / 16000.0
  rows = [(0.3 + 0.1 * b) * np.sin(2 * np.pi * (220.0 + 170.0 * b) * t) for b in range(batch)]
  return jnp.asarray(np.stack(rows), jnp.float32)


def _speakers(batch: int, dim: int, seed: int = 0) -> jax.Array:
  e = np.random.default_rng(seed).normal(size=(batch, dim))
  return jnp.asarray(e / np.linalg.norm(e, axis=-1, keepdims=True), jnp.float32)


def make_rngs(seed: int = 0) -> nnx.Rngs:
  """Rngs on an RBG key (fast to compile on CPU) for building test models."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _shallow_micro():
  """micro with two blocks (strides 16 x 20, one residual unit of dilation 3).

  Same hop (320 samples, 50 Hz codes), channels, quantizer and speaker width as micro,
  a third of the layers, so the numeric tests compile within the unit-test budget. The
  full micro codec is checked at the shape level (`test_micro_shapes_...`) and in FLOPs.
  """
  c = micro.get_config()
  c.codec.strides = (16, 20)
  c.codec.dilations = (3,)
  return c


@functools.lru_cache(maxsize=None)
def shallow_codec():
  """(cfg, codec) built once per session (also used by test_voice); never mutate it."""
  c = _shallow_micro()
  # One jitted init (eager init compiles every parameter shape separately), with an RBG
  # key: its random bits compile ~3x faster on CPU than threefry's (values are irrelevant).
  return c, nnx.jit(lambda: codec_lib.Codec(c, rngs=make_rngs()))()


@pytest.fixture(scope="module")
def cfg():
  return shallow_codec()[0]


@pytest.fixture(scope="module")
def model():
  return shallow_codec()[1]


def _fresh(model):
  """An independent copy (tests that update codebook state must not leak it)."""
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


def _loss_fn(m, audio, spk):
  out = m(audio, spk)
  return codec_losses.codec_loss(audio, out)[0]


_value_and_grad = nnx.jit(nnx.value_and_grad(_loss_fn))


def test_micro_shapes_and_dtypes_fp32_and_bf16():
  audio = jax.ShapeDtypeStruct((2, 5 * HOP + 100), jnp.float32)  # partial hop is dropped
  for dtype in ("float32", "bfloat16"):
    c = micro.get_config()
    c.dtype = dtype
    m = codec_lib.build_abstract(c)
    spk = jax.ShapeDtypeStruct((2, c.voice.embed_dim), jnp.float32)
    out = nnx.eval_shape(lambda m, a, s: m(a, s), m, audio, spk)
    assert out["recon"].shape == (2, 5 * HOP) and out["recon"].dtype == jnp.float32
    assert out["codes"].shape == (2, 5, c.codec.num_codebooks)
    assert out["codes"].dtype == jnp.int32
    assert out["latent"].shape == (2, 5, c.codec.latent_dim)
    hidden = nnx.eval_shape(lambda m, a: m.enc_blocks[0](m.enc_in(a[:, :5 * HOP, None])), m, audio)
    assert hidden.dtype == jnp.dtype(dtype) and hidden.shape == (2, 5 * HOP // 2, 16)
    assert m.dec_blocks[0].up.kernel.get_raw_value().dtype == jnp.float32  # params stay fp32
    state = nnx.eval_shape(lambda m: m.init_decode_state(3), m)
    assert all(x.shape[0] == 3 for x in jax.tree.leaves(state))


def test_forward_values_and_bf16_switch(cfg, model):
  audio, spk = _sines(2, 5), _speakers(2, cfg.voice.embed_dim)
  out, codes = nnx.jit(lambda m, a, s: (m(a, s), m.encode(a)))(model, audio, spk)
  assert int(out["codes"].min()) >= 0 and int(out["codes"].max()) < cfg.codec.codebook_size
  for k in ("commitment_loss", "codebook_loss", "quantizer_loss", "perplexity"):
    assert out[k].shape == () and bool(jnp.isfinite(out[k]))
  assert float(jnp.std(out["recon"])) > 0
  # encode agrees with the training forward.
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(out["codes"]))

  # bf16 compute: same parameters, bf16 graph (dtype is static module data).
  cfg16 = _shallow_micro()
  cfg16.dtype = "bfloat16"
  graph16 = nnx.split(codec_lib.build_abstract(cfg16))[0]
  m16 = nnx.merge(graph16, nnx.split(model)[1])
  decoded16 = nnx.jit(lambda m, c, s: m.decode(c, s))(m16, out["codes"], spk)
  assert decoded16.dtype == jnp.float32
  rel = jnp.linalg.norm(decoded16 - out["recon"]) / jnp.linalg.norm(out["recon"])
  assert 0 < float(rel) < 0.1  # bf16 has ~3 significant digits


def test_streaming_decode_and_encode_equal_full(cfg, model):
  frames = 6
  audio, spk = _sines(2, frames), _speakers(2, cfg.voice.embed_dim, seed=1)

  @nnx.jit
  def run(m, audio, spk):
    codes = m.encode(audio)
    full = m.decode(codes, spk)
    # One code frame at a time (the inference case) with lax.scan.
    def body(state, c_bq):
      y, state = m.decode_step(c_bq[:, None], spk, state)
      return state, y
    _, ys = jax.lax.scan(body, m.init_decode_state(2), jnp.swapaxes(codes, 0, 1))
    one_by_one = jnp.swapaxes(ys, 0, 1).reshape(2, -1)
    # Irregular chunks (2, 1, 3): the state carries every conv tail.
    state, parts, start = m.init_decode_state(2), [], 0
    for n in (2, 1, 3):
      y, state = m.decode_step(codes[:, start:start + n], spk, state)
      parts.append(y)
      start += n
    # Streaming encoder, chunks of 2 frames and 1 frame.
    est, enc = m.init_encode_state(2), []
    for a, b in ((0, 2), (2, 3), (3, 6)):
      c, est = m.encode_step(audio[:, a * HOP:b * HOP], est)
      enc.append(c)
    return (codes, full, one_by_one, jnp.concatenate(parts, axis=1),
            jnp.concatenate(enc, axis=1))

  # One frame at a time reproducing the full pass also shows the decoder is causal.
  codes, full, one, chunked, enc_codes = run(model, audio, spk)
  assert full.shape == (2, frames * HOP)
  scale = float(jnp.max(jnp.abs(full)))
  np.testing.assert_allclose(np.asarray(one), np.asarray(full), atol=1e-5 * scale)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(full), atol=1e-5 * scale)
  np.testing.assert_array_equal(np.asarray(enc_codes), np.asarray(codes))
  with pytest.raises(ValueError, match="multiple of the hop"):
    model.encode_step(audio[:, :100], model.init_encode_state(2))


def test_stft_magnitude_and_losses_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 700))
  y = x + 0.1 * rng.normal(size=(2, 700))
  n_fft, hop, win = 256, 64, 200
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
  fe = codec_losses.CodecLossConfig().frontend

  @jax.jit
  def run(x, y):
    return (codec_losses.stft_magnitude(x, n_fft, hop, win),
            codec_losses.multi_resolution_stft_loss(x, y, ((n_fft, hop, win),)),
            codec_losses.multi_resolution_stft_loss(x, x)["stft"],
            codec_losses.mel_l1_loss(x, x, fe), codec_losses.mel_l1_loss(x, y, fe))

  def ref_mag(s):
    frames = np.stack([s[:, f * hop:f * hop + win] for f in range((700 - win) // hop + 1)], 1)
    return np.maximum(np.abs(np.fft.rfft(frames * window, n=n_fft, axis=-1)), np.sqrt(1e-7))

  mag, losses, same, mel_same, mel_diff = run(jnp.asarray(x, jnp.float32),
                                              jnp.asarray(y, jnp.float32))
  mx, my = ref_mag(x), ref_mag(y)
  np.testing.assert_allclose(np.asarray(mag), mx, rtol=1e-4, atol=1e-4)
  sc = np.mean(np.linalg.norm((mx - my).reshape(2, -1), axis=1)
               / np.linalg.norm(mx.reshape(2, -1), axis=1))
  lm = np.mean(np.abs(np.log(mx) - np.log(my)))
  np.testing.assert_allclose(float(losses["spectral_convergence"]), sc, rtol=1e-3)
  np.testing.assert_allclose(float(losses["log_magnitude"]), lm, rtol=1e-3)
  assert float(same) == 0.0 and float(mel_same) == 0.0 and float(mel_diff) > 0.0


def test_codec_loss_config_from_config(cfg):
  c = micro.get_config()
  c.codec.stft_resolutions = ((64, 16, 64),)
  c.codec.mel_weight = 2.0
  lc = codec_losses.CodecLossConfig.from_config(c)
  assert lc.resolutions == ((64, 16, 64),) and lc.mel_weight == 2.0
  assert lc.frontend.n_mels == cfg.audio.n_mels and lc.frontend.floor == 1e-5


def test_train_steps_reduce_reconstruction_loss_and_advance_ema(cfg, model):
  """A few adam steps on sinusoids with EMA codebook updates and restarts switched on."""
  m = _fresh(model)
  opt = nnx.Optimizer(m, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def train_step(m, opt, audio, spk, key):
    def loss_fn(m):
      out = m(audio, spk, update=True, key=key)
      return codec_losses.codec_loss(audio, out)
    (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(m)
    opt.update(m, grads)
    return metrics

  audio, spk = _sines(2, 4), _speakers(2, cfg.voice.embed_dim, seed=2)
  ema0 = np.asarray(m.quantizer.codebooks[0].cluster_size[...])
  recon = []
  for i in range(7):
    metrics = train_step(m, opt, audio, spk, jax.random.key(i))
    recon.append(float(metrics["codec/recon_loss"]))
    assert np.isfinite(float(metrics["codec/loss"]))
  assert recon[-1] < 0.9 * recon[0], recon
  # The EMA statistics are updated by the forward, not by the optimizer.
  assert not np.allclose(np.asarray(m.quantizer.codebooks[0].cluster_size[...]), ema0)


def test_train_forward_updates_ema_state_only(cfg, model):
  m = _fresh(model)
  audio, spk = _sines(2, 4), _speakers(2, cfg.voice.embed_dim)
  before = jax.tree.map(np.asarray, nnx.state(m, qz.CodebookStats))
  params_before = jax.tree.map(np.asarray, nnx.state(m, nnx.Param))
  nnx.jit(lambda m, a, s, k: m(a, s, update=True, key=k))(m, audio, spk, jax.random.key(0))
  after = nnx.state(m, qz.CodebookStats)
  cb0, cb1 = before["quantizer"]["codebooks"][0], after["quantizer"]["codebooks"][0]
  assert not np.allclose(cb0["cluster_size"][...], np.asarray(cb1["cluster_size"][...]))
  for a, b in zip(jax.tree.leaves(params_before), jax.tree.leaves(nnx.state(m, nnx.Param))):
    np.testing.assert_array_equal(a, np.asarray(b))


@skip_if_not_enough_devices(8)
def test_sharded_forward_backward_equals_unsharded(cfg, model):
  audio, spk = _sines(4, 4), _speakers(4, cfg.voice.embed_dim, seed=3)
  loss_ref, grads_ref = _value_and_grad(model, audio, spk)

  c = micro.get_config()
  c.mesh.ici_data, c.mesh.ici_fsdp, c.mesh.ici_tensor = 2, 2, 2
  mesh = mesh_lib.create_mesh(c.mesh)
  rules = sharding.rules_from_config(c.logical_axis_rules)
  graphdef, state = nnx.split(model)
  with sharding.use_mesh(mesh, rules):
    sstate = jax.device_put(state, sharding.named_shardings(state, mesh))
    smodel = nnx.merge(graphdef, sstate)
    audio_s = jax.device_put(audio, sharding.data_sharding(mesh, 2))
    spk_s = jax.device_put(spk, sharding.data_sharding(mesh, 2))
    loss_s, grads_s = _value_and_grad(smodel, audio_s, spk_s)

  # The large conv weights are really split over `tensor` (conv_out), FiLM and codebook
  # widths over `fsdp` (embed).
  down = smodel.enc_blocks[-1].down.kernel[...]
  assert down.sharding.spec == P(None, None, "tensor")
  assert down.addressable_shards[0].data.shape[-1] == down.shape[-1] // 2
  assert smodel.dec_blocks[0].up.kernel[...].sharding.spec == P(None, None, "tensor")
  assert smodel.dec_blocks[0].film.kernel[...].sharding.spec == P("fsdp", "tensor")
  assert smodel.quantizer.codebooks[0].embedding[...].sharding.spec == P(None, "fsdp")
  assert smodel.dec_out.kernel[...].sharding.spec == P()  # 1 output channel: replicated

  np.testing.assert_allclose(float(loss_s), float(loss_ref), rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_ref),
                          jax.tree.leaves(grads_s)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5 * (np.abs(a).max() + 1e-12),
                               err_msg=jax.tree_util.keystr(path))


def test_flops_per_second_matches_hand_count_and_xla():
  c = micro.get_config()
  f = codec_lib.flops_per_second(c)
  assert set(f) == {"encoder", "quantizer", "decoder"}
  # Hand count of the quantizer: 50 frames/s x 2 x K x D.
  assert f["quantizer"] == 50 * 2 * c.codec.codebook_size * c.codec.latent_dim
  # The micro encoder's FLOPs from XLA's cost model of one second of audio (no compile).
  abstract = codec_lib.build_abstract(c)
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  lowered = jax.jit(lambda p, r, a: nnx.merge(graphdef, p, r).encode_latent(a)).lower(
      params, rest, jax.ShapeDtypeStruct((1, 16000), jnp.float32))
  xla = lowered.cost_analysis()["flops"]
  assert 0.9 * xla <= f["encoder"] <= 1.05 * xla, (f["encoder"], xla)
  assert codec_lib.param_count(c) == sum(math.prod(x.shape) for x in jax.tree.leaves(params))
