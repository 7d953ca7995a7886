"""Encoder -> LLM adapter: stack k consecutive frames, 2-layer MLP to the LLM width,
then (`adapter.out_norm`, default on) an RMSNorm, so the audio embeddings enter the LLM
at the scale of its token embeddings (unit RMS) instead of whatever scale the MLP drifts
to: without it the tiny model's adapter output reached RMS ~36 against ~1.25 for tokens,
mostly a constant direction, and the decoder learned to ignore the audio.

`[B, T, D_enc] -> [B, ceil(T / k), D_llm]`. A stacked group is valid when any of its
frames is valid (invalid frames are zeroed first), so a trailing partial group keeps its
content. Streaming is per chunk: a chunk's frame count is a multiple of k (checked by the
config), so calling the adapter on each chunk equals calling it on the whole stream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes, sharding
from liveinterp.layers.linears import Dense
from liveinterp.layers.normalizations import RMSNorm
from liveinterp.models.conformer import stream_geometry


class Adapter(nnx.Module):
  """Frame stacking (k) + Dense(k*D_enc, H) -> GELU -> Dense(H, D_llm); H = D_llm."""

  def __init__(self, d_in: int, d_out: int, stack: int, *, hidden: int | None = None,
               out_norm: bool = True, dtype="float32", param_dtype="float32",
               rngs: nnx.Rngs):
    if stack < 1:
      raise ValueError(f"adapter.stack={stack} must be >= 1")
    hidden = d_out if hidden is None else hidden
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # Input is [k, D_enc]: the stack position is a small replicated axis.
    self.up = Dense((stack, d_in), hidden, kernel_axes=(None, axes.EMBED, axes.MLP), **kw)
    self.down = Dense(hidden, d_out, kernel_axes=(axes.MLP, axes.EMBED), **kw)
    self.norm = RMSNorm(d_out, **kw) if out_norm else None
    self.stack = stack
    self.d_in, self.d_out, self.hidden = d_in, d_out, hidden

  @classmethod
  def from_config(cls, cfg, *, rngs: nnx.Rngs) -> "Adapter":
    """encoder.d_model -> llm.d_model with adapter.stack; compute/param dtype from cfg."""
    return cls(int(cfg.encoder.d_model), int(cfg.llm.d_model), int(cfg.adapter.stack),
               out_norm=bool(cfg.adapter.get("out_norm", True)), dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)

  def __call__(self, frames_btd: jax.Array,
               mask_bt: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """frames `[B, T, D_enc]`, mask `[B, T]` -> (`[B, G, D_llm]`, mask `[B, G]`), G = ceil(T/k)."""
    b, t, d = frames_btd.shape
    k = self.stack
    if mask_bt is None:
      mask_bt = jnp.ones((b, t), bool)
    pad = (-t) % k
    x = jnp.where(mask_bt[..., None], frames_btd, jnp.zeros((), frames_btd.dtype))
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    m = jnp.pad(mask_bt.astype(bool), ((0, 0), (0, pad)))
    x_bgkd = x.reshape(b, (t + pad) // k, k, d)
    h = sharding.shard_logical(jax.nn.gelu(self.up(x_bgkd)),
                               (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP))
    y = self.down(h)
    if self.norm is not None:
      y = self.norm(y)
    y = sharding.shard_logical(y, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))
    mask = m.reshape(b, -1, k).any(-1)
    return jnp.where(mask[..., None], y, jnp.zeros((), y.dtype)), mask


def flops_per_second(cfg) -> float:
  """Matmul FLOPs of the adapter per second of audio."""
  fps = stream_geometry(cfg)["frames_per_second"]
  k, d_in, d_out = int(cfg.adapter.stack), int(cfg.encoder.d_model), int(cfg.llm.d_model)
  return float(fps / k * (2 * k * d_in * d_out + 2 * d_out * d_out))
