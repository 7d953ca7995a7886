"""Speaker encoder: pooling vs numpy, padding invariance, and voice conditioning of the codec."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import micro
from liveinterp.models import codec as codec_lib
from liveinterp.models import voice
from tests.unit.models.test_codec import HOP, shallow_codec, make_rngs


@functools.lru_cache(maxsize=None)
def _encoder():
  c = micro.get_config()
  return c, nnx.jit(lambda: voice.SpeakerEncoder(c, rngs=make_rngs()))()


def _voice(seed: int, n: int, f0: float) -> np.ndarray:
  """A crude 'speaker': harmonic buzz at pitch f0 with its own spectral tilt, plus noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / 16000.0
  x = sum(rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6))
          for h in range(1, 8))
  return (0.3 * x / np.abs(x).max() + 0.01 * rng.normal(size=n)).astype(np.float32)


def test_attentive_stats_pooling_matches_numpy():
  pool = voice.AttentiveStatsPooling(6, 4, rngs=make_rngs(1))
  rng = np.random.default_rng(0)
  h = rng.normal(size=(2, 5, 6))
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  got = np.asarray(nnx.jit(lambda p, h, m: p(h, m))(pool, jnp.asarray(h, jnp.float32),
                                                     jnp.asarray(mask)))
  w1, b1 = np.asarray(pool.attn_in.kernel[...]), np.asarray(pool.attn_in.bias[...])
  w2, b2 = np.asarray(pool.attn_out.kernel[...]), np.asarray(pool.attn_out.bias[...])
  for b in range(2):
    hv = h[b, mask[b]]                                   # [T_valid, C]
    logits = np.tanh(hv @ w1 + b1) @ w2 + b2
    w = np.exp(logits - logits.max(0))
    w /= w.sum(0)
    mean = (w * hv).sum(0)
    std = np.sqrt(np.maximum((w * hv * hv).sum(0) - mean ** 2, 1e-6))
    np.testing.assert_allclose(got[b], np.concatenate([mean, std]), rtol=1e-4, atol=1e-5)


def test_embedding_is_unit_norm_and_padding_invariant():
  cfg, enc = _encoder()
  n_a, n_b = 6400, 4000  # n_a - n_b is a whole number of 10 ms mel hops
  a, b = _voice(0, n_a, 120.0), _voice(1, n_b, 210.0)
  garbage = 5.0 * np.random.default_rng(2).normal(size=n_a - n_b)
  # Rows: a; b right-padded with garbage; b left-padded with garbage (a rolling buffer).
  padded = np.stack([a, np.concatenate([b, garbage]),
                     np.concatenate([garbage, b])]).astype(np.float32)
  mask = np.zeros((3, n_a), bool)
  mask[0], mask[1, :n_b], mask[2, n_a - n_b:] = True, True, True

  @nnx.jit
  def run(m, padded, mask, a, b):
    return m.embed_audio(padded, mask), m.embed_audio(a), m.embed_audio(b)

  batch, alone_a, alone_b = run(enc, jnp.asarray(padded), jnp.asarray(mask),
                                jnp.asarray(a[None]), jnp.asarray(b[None]))
  assert batch.shape == (3, cfg.voice.embed_dim) and batch.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(batch), axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(batch[0]), np.asarray(alone_a[0]), atol=2e-5)
  np.testing.assert_allclose(np.asarray(batch[1]), np.asarray(alone_b[0]), atol=2e-5)
  np.testing.assert_allclose(np.asarray(batch[2]), np.asarray(alone_b[0]), atol=2e-5)
  # Two different voices are not mapped to the same point.
  assert float(jnp.dot(batch[0], batch[1])) < 0.999


def test_same_embedding_reproduces_codec_output_other_voice_changes_it():
  _, enc = _encoder()
  cfg, codec = shallow_codec()
  ref_a, ref_b = _voice(3, 4800, 110.0), _voice(4, 4800, 240.0)
  padded_a = np.concatenate([ref_a, np.ones(1600, np.float32)])[None]
  mask_a = np.arange(6400)[None] < 4800
  content = jnp.asarray(_voice(5, 4 * HOP, 160.0)[None])

  @nnx.jit
  def run(enc, codec, padded_a, mask_a, ref_a, ref_b, content):
    e = jnp.concatenate([enc.embed_audio(padded_a, mask_a), enc.embed_audio(ref_a),
                         enc.embed_audio(ref_b)])                     # [3, E]
    codes = jnp.repeat(codec.encode(content), 3, axis=0)               # same content
    return e, codec.decode(codes, e)

  e, audio = run(enc, codec, jnp.asarray(padded_a), jnp.asarray(mask_a),
                 jnp.asarray(ref_a[None]), jnp.asarray(ref_b[None]), content)
  audio = np.asarray(audio)
  assert audio.shape == (3, 4 * HOP)
  scale = np.abs(audio[1]).max()
  # The same speaker (padded or not) gives the same embedding, hence the same audio ...
  np.testing.assert_allclose(audio[0], audio[1], atol=1e-4 * scale)
  # ... another speaker's embedding changes the decoded voice.
  assert np.abs(audio[2] - audio[1]).max() > 1e-2 * scale
  assert float(jnp.linalg.norm(e[2] - e[1])) > 1e-2


def test_voice_codec_composite_shapes_and_bf16():
  for dtype in ("float32", "bfloat16"):
    c = micro.get_config()
    c.dtype = dtype
    m = nnx.eval_shape(lambda: voice.VoiceCodec(c, rngs=nnx.Rngs(0)))
    audio = jax.ShapeDtypeStruct((2, 4 * HOP), jnp.float32)
    ref = jax.ShapeDtypeStruct((2, 3000), jnp.float32)
    out = nnx.eval_shape(lambda m, a, r: m(a, r), m, audio, ref)
    assert out["speaker"].shape == (2, c.voice.embed_dim)
    assert out["speaker"].dtype == jnp.float32
    assert out["recon"].shape == (2, 4 * HOP) and out["codes"].shape == (2, 4, 1)
    mels = jax.ShapeDtypeStruct((2, 30, c.audio.n_mels), jnp.float32)
    hidden = nnx.eval_shape(lambda s, x: s.convs[0](x), m.speaker, mels)
    assert hidden.dtype == jnp.dtype(dtype)


def test_flops_per_second_hand_count():
  c = micro.get_config()
  f = voice.flops_per_second(c)
  assert set(f) == {"frontend", "tdnn", "pooling"}
  ch, mels = c.voice.channels, c.audio.n_mels
  macs = 5 * mels * ch + 3 * ch * ch + 3 * ch * ch + 1 * ch * ch
  assert f["tdnn"] == 100 * 2 * macs  # 100 mel frames per second (10 ms hop)
  assert voice.param_count(c) > 0 and codec_lib.param_count(c) > voice.param_count(c)
