"""Streaming conformer encoder: log-mel -> 40 ms frames, chunked attention, causal conv.

Layout of one forward (`[B, T, D]` = batch, frames, `encoder.d_model`):

  mel [B, 4T, F] -> fixed affine -> causal conv subsampling (log2(subsample) stride-2
  convs + linear) -> N x block -> frames [B, T, D]

  block: x += ½ FFN(LN x); x += MHSA(LN x); x += ConvModule(LN x); x += ½ FFN(LN x)
         [; x = LN x when `encoder.block_norm` (the classic conformer's closing norm)]

- MHSA uses rotary positions and a *chunk mask*: frame i (chunk i // C) sees every frame
  of its own chunk and of the `left_chunks` chunks before it, nothing later. C =
  `stream.chunk_ms / (audio.hop_ms * encoder.subsample)` frames.
- ConvModule: pointwise GLU -> causal depthwise conv -> LayerNorm -> swish -> pointwise.
- Streaming (`extend_step`) reads one chunk of audio per call and keeps a fixed-shape
  state: frontend sample tail, subsampling conv tails, and per layer the keys/values of
  the last `left_chunks * C` frames (+ validity) and the depthwise-conv tail. Keys are
  cached *before* rotation and rotated with window-relative positions each step, so
  positions stay bounded on arbitrarily long streams while scores equal the full pass
  (rotary scores depend only on position differences).

Everything is causal or chunk-local, so `extend_step` chunk by chunk equals
`__call__` on the whole (chunk-masked) input; the tests check that.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes, sharding
from liveinterp.layers import initializers as inits
from liveinterp.layers.attention import dot_product_attention
from liveinterp.layers.audio_frontend import LogMelFrontend
from liveinterp.layers.conv import CausalConv1d, conv_flops_per_output
from liveinterp.layers.embeddings import apply_rotary
from liveinterp.layers.linears import Dense
from liveinterp.layers.normalizations import LayerNorm

# Fixed standardisation of natural-log mel power (speech sits around -10, digital
# silence at log(1e-10) = -23). Every block is pre-normed, so this only keeps the first
# conv's inputs O(1); no data statistics (and no streaming issue) involved.
MEL_CENTER = -10.0
MEL_SCALE = 5.0

_BTD = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)
_BTF = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP)
_BTHD = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, axes.ACT_HEAD_DIM)
_CACHE = (axes.CACHE_BATCH, axes.CACHE_LENGTH, axes.CACHE_KV_HEADS, axes.CACHE_HEAD_DIM)


def chunk_attention_mask(num_frames: int, chunk: int, left_chunks: int) -> jax.Array:
  """`[T, T]` bool: query i sees key j iff `i//C - left_chunks <= j//C <= i//C`."""
  c = jnp.arange(num_frames) // chunk
  return (c[None, :] <= c[:, None]) & (c[None, :] >= c[:, None] - left_chunks)


def _mask_frames(x_btd: jax.Array, mask_bt: jax.Array | None) -> jax.Array:
  if mask_bt is None:
    return x_btd
  return jnp.where(mask_bt[..., None], x_btd, jnp.zeros((), x_btd.dtype))


class FeedForward(nnx.Module):
  """Dense(D, F) -> swish -> Dense(F, D): `[B, T, D] -> [B, T, D]`."""

  def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.up = Dense(dim, hidden, kernel_axes=(axes.EMBED, axes.MLP), dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs)
    self.down = Dense(hidden, dim, kernel_axes=(axes.MLP, axes.EMBED), dtype=dtype,
                      param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    h_btf = sharding.shard_logical(jax.nn.silu(self.up(x_btd)), _BTF)
    return sharding.shard_logical(self.down(h_btf), _BTD)


class ChunkedSelfAttention(nnx.Module):
  """Multi-head self-attention with rotary positions over a chunk-masked window."""

  def __init__(self, dim: int, num_heads: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"encoder.num_heads={num_heads} does not divide d_model={dim}")
    head_dim = dim // num_heads
    if head_dim % 2:
      raise ValueError(f"encoder head_dim={head_dim} must be even (rotary)")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    qkv_axes = (axes.EMBED, axes.HEADS, axes.HEAD_DIM)
    self.query = Dense(dim, (num_heads, head_dim), kernel_axes=qkv_axes, **kw)
    self.key = Dense(dim, (num_heads, head_dim), kernel_axes=qkv_axes, **kw)
    self.value = Dense(dim, (num_heads, head_dim), kernel_axes=qkv_axes, **kw)
    self.out = Dense((num_heads, head_dim), dim,
                     kernel_axes=(axes.HEADS, axes.HEAD_DIM, axes.EMBED), **kw)
    self.num_heads = num_heads
    self.head_dim = head_dim

  def _qkv(self, x_btd):
    q, k, v = (sharding.shard_logical(p(x_btd), _BTHD)
               for p in (self.query, self.key, self.value))
    return q, k, v

  def __call__(self, x_btd: jax.Array, mask_btt: jax.Array) -> jax.Array:
    """x `[B, T, D]`, mask `[B, T, T]` (True = may attend) -> `[B, T, D]`."""
    b, t, _ = x_btd.shape
    q, k, v = self._qkv(x_btd)
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))
    q, k = apply_rotary(q, pos), apply_rotary(k, pos)
    o = dot_product_attention(q, k, v, mask=mask_btt[:, None])
    return sharding.shard_logical(self.out(sharding.shard_logical(o, _BTHD)), _BTD)

  def init_state(self, batch: int, cache_len: int, dtype) -> dict[str, jax.Array]:
    """Empty cache: k/v `[B, S, H, Dh]` (unrotated), valid `[B, S]`, S = left frames."""
    kv = jnp.zeros((batch, cache_len, self.num_heads, self.head_dim), dtype)
    return {"k": kv, "v": kv, "valid": jnp.zeros((batch, cache_len), bool)}

  def extend_step(self, x_bcd: jax.Array,
                  state: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One chunk `[B, C, D]` attending to itself and the cached S frames -> `[B, C, D]`."""
    b, c, _ = x_bcd.shape
    s = state["k"].shape[1]
    q, k, v = self._qkv(x_bcd)
    k_all = jnp.concatenate([state["k"], k.astype(state["k"].dtype)], axis=1)
    v_all = jnp.concatenate([state["v"], v.astype(state["v"].dtype)], axis=1)
    valid = jnp.concatenate([state["valid"], jnp.ones((b, c), bool)], axis=1)  # [B, S+C]
    # Window-relative positions: cache 0..S-1, current chunk S..S+C-1.
    pos_k = jnp.broadcast_to(jnp.arange(s + c), (b, s + c))
    q_rot = apply_rotary(q, pos_k[:, s:])
    k_rot = apply_rotary(k_all, pos_k)
    o = dot_product_attention(q_rot, k_rot, v_all, mask=valid[:, None, None, :])
    y = sharding.shard_logical(self.out(sharding.shard_logical(o, _BTHD)), _BTD)
    new = {"k": sharding.shard_logical(k_all[:, c:], _CACHE),
           "v": sharding.shard_logical(v_all[:, c:], _CACHE),
           "valid": valid[:, c:]}
    return y, new


class ConvModule(nnx.Module):
  """Pointwise GLU -> causal depthwise conv -> LayerNorm -> swish -> pointwise."""

  def __init__(self, dim: int, kernel_size: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # GLU halves on their own axis so that sharding the channel axis keeps pairs local.
    self.pointwise_in = Dense(dim, (2, dim), kernel_axes=(axes.EMBED, None, axes.MLP), **kw)
    self.depthwise = CausalConv1d(dim, dim, kernel_size, groups=dim, use_bias=False, **kw)
    self.norm = LayerNorm(dim, **kw)
    self.pointwise_out = Dense(dim, dim, kernel_axes=(axes.MLP, axes.EMBED), **kw)

  def _glu(self, x_btd):
    h = self.pointwise_in(x_btd)                          # [B, T, 2, D]
    g = h[..., 0, :] * jax.nn.sigmoid(h[..., 1, :])
    return sharding.shard_logical(g, _BTF)

  def _post(self, h_btd):
    h = sharding.shard_logical(h_btd, _BTF)
    h = jax.nn.silu(self.norm(h))
    return sharding.shard_logical(self.pointwise_out(h), _BTD)

  def __call__(self, x_btd: jax.Array, mask_bt: jax.Array | None = None) -> jax.Array:
    """`[B, T, D]` -> `[B, T, D]`; invalid frames are zeroed before the depthwise conv."""
    return self._post(self.depthwise(self._glu(x_btd), mask_bt))

  def init_state(self, batch: int) -> dict[str, jax.Array]:
    return self.depthwise.init_state(batch)

  def extend_step(self, x_bcd, state):
    h, state = self.depthwise.extend_step(self._glu(x_bcd), state)
    return self._post(h), state


class ConformerBlock(nnx.Module):
  """½FFN -> chunked MHSA -> causal conv module -> ½FFN (all pre-normed) [-> LayerNorm].

  `block_norm` adds the classic conformer's closing LayerNorm. Without it the residual
  stream is never renormalised, which is what lets a small encoder learn fast: with it,
  the near-constant part that attention adds to every frame at init is rescaled into
  each block's output, and per-frame detail shrinks block by block.
  """

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, conv_kernel: int, *,
               dtype, param_dtype, rngs: nnx.Rngs, block_norm: bool = False):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.ffn1_norm = LayerNorm(dim, **kw)
    self.ffn1 = FeedForward(dim, mlp_dim, **kw)
    self.attn_norm = LayerNorm(dim, **kw)
    self.attn = ChunkedSelfAttention(dim, num_heads, **kw)
    self.conv_norm = LayerNorm(dim, **kw)
    self.conv = ConvModule(dim, conv_kernel, **kw)
    self.ffn2_norm = LayerNorm(dim, **kw)
    self.ffn2 = FeedForward(dim, mlp_dim, **kw)
    self.out_norm = LayerNorm(dim, **kw) if block_norm else None

  def _close(self, x_btd):
    if self.out_norm is not None:
      x_btd = self.out_norm(x_btd)
    return sharding.shard_logical(x_btd, _BTD)

  def __call__(self, x_btd: jax.Array, mask_bt: jax.Array, attn_mask_btt: jax.Array):
    """x `[B, T, D]`, frame mask `[B, T]`, attention mask `[B, T, T]` -> `[B, T, D]`."""
    x = x_btd + 0.5 * self.ffn1(self.ffn1_norm(x_btd))
    x = x + self.attn(self.attn_norm(x), attn_mask_btt)
    x = x + self.conv(self.conv_norm(x), mask_bt)
    x = x + 0.5 * self.ffn2(self.ffn2_norm(x))
    return self._close(x)

  def init_state(self, batch: int, cache_len: int, dtype) -> dict[str, Any]:
    return {"attn": self.attn.init_state(batch, cache_len, dtype),
            "conv": self.conv.init_state(batch)}

  def extend_step(self, x_bcd: jax.Array, state: dict[str, Any]):
    """One chunk `[B, C, D]` -> (`[B, C, D]`, state)."""
    x = x_bcd + 0.5 * self.ffn1(self.ffn1_norm(x_bcd))
    a, attn_state = self.attn.extend_step(self.attn_norm(x), state["attn"])
    x = x + a
    cv, conv_state = self.conv.extend_step(self.conv_norm(x), state["conv"])
    x = x + cv
    x = x + 0.5 * self.ffn2(self.ffn2_norm(x))
    return self._close(x), {"attn": attn_state, "conv": conv_state}


class ConvSubsampling(nnx.Module):
  """log2(factor) causal stride-2 convs (k=3, swish) + linear: `[B, T, F] -> [B, T/f, D]`."""

  def __init__(self, in_features: int, dim: int, factor: int, *, kernel_size: int = 3,
               dtype, param_dtype, rngs: nnx.Rngs):
    n = int(round(math.log2(factor)))
    if factor < 2 or 2 ** n != factor:
      raise ValueError(f"encoder.subsample={factor}: must be a power of two >= 2")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.convs = nnx.List([
        CausalConv1d(in_features if i == 0 else dim, dim, kernel_size, stride=2, **kw)
        for i in range(n)])
    self.proj = Dense(dim, dim, kernel_axes=(axes.MLP, axes.EMBED), **kw)
    self.factor = factor

  def __call__(self, x_btf: jax.Array, mask_bt: jax.Array):
    """x `[B, T, F]`, mask `[B, T]` -> (`[B, T // factor, D]`, mask `[B, T // factor]`)."""
    for conv in self.convs:
      x_btf = jax.nn.silu(conv(x_btf, mask_bt))
      x_btf = sharding.shard_logical(x_btf, _BTF)
      mask_bt = conv.output_mask(mask_bt)
    return sharding.shard_logical(self.proj(x_btf), _BTD), mask_bt

  def init_state(self, batch: int) -> list[dict[str, jax.Array]]:
    return [conv.init_state(batch) for conv in self.convs]

  def extend_step(self, x_btf: jax.Array, state):
    new = []
    for conv, st in zip(self.convs, state):
      x_btf, st = conv.extend_step(x_btf, st)
      x_btf = sharding.shard_logical(jax.nn.silu(x_btf), _BTF)
      new.append(st)
    return sharding.shard_logical(self.proj(x_btf), _BTD), new


def stream_geometry(cfg) -> dict[str, int]:
  """Frame/chunk sizes implied by the config (raises ValueError when they don't divide)."""
  fe = LogMelFrontend.from_config(cfg.audio)
  sub = int(cfg.encoder.subsample)
  frame_ms = cfg.audio.hop_ms * sub
  if cfg.stream.chunk_ms % frame_ms:
    raise ValueError(f"stream.chunk_ms={cfg.stream.chunk_ms} is not a multiple of the "
                     f"{frame_ms} ms encoder frame")
  chunk_frames = int(cfg.stream.chunk_ms // frame_ms)
  return {
      "hop_samples": fe.hop_length,
      "mel_frames_per_chunk": chunk_frames * sub,
      "chunk_frames": chunk_frames,
      "chunk_samples": chunk_frames * sub * fe.hop_length,
      "cache_frames": int(cfg.encoder.left_chunks) * chunk_frames,
      "frames_per_second": fe.sample_rate / (fe.hop_length * sub),
  }


class ConformerEncoder(nnx.Module):
  """The speech encoder of §2: mel `[B, Tm, F]` -> frames `[B, Tm // subsample, D]`.

  Training: `__call__(mel_btf, mask_bt)` (or `encode_audio(samples, mask)`).
  Streaming: `init_state(batch)`, then `extend_step(samples_chunk, state)` with exactly
  `chunk_samples` samples per call (or `extend_step_mel` with the chunk's mel frames).
  """

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    e = cfg.encoder
    dtype, param_dtype = cfg.dtype, cfg.param_dtype
    geo = stream_geometry(cfg)
    self.frontend = LogMelFrontend.from_config(cfg.audio)
    self.d_model = int(e.d_model)
    self.chunk_frames = geo["chunk_frames"]
    self.left_chunks = int(e.left_chunks)
    self.cache_frames = geo["cache_frames"]
    self.chunk_samples = geo["chunk_samples"]
    self.mel_frames_per_chunk = geo["mel_frames_per_chunk"]
    self.dtype = inits.as_dtype(dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.subsampling = ConvSubsampling(int(cfg.audio.n_mels), self.d_model,
                                       int(e.subsample), **kw)
    self.layers = nnx.List([
        ConformerBlock(self.d_model, int(e.num_heads), int(e.mlp_dim), int(e.conv_kernel),
                       block_norm=bool(e.block_norm), **kw)
        for _ in range(int(e.num_layers))])

  def _standardise(self, mel_btf: jax.Array) -> jax.Array:
    x = (mel_btf.astype(jnp.float32) - MEL_CENTER) / MEL_SCALE
    return sharding.shard_logical(x.astype(self.dtype),
                                  (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MEL))

  def __call__(self, mel_btf: jax.Array,
               mask_bt: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """mel `[B, Tm, F]`, mask `[B, Tm]` -> (frames `[B, T, D]`, mask `[B, T]`).

    T = Tm // subsample; invalid frames are zeroed.
    """
    b, tm, _ = mel_btf.shape
    if mask_bt is None:
      mask_bt = jnp.ones((b, tm), bool)
    x, mask = self.subsampling(self._standardise(mel_btf), mask_bt.astype(bool))
    t = x.shape[1]
    attn_mask = (chunk_attention_mask(t, self.chunk_frames, self.left_chunks)[None]
                 & mask[:, None, :])
    for layer in self.layers:
      x = layer(x, mask, attn_mask)
    return _mask_frames(x, mask), mask

  def encode_audio(self, samples_bn: jax.Array,
                   mask_bn: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """samples `[B, N]` -> (frames `[B, N // (hop * subsample), D]`, mask)."""
    mel, mask = self.frontend(samples_bn, mask_bn)
    return self(mel, mask)

  # ---- streaming ---------------------------------------------------------------------
  def init_state(self, batch: int) -> dict[str, Any]:
    """Fixed-shape state of a fresh stream (all tails zero, caches empty)."""
    return {
        "frontend": self.frontend.init_state(batch),
        "subsampling": self.subsampling.init_state(batch),
        "layers": [layer.init_state(batch, self.cache_frames, self.dtype)
                   for layer in self.layers],
        "position": jnp.zeros((), jnp.int32),   # absolute index of the next frame
    }

  def extend_step_mel(self, mel_bmf: jax.Array,
                      state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
    """One chunk of mel `[B, subsample*C, F]` -> (frames `[B, C, D]`, state)."""
    if mel_bmf.shape[1] != self.mel_frames_per_chunk:
      raise ValueError(f"extend_step_mel: expected {self.mel_frames_per_chunk} mel frames "
                       f"(one chunk), got {mel_bmf.shape}")
    x, sub_state = self.subsampling.extend_step(self._standardise(mel_bmf),
                                                state["subsampling"])
    layer_states = []
    for layer, st in zip(self.layers, state["layers"]):
      x, st = layer.extend_step(x, st)
      layer_states.append(st)
    new = dict(state, subsampling=sub_state, layers=layer_states,
               position=state["position"] + self.chunk_frames)
    return x, new

  def extend_step(self, samples_bn: jax.Array,
                  state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
    """One chunk of audio `[B, chunk_samples]` -> (frames `[B, C, D]`, state)."""
    if samples_bn.shape[1] != self.chunk_samples:
      raise ValueError(f"extend_step: expected {self.chunk_samples} samples (stream."
                       f"chunk_ms), got {samples_bn.shape}")
    mel, fe_state = self.frontend.extend_step(samples_bn, state["frontend"])
    x, new = self.extend_step_mel(mel, state)
    new["frontend"] = fe_state
    return x, new


# ---- FLOPs -----------------------------------------------------------------------------
def flops_breakdown(cfg) -> dict[str, float]:
  """Matmul/conv FLOPs per second of audio, per part, of streaming inference.

  Counts 2 x multiply-adds of every dot/conv in `extend_step` (the attention window is
  the `left_chunks * C` cached frames plus the current chunk); elementwise ops, norms and
  softmax are left out (they are a few percent at real sizes).
  """
  e, a = cfg.encoder, cfg.audio
  geo = stream_geometry(cfg)
  fe = LogMelFrontend.from_config(a)
  mel_fps = fe.sample_rate / fe.hop_length
  fps = geo["frames_per_second"]
  d, f, k = int(e.d_model), int(e.mlp_dim), int(e.conv_kernel)
  n_sub = int(round(math.log2(int(e.subsample))))
  sub = 0.0
  for i in range(n_sub):
    c_in = int(a.n_mels) if i == 0 else d
    sub += mel_fps / 2 ** (i + 1) * conv_flops_per_output(c_in, d, 3)
  sub += fps * 2 * d * d
  keys = geo["cache_frames"] + geo["chunk_frames"]
  per_frame = {
      "ffn": 2 * (2 * d * f * 2),
      "attn_proj": 4 * 2 * d * d,
      "attn_scores": 2 * 2 * d * keys,
      "conv_module": 2 * d * 2 * d + conv_flops_per_output(d, d, k, groups=d) + 2 * d * d,
  }
  out = {"frontend": mel_fps * fe.flops_per_frame(), "subsampling": sub}
  for name, v in per_frame.items():
    out[name] = fps * int(e.num_layers) * v
  return out


def flops_per_second(cfg) -> float:
  """Total matmul/conv FLOPs of the encoder (frontend included) per second of audio."""
  return float(sum(flops_breakdown(cfg).values()))
