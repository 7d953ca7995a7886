"""Speaker encoder (voice embedding) and the codec-stage composite that uses it.

`SpeakerEncoder`: log-mels [B, T, n_mels] (+ validity mask) → per-utterance mean
normalisation → TDNN stack (causal dilated convs with ReLU + LayerNorm, residual where
widths match) → attentive statistics pooling (channel-wise attention weights over valid
frames; weighted mean and standard deviation) → linear → L2-normalised embedding
[B, embed_dim]. One embedding per stream (or per speaker turn).

Padding invariance: convs are causal and masked, so valid frames never see padding, and
the pooling ignores invalid frames; the embedding of a padded batch equals that of the
unpadded utterances.

`VoiceCodec`: speaker encoder on *reference* audio (another utterance of the same speaker)
+ `Codec` on the target audio, the model of training stage 1. The FiLM layers inside the
codec decoder are the voice-cloning adapter.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes, sharding
from liveinterp.layers import initializers as inits
from liveinterp.layers.audio_frontend import LogMelFrontend
from liveinterp.layers.conv import CausalConv1d
from liveinterp.layers.linears import Dense
from liveinterp.layers.normalizations import LayerNorm
from liveinterp.models.codec import Codec

# (kernel, dilation) of the TDNN layers.
TDNN_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1))
_NEG = -1e30


class AttentiveStatsPooling(nnx.Module):
  """Masked attentive statistics pooling: [B, T, C] (+ mask [B, T]) -> [B, 2C] (float32).

  Weights `w = softmax_t(W2 tanh(W1 h_t + b1) + b2)` per channel, over valid frames;
  output `[sum_t w h_t, sqrt(sum_t w h_t^2 - mean^2)]`.
  """

  def __init__(self, channels: int, attn_dim: int, *, dtype="float32",
               param_dtype="float32", rngs: nnx.Rngs):
    kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn_in = Dense(channels, attn_dim, kernel_axes=(axes.EMBED, axes.MLP), **kw)
    self.attn_out = Dense(attn_dim, channels, kernel_axes=(axes.MLP, axes.EMBED), **kw)
    self.channels = channels

  def __call__(self, h_btc: jax.Array, mask_bt: jax.Array) -> jax.Array:
    logits = self.attn_out(jnp.tanh(self.attn_in(h_btc))).astype(jnp.float32)
    valid = mask_bt[..., None]
    logits = jnp.where(valid, logits, _NEG)
    w = jnp.where(valid, jax.nn.softmax(logits, axis=1), 0.0)        # [B, T, C]
    h = h_btc.astype(jnp.float32)
    mean = jnp.sum(w * h, axis=1)
    var = jnp.sum(w * h * h, axis=1) - mean * mean
    std = jnp.sqrt(jnp.maximum(var, 1e-6))
    return jnp.concatenate([mean, std], axis=-1)

  def flops_per_frame(self) -> int:
    return self.attn_in.flops_per_example + self.attn_out.flops_per_example + 6 * self.channels


class SpeakerEncoder(nnx.Module):
  """Log-mels → L2-normalised speaker embedding [B, voice.embed_dim].

  Built from `cfg.voice` (channels, embed_dim), `cfg.audio` (n_mels and the frontend
  settings used by `embed_audio`) and `cfg.dtype` / `cfg.param_dtype`.
  """

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    c, e, m = int(cfg.voice.channels), int(cfg.voice.embed_dim), int(cfg.audio.n_mels)
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.n_mels = m
    self.embed_dim = e
    self.dtype = inits.as_dtype(cfg.dtype)
    self.frontend = LogMelFrontend.from_config(cfg.audio)
    self.convs = nnx.List([
        CausalConv1d(m if i == 0 else c, c, k, dilation=d, **kw)
        for i, (k, d) in enumerate(TDNN_LAYERS)])
    self.norms = nnx.List([LayerNorm(c, **kw) for _ in TDNN_LAYERS])
    self.pool = AttentiveStatsPooling(c, max(8, c // 2), **kw)
    self.proj = Dense(2 * c, e, kernel_axes=(axes.MLP, axes.EMBED), use_bias=True, **kw)

  def __call__(self, mels_btm: jax.Array, mask_bt: jax.Array | None = None) -> jax.Array:
    """Embedding of log-mels [B, T, n_mels] with validity [B, T] -> [B, E] float32, |e| = 1."""
    if mels_btm.shape[-1] != self.n_mels:
      raise ValueError(f"SpeakerEncoder expects {self.n_mels} mel bins, got {mels_btm.shape}")
    b, t, _ = mels_btm.shape
    mask = jnp.ones((b, t), bool) if mask_bt is None else mask_bt.astype(bool)
    x = mels_btm.astype(jnp.float32)
    w = mask[..., None].astype(jnp.float32)
    mean = jnp.sum(x * w, axis=1, keepdims=True) / jnp.maximum(jnp.sum(w, axis=1,
                                                                       keepdims=True), 1.0)
    h = jnp.where(mask[..., None], x - mean, 0.0).astype(self.dtype)
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      y = norm(jax.nn.relu(conv(h, mask)))
      h = y if i == 0 else h + y
      h = sharding.shard_logical(h, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_CHANNELS))
    pooled = self.pool(h, mask)
    emb = self.proj(pooled.astype(self.dtype)).astype(jnp.float32)
    return emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-6)

  def embed_audio(self, audio_bn: jax.Array, mask_bn: jax.Array | None = None) -> jax.Array:
    """Embedding straight from 16 kHz audio [B, N] (+ validity [B, N]) -> [B, E]."""
    mels, mask = self.frontend(audio_bn, mask_bn)
    return self(mels, mask)

  def flops_per_second(self) -> dict[str, float]:
    """Analytic forward FLOPs per second of audio by part (values add up to the total)."""
    fps = 1000.0 / self.frontend.hop_ms
    tdnn = sum(c.flops_per_output() for c in self.convs) * fps
    pool = self.pool.flops_per_frame() * fps
    front = self.frontend.flops_per_frame() * fps
    # The final projection runs once per utterance and is left out.
    return {"frontend": front, "tdnn": tdnn, "pooling": pool}


class VoiceCodec(nnx.Module):
  """Speaker encoder + codec: reconstruct `audio` in the voice of `ref_audio`."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.speaker = SpeakerEncoder(cfg, rngs=rngs)
    self.codec = Codec(cfg, rngs=rngs)

  def __call__(self, audio_bn: jax.Array, ref_audio_bn: jax.Array,
               ref_mask_bn: jax.Array | None = None, *, update: bool = False,
               key: jax.Array | None = None) -> dict:
    """audio [B, N] and reference audio [B, N_ref] (+ validity) -> codec output + `speaker`."""
    spk = self.speaker.embed_audio(ref_audio_bn, ref_mask_bn)
    out = self.codec(audio_bn, spk, update=update, key=key)
    out["speaker"] = spk
    return out


def resynthesize(codec: Codec, speaker: SpeakerEncoder, audio_bn: jax.Array,
                 ref_audio_bn: jax.Array, ref_mask_bn: jax.Array | None = None) -> jax.Array:
  """Audio [B, N] through the codec (encode, quantize, decode) in the voice embedded from
  the reference audio [B, N_ref] (+ validity): the channel the system speaks through."""
  return codec.decode(codec.encode(audio_bn), speaker.embed_audio(ref_audio_bn, ref_mask_bn))


def _abstract_speaker_encoder(cfg) -> SpeakerEncoder:
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: SpeakerEncoder(cfg, rngs=nnx.Rngs(0)))


def flops_per_second(cfg) -> dict[str, float]:
  """Analytic forward FLOPs per second of audio of `cfg`'s speaker encoder (by part)."""
  return _abstract_speaker_encoder(cfg).flops_per_second()


def param_count(cfg) -> int:
  """Parameters of `cfg`'s speaker encoder."""
  model = _abstract_speaker_encoder(cfg)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
