"""Causal SEANet-style speech codec with a speaker-conditioned (voice-cloning) decoder.

    audio [B, N] ──► encoder: conv(7) → per stride s: residual units (dilations 1, 3, 9)
                     → ELU → strided conv(2s, s), channels ×2 → ELU → conv(3) → latent
                 ──► quantizer (VQ / product VQ / RVQ, straight-through) → codes [B, T, Q]
                 ──► decoder: conv(7) → per stride s (reversed): FiLM(speaker) → ELU →
                     transposed conv(2s, s), channels ÷2 → residual units → ELU → conv(7)
                 ──► audio [B, T·hop],   hop = prod(strides), T = N // hop.

Every conv is causal (`layers.conv.CausalConv1d`; `layers.conv.CausalConvTranspose1d` trims its
right overhang), so code frame t depends on samples `< (t + 1)·hop` and decoder output
samples `[t·hop, (t + 1)·hop)` depend on codes `≤ t`. That makes both halves streamable:
`encode_step` (chunks of whole frames) and `decode_step` (any number of code frames)
carry a fixed-size tail per conv and reproduce the full pass exactly.

Voice cloning: each decoder block starts with FiLM, `h·(1 + γ(e)) + β(e)` with (γ, β) a
linear map of the speaker embedding `e` (`models.voice.SpeakerEncoder`). Codes carry
content; the embedding carries timbre.

Left out at this scale (say so in summaries): weight normalisation, LSTM bottleneck,
quantizer dropout (bitrate scalability), adversarial/feature-matching losses.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes, sharding
from liveinterp.layers import initializers as inits
from liveinterp.layers import quantizer as quantizer_lib
from liveinterp.layers.conv import CausalConv1d, CausalConvTranspose1d
from liveinterp.layers.linears import Dense

DEFAULT_DILATIONS = (1, 3, 9)
ACT_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_CHANNELS)
State = Any


def _act_shard(x_btc: jax.Array) -> jax.Array:
  return sharding.shard_logical(x_btc, ACT_AXES)


def _row_window(x_btc: jax.Array, start_b: jax.Array, length: int) -> jax.Array:
  """x[b, start_b[b] : start_b[b] + length] for every row -> [B, length, C]."""
  return jax.vmap(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, length, axis=0))(
      x_btc, start_b)


def _conv_rows(conv: CausalConv1d, x_btc: jax.Array, state: State, n_b: jax.Array):
  """`conv.extend_step` (stride 1) whose tail advances over row b's first n_b[b] inputs."""
  y, new = conv.extend_step(x_btc, state)
  if conv.tail_length == 0:
    return y, new
  x = jnp.concatenate([state["tail"].astype(conv.dtype), x_btc.astype(conv.dtype)], axis=1)
  return y, {"tail": _row_window(x, n_b, conv.tail_length)}


def _conv_transpose_rows(conv: CausalConvTranspose1d, x_btc: jax.Array, state: State,
                         n_b: jax.Array):
  """`conv.extend_step` whose overhang holds only row b's first n_b[b] inputs (later
  inputs are zeroed: they reach outputs >= n_b * stride only, none of them valid)."""
  t, s = x_btc.shape[1], conv.stride
  x = jnp.where((jnp.arange(t)[None, :] < n_b[:, None])[..., None], x_btc,
                jnp.zeros((), x_btc.dtype))
  full = conv._full(x)  # pylint: disable=protected-access
  full = full.at[:, :conv.tail_length].add(state["tail"].astype(conv.dtype))
  y = conv._bias(full[:, :t * s])  # pylint: disable=protected-access
  return y, {"tail": _row_window(full, n_b * s, conv.tail_length)}


class ResidualUnit(nnx.Module):
  """x + conv1(ELU(conv_dil(ELU(x)))): dilated causal conv (C -> C/2), then 1x1 back to C."""

  def __init__(self, channels: int, dilation: int, *, kernel_size: int = 3, dtype="float32",
               param_dtype="float32", rngs: nnx.Rngs):
    hidden = max(1, channels // 2)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv_dil = CausalConv1d(channels, hidden, kernel_size, dilation=dilation, **kw)
    self.conv_1x1 = CausalConv1d(hidden, channels, 1, init_scale=0.1, **kw)

  def __call__(self, x_btc: jax.Array) -> jax.Array:
    h = self.conv_dil(jax.nn.elu(x_btc))
    return x_btc + self.conv_1x1(jax.nn.elu(h))

  def init_state(self, batch: int) -> State:
    return {"conv_dil": self.conv_dil.init_state(batch)}

  def extend_step(self, x_btc: jax.Array, state: State) -> tuple[jax.Array, State]:
    h, s = self.conv_dil.extend_step(jax.nn.elu(x_btc), state["conv_dil"])
    return x_btc + self.conv_1x1(jax.nn.elu(h)), {"conv_dil": s}

  def flops_per_frame(self) -> int:
    return self.conv_dil.flops_per_output() + self.conv_1x1.flops_per_output()


class DownsampleBlock(nnx.Module):
  """Residual units at C channels, then ELU + strided conv (kernel 2s) to 2C channels."""

  def __init__(self, channels: int, stride: int, dilations: Sequence[int], *,
               dtype="float32", param_dtype="float32", rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.units = nnx.List([ResidualUnit(channels, d, **kw) for d in dilations])
    self.down = CausalConv1d(channels, 2 * channels, 2 * stride, stride=stride, **kw)

  def __call__(self, x_btc: jax.Array) -> jax.Array:
    for u in self.units:
      x_btc = u(x_btc)
    return _act_shard(self.down(jax.nn.elu(x_btc)))

  def init_state(self, batch: int) -> State:
    return {"units": [u.init_state(batch) for u in self.units],
            "down": self.down.init_state(batch)}

  def extend_step(self, x_btc: jax.Array, state: State) -> tuple[jax.Array, State]:
    units = []
    for u, s in zip(self.units, state["units"]):
      x_btc, s = u.extend_step(x_btc, s)
      units.append(s)
    y, down = self.down.extend_step(jax.nn.elu(x_btc), state["down"])
    return y, {"units": units, "down": down}

  def flops_per_input(self) -> float:
    return (sum(u.flops_per_frame() for u in self.units)
            + self.down.flops_per_output() / self.down.stride)


class UpsampleBlock(nnx.Module):
  """FiLM(speaker) → ELU → transposed conv (2s, s) to C/2 channels → residual units."""

  def __init__(self, channels: int, stride: int, dilations: Sequence[int], spk_dim: int, *,
               dtype="float32", param_dtype="float32", rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.channels = channels
    self.film = Dense(spk_dim, 2 * channels, kernel_axes=(axes.EMBED, axes.CONV_OUT),
                      use_bias=True, **kw)
    self.up = CausalConvTranspose1d(channels, channels // 2, 2 * stride, stride, **kw)
    self.units = nnx.List([ResidualUnit(channels // 2, d, **kw) for d in dilations])

  def _modulate(self, x_btc: jax.Array, spk_be: jax.Array) -> jax.Array:
    gamma, beta = jnp.split(self.film(spk_be), 2, axis=-1)  # [B, C] each
    return x_btc * (1.0 + gamma[:, None, :]) + beta[:, None, :]

  def __call__(self, x_btc: jax.Array, spk_be: jax.Array) -> jax.Array:
    h = self.up(jax.nn.elu(self._modulate(x_btc, spk_be)))
    for u in self.units:
      h = u(h)
    return _act_shard(h)

  def init_state(self, batch: int) -> State:
    return {"up": self.up.init_state(batch), "units": [u.init_state(batch) for u in self.units]}

  def extend_step(self, x_btc: jax.Array, spk_be: jax.Array,
                  state: State) -> tuple[jax.Array, State]:
    h, up = self.up.extend_step(jax.nn.elu(self._modulate(x_btc, spk_be)), state["up"])
    units = []
    for u, s in zip(self.units, state["units"]):
      h, s = u.extend_step(h, s)
      units.append(s)
    return h, {"up": up, "units": units}

  def flops_per_input(self) -> float:
    s = self.up.stride
    return self.up.flops_per_input() + s * sum(u.flops_per_frame() for u in self.units)


class Codec(nnx.Module):
  """Causal conv codec + quantizer + speaker-conditioned decoder (see module docstring).

  Built from `cfg.codec` (channels, latent_dim, codebook_size, num_codebooks, strides,
  quantizer, commitment, ema_decay; optional `dilations`, `codebook_update`,
  `dead_code_steps`), `cfg.voice.embed_dim` (FiLM input width) and `cfg.dtype` /
  `cfg.param_dtype`.
  """

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    cc = cfg.codec
    self.strides = tuple(int(s) for s in cc.strides)
    self.hop = math.prod(self.strides)
    self.latent_dim = int(cc.latent_dim)
    self.num_codebooks = int(cc.num_codebooks)
    self.spk_dim = int(cfg.voice.embed_dim)
    self.dtype = inits.as_dtype(cfg.dtype)
    dil = tuple(cc.get("dilations", DEFAULT_DILATIONS))
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    c0 = int(cc.channels)
    top = c0 * 2 ** len(self.strides)
    # The mono waveform side has one channel: never shard it (size 1).
    self.enc_in = CausalConv1d(1, c0, 7, kernel_axes=(axes.CONV_KERNEL, None, axes.CONV_OUT),
                               **kw)
    self.enc_blocks = nnx.List([DownsampleBlock(c0 * 2 ** i, s, dil, **kw)
                                for i, s in enumerate(self.strides)])
    self.enc_out = CausalConv1d(top, self.latent_dim, 3, **kw)
    self.quantizer = quantizer_lib.make_quantizer(cc, param_dtype=cfg.param_dtype, rngs=rngs)
    self.dec_in = CausalConv1d(self.latent_dim, top, 7, **kw)
    n = len(self.strides)
    self.dec_blocks = nnx.List([
        UpsampleBlock(c0 * 2 ** (n - i), s, dil, self.spk_dim, **kw)
        for i, s in enumerate(reversed(self.strides))])
    self.dec_out = CausalConv1d(c0, 1, 7, kernel_axes=(axes.CONV_KERNEL, axes.CONV_IN, None),
                                **kw)

  # ---- encoder -------------------------------------------------------------------------
  def _check_audio(self, audio_bn: jax.Array) -> jax.Array:
    if audio_bn.ndim != 2:
      raise ValueError(f"codec expects audio [B, N], got shape {audio_bn.shape}")
    n = (audio_bn.shape[1] // self.hop) * self.hop
    if n == 0:
      raise ValueError(f"codec needs at least one hop ({self.hop} samples), got "
                       f"{audio_bn.shape[1]}")
    return audio_bn[:, :n]

  def encode_latent(self, audio_bn: jax.Array) -> jax.Array:
    """Pre-quantization latent: audio [B, N] -> [B, N // hop, latent_dim] (float32)."""
    x = self._check_audio(audio_bn)[..., None].astype(self.dtype)
    h = _act_shard(self.enc_in(x))
    for blk in self.enc_blocks:
      h = blk(h)
    return self.enc_out(jax.nn.elu(h)).astype(jnp.float32)

  def encode(self, audio_bn: jax.Array) -> jax.Array:
    """Codes of audio: [B, N] -> int32 [B, N // hop, Q] (trailing partial hop dropped)."""
    return self.quantizer.encode(self.encode_latent(audio_bn))

  def init_encode_state(self, batch: int) -> State:
    """Fixed-size tails of every encoder conv (zeros = the causal left padding)."""
    return {"enc_in": self.enc_in.init_state(batch),
            "blocks": [b.init_state(batch) for b in self.enc_blocks],
            "enc_out": self.enc_out.init_state(batch)}

  def encode_step(self, audio_bn: jax.Array, state: State) -> tuple[jax.Array, State]:
    """Streaming encode: audio chunk [B, n * hop] -> (codes [B, n, Q], state)."""
    if audio_bn.shape[1] % self.hop:
      raise ValueError(f"Codec.encode_step: chunk of {audio_bn.shape[1]} samples is not a "
                       f"multiple of the hop {self.hop}")
    h, s_in = self.enc_in.extend_step(audio_bn[..., None].astype(self.dtype), state["enc_in"])
    blocks = []
    for blk, s in zip(self.enc_blocks, state["blocks"]):
      h, s = blk.extend_step(h, s)
      blocks.append(s)
    z, s_out = self.enc_out.extend_step(jax.nn.elu(h), state["enc_out"])
    codes = self.quantizer.encode(z.astype(jnp.float32))
    return codes, {"enc_in": s_in, "blocks": blocks, "enc_out": s_out}

  # ---- decoder -------------------------------------------------------------------------
  def _speaker(self, spk_be: jax.Array | None, batch: int) -> jax.Array:
    if spk_be is None:
      return jnp.zeros((batch, self.spk_dim), self.dtype)
    if spk_be.shape != (batch, self.spk_dim):
      raise ValueError(f"speaker embedding must be [{batch}, {self.spk_dim}], got "
                       f"{spk_be.shape}")
    return spk_be.astype(self.dtype)

  def decode_latent(self, z_btd: jax.Array, spk_be: jax.Array | None) -> jax.Array:
    """Quantized latent [B, T, D] + speaker [B, E] -> audio [B, T * hop] (float32)."""
    spk = self._speaker(spk_be, z_btd.shape[0])
    h = _act_shard(self.dec_in(z_btd.astype(self.dtype)))
    for blk in self.dec_blocks:
      h = blk(h, spk)
    return self.dec_out(jax.nn.elu(h))[..., 0].astype(jnp.float32)

  def decode(self, codes_btq: jax.Array, spk_be: jax.Array | None = None) -> jax.Array:
    """Codes [B, T, Q] + speaker embedding [B, E] -> audio [B, T * hop] (float32)."""
    return self.decode_latent(self.quantizer.decode(codes_btq), spk_be)

  def init_decode_state(self, batch: int) -> State:
    """Fixed-size tails of every decoder conv / transposed conv (zeros at stream start)."""
    return {"dec_in": self.dec_in.init_state(batch),
            "blocks": [b.init_state(batch) for b in self.dec_blocks],
            "dec_out": self.dec_out.init_state(batch)}

  def decode_step(self, codes_btq: jax.Array, spk_be: jax.Array | None,
                  state: State) -> tuple[jax.Array, State]:
    """Streaming decode: codes chunk [B, n, Q] (any n >= 1) -> (audio [B, n * hop], state).

    Concatenating the chunks' audio equals `decode` of all codes at once.
    """
    spk = self._speaker(spk_be, codes_btq.shape[0])
    z = self.quantizer.decode(codes_btq).astype(self.dtype)
    h, s_in = self.dec_in.extend_step(z, state["dec_in"])
    blocks = []
    for blk, s in zip(self.dec_blocks, state["blocks"]):
      h, s = blk.extend_step(h, spk, s)
      blocks.append(s)
    y, s_out = self.dec_out.extend_step(jax.nn.elu(h), state["dec_out"])
    return (y[..., 0].astype(jnp.float32),
            {"dec_in": s_in, "blocks": blocks, "dec_out": s_out})

  def decode_step_rows(self, codes_btq: jax.Array, spk_be: jax.Array | None, state: State,
                       n_valid_b: jax.Array) -> tuple[jax.Array, State]:
    """`decode_step` where row b has only its first `n_valid_b[b]` (0..n) frames.

    Row b's state advances over exactly those frames (as `decode_step` on them alone;
    0 frames leaves it unchanged) and its audio `[:, :n_valid_b[b] * hop]` equals theirs
    (the decoder is causal); later samples are zero. One batched call serves rows of
    different lengths (the streaming decoder's ragged turn ends, issue #14).
    """
    t = codes_btq.shape[1]
    n_b = jnp.clip(jnp.asarray(n_valid_b, jnp.int32), 0, t)
    spk = self._speaker(spk_be, codes_btq.shape[0])
    z = self.quantizer.decode(codes_btq).astype(self.dtype)
    h, s_in = _conv_rows(self.dec_in, z, state["dec_in"], n_b)
    blocks = []
    for blk, s in zip(self.dec_blocks, state["blocks"]):
      x = jax.nn.elu(blk._modulate(h, spk))  # pylint: disable=protected-access
      h, up = _conv_transpose_rows(blk.up, x, s["up"], n_b)
      n_b = n_b * blk.up.stride
      units = []
      for u, su in zip(blk.units, s["units"]):
        hh, sd = _conv_rows(u.conv_dil, jax.nn.elu(h), su["conv_dil"], n_b)
        h = h + u.conv_1x1(jax.nn.elu(hh))
        units.append({"conv_dil": sd})
      blocks.append({"up": up, "units": units})
    y, s_out = _conv_rows(self.dec_out, jax.nn.elu(h), state["dec_out"], n_b)
    y = jnp.where(jnp.arange(y.shape[1])[None, :] < n_b[:, None],
                  y[..., 0].astype(jnp.float32), 0.0)
    return y, {"dec_in": s_in, "blocks": blocks, "dec_out": s_out}

  # ---- training forward --------------------------------------------------------------
  def __call__(self, audio_bn: jax.Array, spk_be: jax.Array | None = None, *,
               update: bool = False, key: jax.Array | None = None) -> dict:
    """Autoencodes audio [B, N] (N cropped to a multiple of hop) for speaker [B, E].

    Args:
      update: update the quantizer state in place (EMA codebook, usage, restarts).
      key: PRNG key for dead-code restarts.

    Returns:
      dict: `recon` [B, T * hop] float32, `codes` int32 [B, T, Q], `latent` [B, T, D],
      `commitment_loss`, `codebook_loss`, `quantizer_loss`, `perplexity` (scalars).
    """
    z = self.encode_latent(audio_bn)
    q = self.quantizer(z, update=update, key=key)
    recon = self.decode_latent(q["z_q"], spk_be)
    return dict(recon=recon, codes=q["codes"], latent=z,
                commitment_loss=q["commitment_loss"], codebook_loss=q["codebook_loss"],
                quantizer_loss=q["loss"], perplexity=q["perplexity"])

  # ---- cost ----------------------------------------------------------------------------
  def flops_per_second(self, sample_rate: int) -> dict[str, float]:
    """Analytic forward FLOPs (2 x MACs) per second of audio, by part.

    Keys `encoder`, `quantizer` (distances to every code), `decoder`; the values add up
    to the total (summaries sum them). Elementwise ops (ELU, FiLM) are not counted.
    """
    rate = float(sample_rate)
    enc = self.enc_in.flops_per_output() * rate
    for blk in self.enc_blocks:
      enc += blk.flops_per_input() * rate
      rate /= blk.down.stride
    enc += self.enc_out.flops_per_output() * rate
    quant = sum(2 * cb.codebook_size * cb.dim for cb in self.quantizer.codebooks) * rate
    dec = self.dec_in.flops_per_output() * rate
    for blk in self.dec_blocks:
      dec += blk.flops_per_input() * rate
      rate *= blk.up.stride
    dec += self.dec_out.flops_per_output() * rate
    # FiLM (a few Dense per utterance, not per second) is left out.
    return {"encoder": enc, "quantizer": quant, "decoder": dec}


def build_abstract(cfg) -> Codec:
  """The codec as shapes only (no allocation, no mesh needed): for counting."""
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: Codec(cfg, rngs=nnx.Rngs(0)))


def flops_per_second(cfg) -> dict[str, float]:
  """Analytic forward FLOPs per second of audio for `cfg`'s codec: {encoder, quantizer,
  decoder}, values add up to the total."""
  return build_abstract(cfg).flops_per_second(cfg.audio.sample_rate)


def param_count(cfg) -> int:
  """Trainable parameters of `cfg`'s codec (EMA codebooks are state, not counted)."""
  model = build_abstract(cfg)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
